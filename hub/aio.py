"""asyncio helpers the engine's loops rely on to stop when told to."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop where it is installed: a worker spends a good share of its
    CPU per event in the event loop's own bookkeeping (callbacks, futures, socket reads),
    which uvloop does in C. Semantics are asyncio's; without uvloop, asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # an optional speed-up: a platform without it still runs
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``event``; ``True`` if it was set.

    Not ``asyncio.wait_for``: on Python 3.11, a cancel that lands as the wait completes is
    swallowed (python/cpython#86296), and a loop built on it never stops: ``Hub.close``
    then waits for ever on a claim loop still polling. ``asyncio.timeout`` lets the cancel
    through.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
