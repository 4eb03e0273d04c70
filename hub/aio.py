"""asyncio helpers the engine's loops rely on to stop when told to."""

from __future__ import annotations

import asyncio


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
