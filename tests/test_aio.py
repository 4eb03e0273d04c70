"""The engine's loops stop when cancelled, however the cancel and their wake-up interleave."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest

from hub.aio import wait_event


async def _loop_on(ev: asyncio.Event, wait: object) -> None:
    while True:
        await wait(ev)  # type: ignore[operator]
        ev.clear()


async def _cancel_as_woken(wait: object) -> asyncio.Task[None]:
    ev = asyncio.Event()
    task = asyncio.create_task(_loop_on(ev, wait))
    await asyncio.sleep(0.01)  # the loop now waits
    ev.set()  # its wake-up and the cancel land in the same turn of the event loop
    task.cancel()
    await asyncio.wait([task], timeout=1)
    return task


async def test_a_cancel_landing_as_the_event_is_set_stops_the_loop() -> None:
    task = await _cancel_as_woken(lambda ev: wait_event(ev, 10))
    assert task.done() and task.cancelled()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio.wait_for was fixed in 3.12")
async def test_the_interleaving_above_is_the_one_asyncio_wait_for_mishandles() -> None:
    # what the test above would meet with the loops' former asyncio.wait_for: the cancel is
    # swallowed and the loop goes on waiting (python/cpython#86296)
    async def with_wait_for(ev: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), 10)

    task = await _cancel_as_woken(with_wait_for)
    try:
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=1)


async def test_times_out_false_and_sees_a_set_event_true() -> None:
    ev = asyncio.Event()
    assert await wait_event(ev, 0.01) is False
    ev.set()
    assert await wait_event(ev, 0.01) is True
