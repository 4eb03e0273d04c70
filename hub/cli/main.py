"""``hub``: run workers, migrate the database, and the dev mode with its demo.

Exit codes: 0 success, 1 a failure the command reports, 2 bad usage (typer's own).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from hub import aio, devruntime
from hub.api.cli import add_api_commands, ensure_dev_key, start_api
from hub.cli.executions import add_execution_commands
from hub.cli.jobs import add_job_commands
from hub.cli.kafka import add_kafka_commands
from hub.cli.outbox import add_outbox_commands
from hub.cli.sandbox import SANDBOX_PORT, add_sandbox_command, export_env, sandbox_server
from hub.cli.settings import add_settings_command
from hub.cli.signals import until_signalled
from hub.engine.hub import Hub
from hub.engine.loader import load_modules
from hub.errors import HubError
from hub.logging import configure_logging
from hub.runtime.scheduler import Scheduler
from hub.runtime.service import KafkaRuntime
from hub.runtime.topics import TopicsFileError
from hub.settings import SettingsError, process_settings

app = typer.Typer(help="The commerce integration hub.", no_args_is_help=True,
                  add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
add_kafka_commands(app)
add_api_commands(app)
add_execution_commands(app)
add_job_commands(app)
add_outbox_commands(app)
add_sandbox_command(app)
add_settings_command(app)


@app.callback()
def _settings_first() -> None:
    """Every command starts by reading and validating all the settings: a bad variable is
    reported, with every other one at fault, before anything runs."""
    process_settings()

LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning, error")]
JsonLogs = Annotated[bool | None, typer.Option(
    "--json-logs/--console-logs", help="JSON lines (default when not on a terminal)")]


@app.command()
def worker(
    modules: Annotated[
        str | None, typer.Option(help="comma-separated workflow modules (default HUB_MODULES)")
    ] = None,
    consume: Annotated[bool | None, typer.Option(
        help="run the Kafka consumer and outbox relay (default: when HUB_KAFKA_BOOTSTRAP "
             "is set)")] = None,
    execute: Annotated[bool, typer.Option(help="run the workflow executor")] = True,
    log_level: LogLevel = "info",
    json_logs: JsonLogs = None,
) -> None:
    """Run the executor and scheduler, and the consumer and outbox relay, until SIGTERM."""
    configure_logging(log_level, json_output=json_logs)
    every = process_settings()
    settings, kafka = every.engine, every.kafka
    if modules:
        settings = settings.model_copy(update={"modules": modules.split(",")})
    with_kafka = consume if consume is not None else bool(kafka.bootstrap)
    joined = every.origins.get("HUB_KAFKA_BOOTSTRAP")
    if joined and with_kafka:  # not silently: the dev mode's broker, group and database
        typer.echo(f"note: joining {joined}: its broker at {kafka.bootstrap}, consumer group "
                   f"{kafka.group!r}, and the database under {settings.data_dir}; set "
                   "HUB_KAFKA_BOOTSTRAP to choose another broker", err=True)

    async def run() -> None:
        load_modules(settings.modules)
        if settings.metrics_port is not None:
            from prometheus_client import start_http_server

            from hub.metrics import REGISTRY

            start_http_server(settings.metrics_port, registry=REGISTRY)
        async with Hub(settings=settings, execute=execute) as hub:
            runtime = KafkaRuntime(hub, kafka) if with_kafka else None
            if runtime is not None:
                await runtime.start()
            scheduler = Scheduler(hub) if execute and settings.scheduler else None
            if scheduler is not None:
                await scheduler.start()
            try:
                print(json.dumps({"event": "worker_ready", "worker": settings.worker_id,
                                  "workflows": hub.registry.names(),
                                  "kafka": runtime.bootstrap if runtime else None}),
                      flush=True)
                await until_signalled()
            finally:
                if scheduler is not None:
                    await scheduler.stop()
                if runtime is not None:
                    await runtime.stop()

    try:
        aio.run(run())
    except TopicsFileError as exc:  # the worker's configuration: bad usage, like settings
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@db_app.command("migrate")
def migrate(log_level: LogLevel = "warning") -> None:
    """Apply pending migrations (also done at every start)."""
    configure_logging(log_level)

    async def run() -> list[str]:
        async with Hub(settings=process_settings().engine, execute=False) as hub:
            return await hub.store.migrate()

    applied = asyncio.run(run())
    typer.echo("schema up to date" if not applied else "applied: " + ", ".join(applied))


@db_app.command("purge")
def purge(
    grace_days: Annotated[float, typer.Option(
        help="keep finished executions this many days past their retention")] = 0.0,
    log_level: LogLevel = "warning",
) -> None:
    """Delete finished executions past their retention (never a live one), with progress,
    published outbox events past theirs (never an unpublished or failed one), and the
    housekeeping tables' old rows (webhook ids, locks, redrives, audit, ended console
    sessions)."""
    configure_logging(log_level)

    async def run() -> int:
        async with Hub(settings=process_settings().engine, execute=False) as hub:
            total = await hub.purge(grace_seconds=grace_days * 86400.0, progress=lambda n: (
                typer.echo(f"\rpurged {n} execution(s)", nl=False, err=True)))
            typer.echo("", err=True)
            return total

    typer.echo(f"purged {asyncio.run(run())} finished execution(s) (and outbox events "
               "published longer ago than HUB_OUTBOX_RETENTION_S)")


@app.command()
def dev(
    log_level: LogLevel = "info",
    once: Annotated[bool, typer.Option(help="run one of each demo path and exit")] = False,
    port: Annotated[int, typer.Option(help="port of the HTTP API")] = 8000,
    demo_events: Annotated[int | None, typer.Option(
        help="publish N demo orders then stop sending (default: a steady trickle)")] = None,
    sandbox_port: Annotated[int, typer.Option(
        help="control port of the sandbox systems, which take the next four (0: free ports)")
    ] = SANDBOX_PORT,
) -> None:
    """Dev mode: embedded Postgres and Kafka, the sandbox systems, a worker, the API and the
    scheduler in one process, with demo orders flowing through them. Ctrl-C stops it all."""
    configure_logging(log_level)
    from hub.cli.demo import Warehouse, run_demo, trickle

    async def run() -> None:
        settings = process_settings().engine
        sandboxes = sandbox_server(sandbox_port)
        try:
            await asyncio.to_thread(sandboxes.start_in_thread)
        except OSError as exc:
            raise HubError(f"{exc}; pass --sandbox-port 0 for free ports") from None
        try:
            export_env(sandboxes.connector_env())
            secret = await asyncio.to_thread(_dev_secret, Path(settings.data_dir))
            api_settings = process_settings().api
            if not api_settings.webhook_secrets:  # the demo warehouse signs with its own
                api_settings = api_settings.model_copy(
                    update={"webhook_secrets": {"warehouse": SecretStr(secret)}})
            load_modules(settings.modules)
            async with Hub(settings=settings) as hub, KafkaRuntime(hub) as runtime, \
                    Scheduler(hub), _dev_runtime(Path(settings.data_dir), runtime.bootstrap,
                                                 f"http://127.0.0.1:{port}"):
                hub.container.build_all()
                typer.echo(f"sandboxes at {sandboxes.control_url} (state: "
                           f"{sandboxes.control_url}/systems/odoo/state)")
                await run_demo(hub, runtime)
                if once:
                    return
                key_file = Path(settings.data_dir) / "dev-api-key"
                token = await ensure_dev_key(hub, key_file)
                kafka = runtime.settings.model_copy(update={"bootstrap": runtime.bootstrap})
                server, task = await start_api(hub, "127.0.0.1", port, kafka, api_settings)
                api = f"http://127.0.0.1:{port}"
                try:
                    typer.echo(f"API at {api} (docs: /docs); dev key with every scope in "
                               f"{key_file}:\n  curl -H 'Authorization: Bearer {token}' "
                               f"{api}/workflow")
                    typer.echo(f"Kafka at {runtime.bootstrap}; Ctrl-C stops everything")
                    keys = api_settings.secrets().get("warehouse")  # none: nobody ships
                    demo = asyncio.create_task(trickle(
                        hub, runtime, demo_events,
                        warehouse=Warehouse(api, keys[0]) if keys else None))
                    await until_signalled()
                    demo.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await demo
                finally:
                    server.should_exit = True
                    await task
        finally:
            await asyncio.to_thread(sandboxes.stop_thread)

    try:
        asyncio.run(run())
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@contextlib.asynccontextmanager
async def _dev_runtime(data_dir: Path, bootstrap: str, api: str) -> AsyncIterator[None]:
    """While dev mode runs, the other commands of this folder find its broker."""
    devruntime.publish(data_dir, kafka_bootstrap=bootstrap, api=api)
    try:
        yield
    finally:
        devruntime.withdraw(data_dir)


def _dev_secret(data_dir: Path) -> str:
    """The dev warehouse's webhook secret, kept under ``.hub/`` across runs."""
    path = data_dir / "dev-webhook-secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def main() -> None:
    """Run the CLI; bad settings stop it naming each variable at fault (exit 2), and any
    other error the hub explains (a refused connection, an unknown execution) is one line
    (exit 1), never a traceback."""
    try:
        app()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
