"""``acquire_lock_step`` / ``release_lock_step``: serialise workflows on a business key.

The lock's owner is the execution, so a retried or re-run acquire finds it already held by
itself; compensation of the acquire releases it, so a failed run never leaves a key locked.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from hub.engine.context import StepContext
from hub.engine.response import StepResponse
from hub.errors import StepError
from hub.sdk.step import create_step


class LockInput(BaseModel):
    key: str
    ttl: float | None = None


class LockBusy(StepError):
    """The key is held by another execution; retried per the step's retry policy."""


async def _acquire(inp: LockInput, ctx: StepContext) -> StepResponse[Any]:
    locks = ctx.container.resolve("locks")
    if not await locks.acquire(inp.key, ctx.execution_id, inp.ttl):
        raise LockBusy(f"lock {inp.key!r} is held by another execution")
    return StepResponse({"key": inp.key}, {"key": inp.key})


async def _release_compensation(held: Any, ctx: StepContext) -> None:
    if held:
        await ctx.container.resolve("locks").release(held["key"], ctx.execution_id)


async def _release(inp: LockInput, ctx: StepContext) -> StepResponse[Any]:
    await ctx.container.resolve("locks").release(inp.key, ctx.execution_id)
    return StepResponse({"key": inp.key, "released": True})


acquire_lock_step = create_step(
    "acquire-lock", _acquire, _release_compensation, max_retries=50, retry_interval=0.2,
    backoff=1.5, max_retry_interval=5.0,
)
"""``acquire_lock_step({"key": ..., "ttl": seconds})``; waits (by retrying) while busy."""

release_lock_step = create_step("release-lock", _release)
"""``release_lock_step({"key": ...})``; releasing a key not held is a no-op."""
