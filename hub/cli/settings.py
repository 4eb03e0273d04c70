"""``hub settings``: every ``HUB_*`` variable the process reads, with its effective value."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from hub.settings import process_settings


def add_settings_command(app: typer.Typer) -> None:
    @app.command("settings")
    def settings(
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
    ) -> None:
        """Show the settings in effect (environment and .env, then defaults); secrets are
        masked. A bad variable fails the command, as it would fail a worker's start."""
        variables = process_settings().variables()
        if as_json:
            typer.echo(json.dumps([v.model_dump() for v in variables], indent=2, default=str))
            return
        width = max(len(v.name) for v in variables)
        for v in variables:
            shown = "(unset)" if v.value is None else json.dumps(v.value, default=str)
            note = f"  # {v.description}" if v.description else ""
            if v.origin:
                note = f"  # from {v.origin}"
            typer.echo(f"{v.name.ljust(width)} = {shown}{note}")
