"""``hub outbox list|retry``: the events the relay has not published, and making them due.

Through the same service layer as ``GET /outbox`` and ``POST /outbox/{id}/retry``; a retry is
audited as the operating-system user. Exit codes: 0 done, 1 refused or not found.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from hub.cli.executions import JsonOut, _cli_actor, _dump, _with_service

_COLUMNS = ("id", "topic", "key", "state", "attempts", "reason")


def _line(values: list[str]) -> str:
    """One row on one line: tabs and line breaks inside a value become spaces."""
    return "\t".join(" ".join(v.split()) if v else "-" for v in values)


def _row(item: dict[str, Any]) -> list[str]:
    return [item["id"], item["topic"], item["key"] or "", item["state"],
            str(item["attempts"]), (item["last_error"] or "")[:500]]


def add_outbox_commands(app: typer.Typer) -> None:
    ob_app = typer.Typer(help="The outbox: events not yet published; retry failed ones.",
                         no_args_is_help=True)
    app.add_typer(ob_app, name="outbox")

    @ob_app.command("list")
    def list_(
        failed: Annotated[bool, typer.Option("--failed", help="only failed events")] = False,
        limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
        cursor: Annotated[str | None, typer.Option("--cursor")] = None,
        as_json: JsonOut = False,
    ) -> None:
        """Unpublished events, newest first, tab-separated: id, topic, key, state,
        attempts, reason of the last failure."""
        page = _with_service(lambda svc: svc.outbox(
            state="failed" if failed else None, cursor=cursor, limit=limit))
        data = _dump(page)
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        typer.echo(_line(list(_COLUMNS)))
        for item in data["items"]:
            typer.echo(_line(_row(item)))
        if data.get("next"):
            typer.echo(f"next page: --cursor {data['next']}", err=True)

    @ob_app.command("retry")
    def retry(
        ids: Annotated[list[str] | None, typer.Argument(help="outbox event ids")] = None,
        all_failed: Annotated[bool, typer.Option(
            "--all-failed", help="every failed event")] = False,
    ) -> None:
        """Make events due again (attempts counted afresh); the relay publishes them next.
        Fix the cause first: a refused event fails again."""
        if bool(ids) == all_failed:
            typer.echo("error: give event ids or --all-failed (not both)", err=True)
            raise typer.Exit(2)
        done = _with_service(lambda svc: svc.retry_outbox(
            list(ids or []), all_failed=all_failed, actor=_cli_actor()))
        for event_id in done.ids:
            typer.echo(event_id)
        typer.echo(f"made {len(done.ids)} event(s) due again", err=True)
