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

from hub import devruntime
from hub.api.cli import add_api_commands, ensure_dev_key, start_api
from hub.cli.executions import add_execution_commands
from hub.cli.jobs import add_job_commands
from hub.cli.kafka import add_kafka_commands
from hub.cli.outbox import add_outbox_commands
from hub.cli.sandbox import SANDBOX_PORT, add_sandbox_command, export_env, sandbox_server
from hub.cli.settings import add_settings_command
from hub.cli.signals import cancelled_by_signal, until_signalled
from hub.engine.hub import Hub
from hub.engine.loader import load_modules
from hub.errors import HubError, ServiceConfigError
from hub.logging import configure_logging
from hub.runtime.scheduler import Scheduler
from hub.runtime.service import KafkaRuntime
from hub.runtime.topics import TopicsFileError
from hub.settings import SettingsError, process_settings
from hub.tracing import configure_tracing

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
    configure_tracing()  # spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
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
        from hub.runtime.kafka import without_producer_ids

        without_producer_ids(kafka.bootstrap or "")  # the dev mode's embedded Tansu

    try:
        load_modules(settings.modules)
    except HubError as exc:  # a workflow defined wrongly: named by the composer's error
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    hub = Hub(settings=settings, execute=execute)
    if execute:
        _build_services_or_exit(hub)

    async def run() -> None:
        if settings.metrics_port is not None:
            from prometheus_client import start_http_server

            from hub.metrics import REGISTRY

            start_http_server(settings.metrics_port, registry=REGISTRY)
        async with hub:
            runtime = KafkaRuntime(hub, kafka) if with_kafka else None
            if runtime is not None:
                await runtime.start()
            scheduler = Scheduler(hub) if execute and settings.scheduler else None
            if scheduler is not None:
                await scheduler.start()
            stop = asyncio.ensure_future(until_signalled())
            try:
                await asyncio.sleep(0)  # its handlers are in: "ready" can be stopped cleanly
                print(json.dumps({"event": "worker_ready", "worker": settings.worker_id,
                                  "workflows": hub.registry.names(),
                                  "kafka": runtime.bootstrap if runtime else None}),
                      flush=True)
                await stop
            finally:
                stop.cancel()
                if scheduler is not None:
                    await scheduler.stop()
                if runtime is not None:
                    await runtime.stop()

    try:
        asyncio.run(run())
    except TopicsFileError as exc:  # the worker's configuration: bad usage, like settings
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _build_services_or_exit(hub: Hub) -> None:
    """Build every connector the loaded workflows resolve (the services their modules
    register with ``@provides``) before the worker opens its store: a worker without, say,
    ``HUB_ODOO_BASE_URL`` would claim executions only to compensate every one of them."""
    try:
        hub.container.build_all()
    except ServiceConfigError as exc:
        asyncio.run(hub.container.aclose())
        lines = "\n".join(f"  {p}" for p in exc.problems)
        typer.echo(f"error: this worker cannot run its workflows (HUB_MODULES) without the "
                   f"settings of the connectors they use:\n{lines}\nset them (the dev mode's "
                   "sandboxes: `hub sandbox --env-file sandbox.env`), or start it with "
                   "--no-execute", err=True)
        raise typer.Exit(2) from None


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
    stop_with_parent: Annotated[bool, typer.Option(
        help="also stop when the parent process is told to stop (make dev uses it)")] = False,
) -> None:
    """Dev mode: embedded Postgres and Kafka, the sandbox systems, a worker, the API and the
    scheduler in one process, with demo orders flowing through them. It prints where each
    runs and a line of counts; the details go to <data dir>/dev.log. Ctrl-C or SIGTERM
    stops it all, at any moment of its start too."""
    from hub.cli.demo import HOLD_EVERY, SKUS, Stockroom, Warehouse, run_demo, trickle
    from hub.cli.devlog import configure_dev_logging
    from hub.cli.devsummary import DevAddresses, report_counts, start_lines

    settings = process_settings().engine
    data_dir = Path(settings.data_dir).resolve()
    log_file = configure_dev_logging(log_level, data_dir)
    configure_tracing()

    async def run() -> None:
        sandboxes = sandbox_server(sandbox_port)
        try:
            await asyncio.to_thread(sandboxes.start_in_thread)
        except OSError as exc:
            raise HubError(f"{exc}; pass --sandbox-port 0 for free ports") from None
        try:
            export_env(sandboxes.connector_env())
            secret = await asyncio.to_thread(_dev_secret, data_dir)
            api_settings = process_settings().api
            if not api_settings.webhook_secrets:  # the demo warehouse signs with its own
                api_settings = api_settings.model_copy(
                    update={"webhook_secrets": {"warehouse": SecretStr(secret)}})
            load_modules(settings.modules)
            async with Hub(settings=settings) as hub, KafkaRuntime(hub) as runtime, \
                    Scheduler(hub), _dev_runtime(data_dir, runtime.bootstrap,
                                                 f"http://127.0.0.1:{port}"):
                hub.container.build_all()
                if once:
                    typer.echo(f"sandboxes at {sandboxes.control_url}; log in {log_file}")
                    await run_demo(hub, runtime)
                    return
                key_file = data_dir / "dev-api-key"
                token = await ensure_dev_key(hub, key_file)
                kafka = runtime.settings.model_copy(update={"bootstrap": runtime.bootstrap})
                server, task = await start_api(hub, "127.0.0.1", port, kafka, api_settings)
                api = f"http://127.0.0.1:{port}"
                tasks: list[asyncio.Task[None]] = []
                try:
                    typer.echo("\n".join(start_lines(DevAddresses(
                        api=api, dev_key=token, key_file=key_file, broker=runtime.bootstrap,
                        postgres=hub.store.dsn,
                        pg_data=data_dir / "pgdata"
                        if settings.database_url is None else None,
                        sandboxes={name: sandboxes.url(name) for name in sandboxes.systems},
                        sandbox_control=sandboxes.control_url, log_file=log_file))))
                    await run_demo(hub, runtime)
                    keys = api_settings.secrets().get("warehouse")  # none: nobody ships
                    # the hand-made delivery signs with the dev secret's file: with secrets
                    # of your own (HUB_WEBHOOK_SECRETS) no order is held for it
                    own = bool(process_settings().api.webhook_secrets)
                    tasks.append(asyncio.create_task(trickle(
                        hub, runtime, demo_events, stockroom=Stockroom(SKUS),
                        warehouse=Warehouse(api, keys[0], hold_every=0 if own else HOLD_EVERY,
                                            secret_file=data_dir / "dev-webhook-secret")
                        if keys else None)))
                    tasks.append(asyncio.create_task(report_counts(hub, typer.echo)))
                    await asyncio.Event().wait()  # until cancelled by a signal
                finally:
                    for t in tasks:
                        t.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await t
                    server.should_exit = True
                    await task
        finally:
            await asyncio.to_thread(sandboxes.stop_thread)

    try:
        asyncio.run(cancelled_by_signal(run(), with_parent=stop_with_parent))
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("hub dev stopped")


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
