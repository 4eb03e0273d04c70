"""Waiting for Ctrl-C or SIGTERM, the way every long-running command stops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def cancelled_by_signal(work: Coroutine[Any, Any, T], *,
                              with_parent: bool = False) -> T | None:
    """Run ``work`` until it ends or SIGINT/SIGTERM arrives, then cancel it, so its
    ``finally`` and ``async with`` blocks stop what it started at whatever point it was
    (a signal during a start-up would otherwise kill the process and orphan its children:
    the embedded Postgres, the broker). A second signal only repeats the cancel.
    ``with_parent``: also when the parent is told to stop (``until_parent_stops``)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    watch = asyncio.ensure_future(until_parent_stops()) if with_parent else None
    if watch is not None:
        watch.add_done_callback(lambda w: None if w.cancelled() else task.cancel())
    try:
        return await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise
        return None
    finally:
        if watch is not None:
            watch.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


def _caught_signals(pid: int) -> int | None:
    """The mask of signals ``pid`` catches (Linux ``/proc``), or None if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        return None
    return None


async def until_parent_stops(poll_s: float = 0.5) -> None:
    """Return when the parent process is told to stop, or is gone.

    GNU make forwards SIGTERM to the command it runs, but on SIGINT sent to make alone (a
    process manager's stop, not Ctrl-C on the terminal's group) it only waits for that
    command, for ever. What make does do on either signal is restore the default action
    before it waits: the signal leaves its ``SigCgt`` mask, which this watches. Without
    ``/proc`` it only notices the parent going away."""
    parent = os.getppid()
    stops = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    first = await asyncio.to_thread(_caught_signals, parent)
    watched = (first or 0) & stops
    while True:
        await asyncio.sleep(poll_s)
        if os.getppid() != parent:
            return
        now = await asyncio.to_thread(_caught_signals, parent)
        if watched and (now is None or now & watched != watched):
            return
