"""``hub jobs``: the scheduled jobs, their next and last runs; pause and resume them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from hub.engine.hub import Hub
from hub.engine.loader import load_modules
from hub.errors import HubError
from hub.logging import configure_logging
from hub.runtime.scheduler import Scheduler
from hub.settings import process_settings

T = TypeVar("T")


def _with_scheduler(fn: Callable[[Scheduler], Awaitable[T]]) -> T:
    configure_logging("warning")

    async def go() -> T:
        settings = process_settings().engine
        load_modules(settings.modules)
        async with Hub(settings=settings, execute=False) as hub:
            return await fn(Scheduler(hub))

    try:
        return asyncio.run(go())
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def add_job_commands(app: typer.Typer) -> None:
    jobs_app = typer.Typer(help="Scheduled jobs.", no_args_is_help=True)
    app.add_typer(jobs_app, name="jobs")

    @jobs_app.command("list")
    def list_(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """Every job with its schedule and its next and last runs."""
        jobs: list[dict[str, Any]] = _with_scheduler(lambda s: s.jobs())
        if as_json:
            typer.echo(json.dumps(jobs, indent=2, default=str))
            return
        for j in jobs:
            state = "paused" if j["paused"] else "active"
            typer.echo(f"{j['name']:24} {j['cron']:14} {j['timezone']:16} {state:7} "
                       f"next {j['next_tick']}  last {j['last_tick']}")
        typer.echo(f"{len(jobs)} job(s)")

    @jobs_app.command("pause")
    def pause(name: Annotated[str, typer.Argument()]) -> None:
        """Stop firing the job on every replica."""
        _with_scheduler(lambda s: s.pause(name))
        typer.echo(f"paused {name}")

    @jobs_app.command("resume")
    def resume(name: Annotated[str, typer.Argument()]) -> None:
        """Fire the job again from its next tick."""
        _with_scheduler(lambda s: s.resume(name))
        typer.echo(f"resumed {name}")
