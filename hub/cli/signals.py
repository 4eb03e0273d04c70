"""Waiting for Ctrl-C or SIGTERM, the way every long-running command stops."""

from __future__ import annotations

import asyncio
import contextlib
import signal


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
