"""``hub executions``: list, read and repair executions from a terminal.

It goes through the same service layer as the HTTP API (``hub.api.service``), so a list or
a detail reads the same here and there. Exit codes: 0 done, 1 refused or not found.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import typer

from hub.api.service import Actor
from hub.engine.hub import Hub
from hub.engine.loader import load_modules
from hub.errors import HubError
from hub.logging import configure_logging
from hub.settings import process_settings

T = TypeVar("T")
JsonOut = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _cli_actor() -> Actor:
    """The audit's "who" of a terminal command: the operating-system user running it."""
    return Actor(name=getpass.getuser(), via="cli")


def _with_service(fn: Callable[[Any], Awaitable[T]]) -> T:
    from hub.api.service import HubService

    configure_logging("warning")

    async def go() -> T:
        settings = process_settings().engine
        load_modules(settings.modules)
        async with Hub(settings=settings, execute=False) as hub:
            return await fn(HubService(hub))

    try:
        return asyncio.run(go())
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model


def add_execution_commands(app: typer.Typer) -> None:
    ex_app = typer.Typer(help="Executions: list, show, retry, wake, compensate, cancel.",
                         no_args_is_help=True)
    app.add_typer(ex_app, name="executions")

    @ex_app.command("list")
    def list_(
        workflow: Annotated[str | None, typer.Option("--workflow")] = None,
        status: Annotated[str | None, typer.Option("--status")] = None,
        limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 20,
        cursor: Annotated[str | None, typer.Option("--cursor")] = None,
        as_json: JsonOut = False,
    ) -> None:
        """Newest first; `--cursor` pages on (printed after the list)."""
        page = _with_service(lambda svc: svc.executions(
            workflow=workflow, status=status, cursor=cursor, limit=limit))
        data = _dump(page)
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        if not data["items"]:
            typer.echo("no executions match")
        else:
            typer.echo(f"{'ID':36}  {'WORKFLOW':20} {'STATUS':20} TRANSACTION ID")
        for item in data["items"]:
            typer.echo(f"{item['id']}  {item['workflow']:20} {item['status']:20} "
                       f"{item['transaction_id']}")
        if data.get("next"):
            typer.echo(f"next page: --cursor {data['next']}")

    @ex_app.command("show")
    def show(ref: Annotated[str, typer.Argument(help="execution id or transaction id")],
             workflow: Annotated[str | None, typer.Option("--workflow")] = None,
             raw: Annotated[bool, typer.Option(
                 "--raw", help="payloads as stored: secret fields unredacted")] = False,
             ) -> None:
        """Every step's state, attempts, errors, the trigger, the connector calls (with the
        outside systems' ids) and the published events; secret fields (HUB_REDACT_FIELDS)
        read *** unless --raw."""
        detail = _with_service(lambda svc: svc.execution(ref, workflow=workflow, raw=raw))
        typer.echo(json.dumps(_dump(detail), indent=2, default=str))

    @ex_app.command("retry")
    def retry(ref: Annotated[str, typer.Argument()],
              workflow: Annotated[str | None, typer.Option("--workflow")] = None) -> None:
        """Re-run what stopped: a manual-retry step, a failed compensation, a parked run."""
        out = _with_service(lambda svc: svc.retry(ref, workflow=workflow, actor=_cli_actor()))
        typer.echo(json.dumps(_dump(out)))

    @ex_app.command("wake")
    def wake(ref: Annotated[str, typer.Argument(help="execution id or transaction id")],
             step: Annotated[str, typer.Argument(help="the sleep step's id")],
             workflow: Annotated[str | None, typer.Option("--workflow")] = None) -> None:
        """End a sleep now: the steps after it run at once (refused for any other step)."""
        out = _with_service(lambda svc: svc.wake(ref, step, workflow=workflow,
                                                 actor=_cli_actor()))
        typer.echo(json.dumps(_dump(out)))

    def _stop(kind: Literal["cancel", "compensate"], ref: str, reason: str | None,
              workflow: str | None) -> None:
        out = _with_service(lambda svc: svc.stop(ref, kind, reason=reason, wait=True,
                                                 actor=_cli_actor(), workflow=workflow))
        typer.echo(json.dumps(_dump(out), default=str))

    @ex_app.command("compensate")
    def compensate(ref: Annotated[str, typer.Argument()],
                   reason: Annotated[str | None, typer.Option("--reason")] = None,
                   workflow: Annotated[str | None, typer.Option("--workflow")] = None) -> None:
        """Stop it and undo its completed steps (ends `compensated`)."""
        _stop("compensate", ref, reason, workflow)

    @ex_app.command("cancel")
    def cancel(ref: Annotated[str, typer.Argument()],
               reason: Annotated[str | None, typer.Option("--reason")] = None,
               workflow: Annotated[str | None, typer.Option("--workflow")] = None) -> None:
        """Stop it and undo its completed steps (ends `cancelled`)."""
        _stop("cancel", ref, reason, workflow)
