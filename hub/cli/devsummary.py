"""What ``hub dev`` prints: where everything runs, then one line of counts now and then.

The details are in the log file; the terminal shows only what a developer acts on: the
addresses and the login at start, then how many events were consumed, where the executions
stand and how many records went to the dead-letter topics, when that changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from hub import metrics
from hub.engine.hub import Hub
from hub.settings import mask_dsn

EVERY_S = 10.0
"""How often the counts line may be printed (only when it changed)."""


@dataclass(frozen=True)
class DevAddresses:
    """Where the dev mode's parts listen, for the start-up summary."""

    api: str
    dev_key: str
    key_file: Path
    broker: str
    postgres: str
    pg_data: Path | None
    sandboxes: dict[str, str]
    sandbox_control: str
    log_file: Path


def start_lines(at: DevAddresses) -> list[str]:
    pg = mask_dsn(at.postgres) + (f" (embedded, data in {at.pg_data})" if at.pg_data else "")
    systems = ", ".join(f"{name} {url}" for name, url in sorted(at.sandboxes.items()))
    return [
        "hub dev is running; Ctrl-C stops everything",
        f"  API        {at.api} (docs {at.api}/docs)",
        f"  console    {at.api}/ui (log in with the dev key {at.dev_key}, kept in "
        f"{at.key_file})",
        f"  curl       curl -H 'Authorization: Bearer {at.dev_key}' {at.api}/workflow",
        f"  broker     {at.broker} (embedded Tansu; hub commands in this folder find it)",
        f"  postgres   {pg}",
        f"  sandboxes  {systems} (state: {at.sandbox_control}/systems/odoo/state)",
        f"  log        {at.log_file} (every detail; --log-level debug shows them here too)",
    ]


def _total(counter: Counter) -> int:
    return int(sum(s.value for m in counter.collect() for s in m.samples
                   if s.name.endswith("_total")))


async def counts_line(hub: Hub) -> str:
    """Events this process consumed and dead-lettered, and every execution by status."""
    per: dict[str, int] = {}
    for row in await hub.store.api_execution_counts():
        per[row["status"]] = per.get(row["status"], 0) + int(row["n"])
    running = per.get("pending", 0) + per.get("running", 0)
    failed = per.get("compensation_failed", 0) + per.get("cancelled", 0)
    return (f"events consumed {_total(metrics.EVENTS_HANDLED)} | executions: running {running}"
            f" waiting {per.get('waiting', 0)} succeeded {per.get('succeeded', 0)}"
            f" compensated {per.get('compensated', 0)} failed {failed}"
            f" | dead letters {_total(metrics.DEAD_LETTERS)}")


async def report_counts(hub: Hub, say: Callable[[str], None], every: float = EVERY_S) -> None:
    """Print the counts line when it changed, at most once per ``every`` seconds."""
    last = ""
    while True:
        line = await counts_line(hub)
        if line != last:
            say(line)
            last = line
        await asyncio.sleep(every)
