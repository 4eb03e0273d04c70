"""Spike: could faust-streaming's agents have been the hub's consumer runtime?

Evidence for ``docs/decisions/consumer-runtime.md``. A faust app (agent ``concurrency=2``) runs
against a real broker (the embedded Tansu; Apache Kafka with ``HUB_TEST_BROKER=kafka``) and the test
reads what the group has committed with an aiokafka ``committed()`` call, the way an operator
would. The assertions record what faust *does*, not what the hub needs: each one that holds is a
requirement faust breaks. If faust fixes one (say faust-streaming/faust#707 is merged), its
assertion fails with a message saying so, and the decision record should be revisited.

What the hub needs (the decision record's requirements) and what is checked here:

* an offset is committed only after the event's effect is durable -- faust commits the offset of
  an event whose handler raised (faust-streaming/faust#527, robinhood/faust#604), because
  ``Stream.__aiter__`` acks the event in a ``finally`` around its ``yield``;
* commit only the unbroken run of finished offsets -- faust commits past an event still in flight
  when a later one finished (faust-streaming/faust#606), an off-by-one in
  ``faust/transport/consumer.py`` ``Consumer._new_offset``; ``noack()`` + manual acks do not help;
* per-partition (per-key) order with bounded concurrency -- with ``concurrency=2`` the actors share
  one channel, so later events of the same key finish before an earlier one.

The faust app runs on a loop and thread of its own (``faust_harness.run_isolated``); broker and
app are always stopped. faust-streaming is not a dependency of the hub: without it installed this
module is skipped (so the default CI environment, ``pip install -e '.[dev]'``, skips it).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

faust = pytest.importorskip(
    "faust",
    reason="faust-streaming is not installed: the consumer-runtime spike only runs where it is "
           "(.venv/bin/pip install faust-streaming); the hub does not depend on it",
)

from tests.spikes.faust_harness import (  # noqa: E402 - after the importorskip on purpose
    Offsets,
    create_topic,
    faust_app,
    release_unacked,
    run_isolated,
    spike_broker,
    stop_app,
    unique,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.broker]  # runs on Tansu and on Apache Kafka

SCENARIO_TIMEOUT = 40.0  # seconds, one faust app start (~4 s JoinGroup on Tansu) to stop
STOP_PATIENCE = 4.0  # seconds we let App.stop() wait for an event that will never be acked


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with spike_broker(tmp_path_factory.mktemp("faust-spike")) as (address, _label):
        yield address


# --------------------------------------------------------------------------------------------
# 1. Default acks (``async for event in stream.events()``), concurrency=2, one key.
# --------------------------------------------------------------------------------------------


async def _default_ack_scenario(bootstrap: str) -> dict[str, Any]:
    topic_name, app_id = unique("faust-spike"), unique("faust-spike-app")
    await create_topic(bootstrap, topic_name)
    tp = TopicPartition(topic_name, 0)
    app = faust_app(bootstrap, app_id)
    topic = app.topic(topic_name, value_type=bytes, value_serializer="raw")
    release = asyncio.Event()
    started: list[int] = []
    finished: list[int] = []
    errors: list[str] = []  # what the handler raised (faust's own on_error is taken, see doc)
    obs: dict[str, Any] = {}

    @app.agent(topic, concurrency=2)
    async def handler(stream: Any) -> None:
        async for event in stream.events():
            offset, value = event.message.offset, event.value
            started.append(offset)
            if value == b"slow":
                await release.wait()  # a long handler: in flight until the test says so
            elif value == b"boom":
                exc = RuntimeError(f"handler failed on offset {offset}")
                errors.append(repr(exc))
                raise exc
            finished.append(offset)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    offsets = Offsets(bootstrap, app_id, tp)
    await producer.start()
    await offsets.start()
    start_task: asyncio.Task[Any] | None = None
    try:
        async def send(value: bytes) -> int:
            return int((await producer.send_and_wait(topic_name, value, key=b"order-1")).offset)

        start_task = asyncio.create_task(app.start())
        # offset 0: a normal event, so the group has a committed offset (1) before the test
        assert await send(b"warm-up") == 0
        await wait_until(lambda: 0 in finished, 25, "faust to handle offset 0")
        obs["committed_after_warm_up"] = await offsets.wait_for(1, 5)

        # offset 1 is slow (held), offsets 2-4 are quick; all of the same key
        for value in (b"slow", b"a", b"b", b"c"):
            await send(value)
        await wait_until(lambda: {2, 3, 4} <= set(finished), 10, "offsets 2-4 to finish")
        obs["committed_while_1_in_flight"] = await offsets.wait_for(5, 5)
        obs["1_was_in_flight"] = 1 not in finished
        obs["finish_order_same_key"] = list(finished)
        release.set()
        await wait_until(lambda: 1 in finished, 5, "offset 1 to finish once released")

        # offset 5: the handler raises
        assert await send(b"boom") == 5
        await wait_until(lambda: bool(errors), 10, "the handler of offset 5 to raise")
        obs["committed_after_5_raised"] = await offsets.wait_for(6, 5)
        obs["errors"] = list(errors)

        # offset 6: the supervisor restarted the crashed actor; it goes on after the failed one
        assert await send(b"after") == 6
        await wait_until(lambda: 6 in finished, 10, "offset 6 to be handled")
        obs["committed_at_end"] = await offsets.wait_for(7, 5)
        obs["started"] = list(started)
        obs["finished"] = list(finished)
        return obs
    finally:
        release.set()
        try:
            await stop_app(app, start_task)
        finally:
            await offsets.stop()
            await producer.stop()


def test_faust_commits_offsets_of_in_flight_and_failed_events(bootstrap: str) -> None:
    obs = run_isolated(lambda: _default_ack_scenario(bootstrap), SCENARIO_TIMEOUT)

    assert obs["committed_after_warm_up"] == 1

    # faust-streaming/faust#606: offset 1 was still being handled, yet the group's committed
    # offset moved to 5. A crash now would resume at 5 and never handle offset 1.
    assert obs["1_was_in_flight"]
    assert obs["committed_while_1_in_flight"] == 5, (
        "faust no longer commits past an in-flight event (faust#606 fixed?): committed "
        f"{obs['committed_while_1_in_flight']}; revisit docs/decisions/consumer-runtime.md")

    # concurrency=2: one channel shared by two actors -> later events of the same key (and the
    # same partition) finish before an earlier one; no per-key order.
    order = obs["finish_order_same_key"]
    assert order[:1] == [0] and set(order[1:]) == {2, 3, 4} and 1 not in order

    # faust-streaming/faust#527 (robinhood/faust#604): the handler of offset 5 raised; faust
    # logged the crash, committed at once (App._on_agent_error -> Consumer.on_task_error ->
    # commit()), restarted the actor -- and the commit is 6, past the failed event, which is
    # never handed to a handler again.
    assert obs["errors"] == ["RuntimeError('handler failed on offset 5')"]
    assert obs["committed_after_5_raised"] == 6, (
        "faust no longer commits the offset of an event whose handler raised (faust#527 fixed?): "
        f"committed {obs['committed_after_5_raised']}; revisit docs/decisions/consumer-runtime.md")
    assert obs["started"].count(5) == 1 and 5 not in obs["finished"]
    assert obs["committed_at_end"] == 7


# --------------------------------------------------------------------------------------------
# 2. Manual acks (``stream.noack().events()`` + ``await stream.ack(event)`` after success).
# --------------------------------------------------------------------------------------------


async def _manual_ack_scenario(bootstrap: str) -> dict[str, Any]:
    topic_name, app_id = unique("faust-spike-noack"), unique("faust-spike-noack-app")
    await create_topic(bootstrap, topic_name)
    tp = TopicPartition(topic_name, 0)
    app = faust_app(bootstrap, app_id)
    topic = app.topic(topic_name, value_type=bytes, value_serializer="raw")
    acked: list[int] = []
    errors: list[str] = []  # what the handler raised (faust's own on_error is taken, see doc)
    obs: dict[str, Any] = {}

    @app.agent(topic, concurrency=2)
    async def handler(stream: Any) -> None:
        manual = stream.noack()
        async for event in manual.events():
            if event.value == b"boom":
                exc = RuntimeError(f"handler failed on offset {event.message.offset}")
                errors.append(repr(exc))
                raise exc
            await manual.ack(event)  # ack only what was handled
            acked.append(event.message.offset)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    offsets = Offsets(bootstrap, app_id, tp)
    await producer.start()
    await offsets.start()
    start_task: asyncio.Task[Any] | None = None
    try:
        async def send(value: bytes) -> int:
            return int((await producer.send_and_wait(topic_name, value, key=b"order-1")).offset)

        start_task = asyncio.create_task(app.start())
        assert await send(b"warm-up") == 0
        await wait_until(lambda: 0 in acked, 25, "faust to handle offset 0")
        obs["committed_after_warm_up"] = await offsets.wait_for(1, 5)

        assert await send(b"boom") == 1  # raises, never acked
        await wait_until(lambda: bool(errors), 10, "the handler of offset 1 to raise")
        assert await send(b"ok") == 2  # handled and acked
        await wait_until(lambda: 2 in acked, 10, "offset 2 to be acked")
        obs["committed_after_2_acked"] = await offsets.wait_for(3, 5)
        obs["acked"] = list(acked)
        obs["errors"] = list(errors)
        obs["still_unacked"] = sorted(m.offset for m in app.consumer._unacked_messages)

        # Stopping waits (stream_wait_empty, faust's default) for offset 1 to be acked: forever.
        stop = asyncio.ensure_future(app.stop())
        done, _ = await asyncio.wait({stop}, timeout=STOP_PATIENCE)
        obs["stopped_within_patience"] = bool(done)
        obs["released"] = release_unacked(app)  # ack it by hand: now it can stop
        done, _ = await asyncio.wait({stop}, timeout=10)
        obs["stopped_after_release"] = bool(done)
        return obs
    finally:
        try:
            await stop_app(app, start_task)
        finally:
            await offsets.stop()
            await producer.stop()


def test_faust_manual_acks_still_commit_past_a_failed_event(bootstrap: str) -> None:
    obs = run_isolated(lambda: _manual_ack_scenario(bootstrap), SCENARIO_TIMEOUT)

    assert obs["committed_after_warm_up"] == 1
    assert obs["errors"] == ["RuntimeError('handler failed on offset 1')"]
    assert obs["acked"] == [0, 2]
    # Offset 1 was never acked, but the acked run {2} starts one past the committed offset 1,
    # which _new_offset's head-gap guard (``min(acked) - committed > 1``) lets through.
    assert obs["committed_after_2_acked"] == 3, (
        "faust no longer commits past an un-acked event with noack() (faust#527/#606 fixed?): "
        f"committed {obs['committed_after_2_acked']}; revisit docs/decisions/consumer-runtime.md")
    # ...and yet faust still counts offset 1 as in flight: App.stop() (and a revoke, which runs the
    # same Consumer.wait_empty) waits for it with no deadline, logging "wait_empty: Waiting for
    # tasks" every ten rounds. Neither "clean shutdown" nor "clean rebalance".
    assert obs["still_unacked"] == [1]
    assert not obs["stopped_within_patience"]
    assert obs["released"] == 1 and obs["stopped_after_release"]


# --------------------------------------------------------------------------------------------
# 3. The commit arithmetic itself, no broker: faust's ``Consumer._new_offset``.
# --------------------------------------------------------------------------------------------


def _new_offset(committed: int | None, acked: list[int]) -> int | None:
    """faust's own ``Consumer._new_offset`` on a stand-in holding only the state it reads."""
    from collections import defaultdict

    from faust.transport.consumer import Consumer
    from intervaltree import IntervalTree

    tp = TopicPartition("t", 0)
    state = types.SimpleNamespace(
        _acked=defaultdict(list, {tp: list(acked)}),
        _acked_index=defaultdict(set, {tp: set(acked)}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, {tp: committed}),
    )
    result: int | None = Consumer._new_offset(state, tp)  # type: ignore[arg-type]
    return result


@pytest.mark.parametrize(
    ("committed", "acked", "faust_commits", "hub_would_commit"),
    [
        # faust#606 / PR #707's example: 2585 in flight, 2586-2589 done -> faust commits 2590
        (2585, [2586, 2587, 2588, 2589], 2590, 2585),
        # nothing committed yet (None) or committed 0: the head guard is skipped altogether
        (None, [1, 2, 3], 4, None),
        (0, [1, 2, 3], 4, 0),
        # a gap of two or more at the head is held back, as it should be
        (31, [34, 35, 36, 37], None, 31),
        # the run stops at the first gap in the middle
        (10, [10, 11, 13], 12, 12),
    ],
)
def test_faust_new_offset_arithmetic(committed: int | None, acked: list[int],
                                     faust_commits: int | None,
                                     hub_would_commit: int | None) -> None:
    assert _new_offset(committed, acked) == faust_commits
    # what "only the unbroken run of finished offsets" means, for contrast
    run_end = committed
    done = set(acked)
    while run_end is not None and run_end in done:
        run_end += 1
    assert run_end == hub_would_commit

