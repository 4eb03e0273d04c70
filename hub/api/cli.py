"""``hub api`` (serve the HTTP API) and ``hub keys create|revoke|list``.

``add_api_commands(app)`` adds them to the ``hub`` command; the API process does not run
workflows unless ``--execute`` is given: workers run them, and an API that answers requests
should not share its event loop with step code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, TypeVar

import typer
import uvicorn

from hub.engine.hub import Hub
from hub.engine.loader import load_modules
from hub.errors import HubError
from hub.logging import configure_logging
from hub.settings import ApiSettings, KafkaSettings, process_settings
from hub.tracing import configure_tracing

LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning, error")]
T = TypeVar("T")

AsJson = Annotated[bool, typer.Option("--json", help="JSON output for scripts")]


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def add_api_commands(app: typer.Typer) -> None:
    """Add ``api`` and the ``keys`` group to the ``hub`` typer app."""
    keys_app = typer.Typer(help="API keys of the HTTP API (the token is shown once).",
                           no_args_is_help=True)
    app.add_typer(keys_app, name="keys")

    @app.command("api")
    def api(
        host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port")] = 8000,
        execute: Annotated[bool, typer.Option(
            help="also run workflows in this process (default: workers run them)")] = False,
        modules: Annotated[str | None, typer.Option(
            help="comma-separated workflow modules (default HUB_MODULES)")] = None,
        routes: Annotated[str | None, typer.Option(
            help="comma-separated custom route modules (default HUB_API_ROUTES, api.routes)")]
        = None,
        log_level: LogLevel = "info",
    ) -> None:
        """Serve the HTTP API (OpenAPI document at /openapi.json, docs at /docs)."""
        configure_logging(log_level)
        configure_tracing()
        try:
            asyncio.run(_serve(host, port, execute, modules, routes, log_level))
        except HubError as exc:
            raise _fail(exc) from None

    @keys_app.command("create")
    def create(
        name: Annotated[str, typer.Argument(help="who will use the key, e.g. erp-sync")],
        scope: Annotated[list[str], typer.Option(
            "--scope", "-s",
            help="read, run, operate or raw (payloads unredacted); repeat for several")],
        as_json: AsJson = False,
    ) -> None:
        """Create a key and print its token: it is shown this once, and stored only hashed."""
        from hub.api.keys import create_key

        key = _with_hub(lambda hub: create_key(hub.store, name, scope))
        if as_json:
            typer.echo(key.model_dump_json())
            return
        typer.echo(f"created {key.name} ({key.prefix}) with scopes {', '.join(key.scopes)}")
        typer.echo(f"token (shown once): {key.token}")

    @keys_app.command("revoke")
    def revoke(
        key_id: Annotated[str, typer.Argument(metavar="ID", help="the key's id or prefix")],
        as_json: AsJson = False,
    ) -> None:
        """Revoke a key: its next request gets 401."""
        from hub.api.keys import revoke_key

        key = _with_hub(lambda hub: revoke_key(hub.store, key_id))
        if key is None:
            raise _fail(HubError(f"no API key with id or prefix {key_id!r} "
                                 "(see `hub keys list`)"))
        if as_json:
            typer.echo(key.model_dump_json())
            return
        assert key.revoked_at is not None
        typer.echo(f"revoked {key.name} ({key.prefix}) at {key.revoked_at.isoformat()}")

    @keys_app.command("list")
    def list_(as_json: AsJson = False) -> None:
        """Every key, revoked ones included; never a secret."""
        from hub.api.keys import list_keys

        keys = _with_hub(lambda hub: list_keys(hub.store))
        if as_json:
            typer.echo(json.dumps([k.model_dump(mode="json") for k in keys]))
            return
        for k in keys:
            state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
            used = f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never"
            typer.echo(f"{k.id}  {k.prefix}  {k.name:<20} {','.join(k.scopes):<18} "
                       f"{state:<24} last used {used}")


def _with_hub(op: Callable[[Hub], Awaitable[T]]) -> T:
    """Run ``op(hub)`` on a hub that only reads and writes the store (no executor)."""
    configure_logging("warning")

    async def run() -> T:
        async with Hub(settings=process_settings().engine, execute=False) as hub:
            return await op(hub)

    try:
        return asyncio.run(run())
    except HubError as exc:
        raise _fail(exc) from None


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM once it has stopped, killing the process before the hub
    closes (leases released, embedded Postgres stopped): ``_serve`` handles the signals
    instead, and ``hub api`` exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(host: str, port: int, execute: bool, modules: str | None,
                 routes: str | None, log_level: str) -> None:
    from hub.api.app import create_app, load_routes

    every = process_settings()
    settings, kafka, api_settings = every.engine, every.kafka, every.api
    if modules:
        settings = settings.model_copy(update={"modules": modules.split(",")})
    load_modules(settings.modules)
    try:  # the AsyncAPI document names the consumers of each topic
        load_modules(kafka.subscribers)
    except HubError as exc:
        typer.echo(f"warning: subscribers not loaded, /asyncapi.yaml lists none: {exc}",
                   err=True)
    specs = routes.split(",") if routes else api_settings.api_routes
    explicit = routes is not None or "HUB_API_ROUTES" in os.environ
    custom = load_routes([s.strip() for s in specs if s.strip()], explicit=explicit)
    async with Hub(settings=settings, execute=execute) as hub:
        app = create_app(hub, custom_routes=custom, settings=api_settings, kafka=kafka)
        # proxy_headers off: HUB_TRUSTED_PROXIES alone decides whose X-Forwarded-* to
        # believe (hub.api.proxies); uvicorn's own handling would trust 127.0.0.1 besides
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level.lower(),
                                lifespan="off", server_header=False, proxy_headers=False)
        server = _Server(config)

        def stop() -> None:  # a second signal skips the wait for open connections
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop)
        await server.serve()



async def ensure_dev_key(hub: Hub, path: Path) -> str:
    """The dev mode's key with every scope, kept in ``path`` across runs (made anew if the
    file is missing or its key no longer authenticates)."""
    from hub.api.keys import authenticate, create_key

    token = await asyncio.to_thread(_read_key, path)
    if token:
        with contextlib.suppress(HubError):
            await authenticate(hub.store, token)
            return token
    created = await create_key(hub.store, "dev", ["read", "run", "operate"])
    await asyncio.to_thread(_write_key, path, created.token)
    return created.token


def _read_key(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def _write_key(path: Path, token: str) -> None:
    path.write_text(token + "\n")
    path.chmod(0o600)


async def start_api(hub: Hub, host: str, port: int, kafka: KafkaSettings | None = None,
                    api_settings: ApiSettings | None = None,
                    ) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Serve the API of ``hub`` in this process (dev mode); stop with ``server.should_exit``.
    ``kafka``: the broker the API reports on (lag, dead letters), e.g. the embedded one;
    ``api_settings``: the process's unless given (dev mode adds its warehouse's secret)."""
    from hub.api.app import create_app, load_routes

    every = process_settings()
    api_settings = api_settings or every.api
    custom = load_routes(api_settings.api_routes, explicit=False)
    app = create_app(hub, custom_routes=custom, settings=api_settings,
                     kafka=kafka or every.kafka)
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                    lifespan="off", server_header=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it (e.g. the port is taken)
            raise HubError(f"the API could not listen on {host}:{port}")
        await asyncio.sleep(0.02)
    return server, task
