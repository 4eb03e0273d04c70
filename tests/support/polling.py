"""Waiting for a condition, never for a duration: a busy machine only makes it slower."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


async def until(probe: Callable[[], Awaitable[Any]], timeout: float = 20.0, *,
                every: float = 0.05, what: str = "condition") -> Any:
    """Poll ``probe`` until it returns something truthy, and return that."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not met in {timeout} s"
        await asyncio.sleep(every)
