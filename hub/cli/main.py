"""``hub``: run workers, migrate the database, and the dev mode with its demo.

Exit codes: 0 success, 1 a failure the command reports, 2 bad usage (typer's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from typing import Annotated

import typer

from hub.engine.hub import Hub
from hub.engine.loader import load_modules
from hub.errors import HubError
from hub.logging import configure_logging
from hub.settings import HubSettings

app = typer.Typer(help="The commerce integration hub.", no_args_is_help=True,
                  add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning, error")]
JsonLogs = Annotated[bool, typer.Option("--json-logs", help="JSON log lines")]


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def worker(
    modules: Annotated[
        str | None, typer.Option(help="comma-separated workflow modules (default HUB_MODULES)")
    ] = None,
    log_level: LogLevel = "info",
    json_logs: JsonLogs = False,
) -> None:
    """Run an executor for the workflows of the configured modules until SIGTERM."""
    configure_logging(log_level, json_output=json_logs)
    settings = HubSettings()
    if modules:
        settings = settings.model_copy(update={"modules": modules.split(",")})

    async def run() -> None:
        load_modules(settings.modules)
        async with Hub(settings=settings) as hub:
            print(json.dumps({"event": "worker_ready", "worker": settings.worker_id,
                              "workflows": hub.registry.names()}), flush=True)
            await _until_signalled()

    try:
        asyncio.run(run())
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@db_app.command("migrate")
def migrate(log_level: LogLevel = "warning") -> None:
    """Apply pending migrations (also done at every start)."""
    configure_logging(log_level)

    async def run() -> list[str]:
        async with Hub(execute=False) as hub:
            return await hub.store.migrate()

    applied = asyncio.run(run())
    typer.echo("schema up to date" if not applied else "applied: " + ", ".join(applied))


@app.command()
def dev(
    log_level: LogLevel = "info",
    once: Annotated[bool, typer.Option(help="run the demo and exit")] = False,
) -> None:
    """Dev mode: embedded Postgres, a worker, and the demo workflows run end to end."""
    configure_logging(log_level)
    from hub.cli.demo import run_demo

    async def run() -> None:
        settings = HubSettings()
        load_modules(settings.modules)
        async with Hub(settings=settings) as hub:
            await run_demo(hub)
            if not once:
                typer.echo("dev hub running (Ctrl-C to stop)")
                await _until_signalled()

    try:
        asyncio.run(run())
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
