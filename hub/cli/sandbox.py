"""``hub sandbox``: the sandbox systems on their own, for a worker run by hand or a test rig."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hub.cli.signals import until_signalled
from hub.errors import HubError
from hub.logging import configure_logging

if TYPE_CHECKING:
    from hub.sandbox.server import SandboxServer

SANDBOX_PORT = 8900
"""The control port under ``hub dev`` and ``hub sandbox``; the systems take the next ones
(stripe 8901, odoo 8902, hubspot 8903, contentful 8904)."""


def sandbox_server(port: int, *, seed: int | None = None) -> SandboxServer:
    """Every sandbox: at ``port`` (control) and each system's default port, or all on free
    ports when ``port`` is 0."""
    from hub.sandbox.systems import all_sandboxes

    return all_sandboxes(seed=seed, fixed_ports=port != 0, control_port=port)


def export_env(env: dict[str, str]) -> None:
    """Point this process's connectors at the sandboxes, unless a variable is set already
    (so one real system can be mixed with the other sandboxes)."""
    for name, value in env.items():
        os.environ.setdefault(name, value)


def add_sandbox_command(app: typer.Typer) -> None:
    @app.command()
    def sandbox(
        port: Annotated[int, typer.Option(
            help="control port; the systems listen on the next four (0: free ports)")
        ] = SANDBOX_PORT,
        seed: Annotated[int | None, typer.Option(help="seed of the fault injection")] = None,
        env_file: Annotated[Path | None, typer.Option(
            help="also write the connector settings to this .env file")] = None,
        log_level: Annotated[str, typer.Option("--log-level")] = "warning",
    ) -> None:
        """Run the sandbox systems (Stripe, Odoo, HubSpot, Contentful) until Ctrl-C.

        Prints one JSON line with the control URL and the environment that points the
        connectors at them. Faults: ``curl -X PUT localhost:8900/systems/stripe/faults -d
        '{"error_rate": 0.5}'``; state: ``curl localhost:8900/systems/odoo/state``.
        """
        configure_logging(log_level)

        async def run() -> None:
            server = sandbox_server(port, seed=seed)
            try:
                await server.start()
            except OSError as exc:
                raise HubError(f"{exc}; pass --port 0 for free ports") from None
            env = server.connector_env()
            if env_file is not None:
                env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
            typer.echo(json.dumps({"event": "sandbox_ready", "control": server.control_url,
                                   "systems": {n: server.url(n) for n in server.systems},
                                   "env": env}), nl=True)
            try:
                await until_signalled()
            finally:
                await server.stop()

        try:
            asyncio.run(run())
        except HubError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
