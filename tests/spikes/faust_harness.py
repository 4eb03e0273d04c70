"""Helpers for the faust-streaming spike: a broker of the test's own, a faust app on its own loop.

The faust app runs on an event loop of its own in a thread of its own (``run_isolated``): faust
starts its aiokafka consumer in yet another thread (``AIOKafkaConsumerThread``) and leaves tasks
behind on stop, and none of that should touch pytest-asyncio's session loop that the rest of the
suite shares. Every wait is bounded; a scenario that overruns fails instead of hanging CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

T = TypeVar("T")

#: Short group timings: on Tansu a JoinGroup waits about the session timeout (~4 s with 6 s),
#: with faust's defaults (60 s) the first assignment took 30 s.
GROUP_TIMING: dict[str, Any] = {
    "broker_session_timeout": 6.0,
    "broker_heartbeat_interval": 1.0,
    "broker_rebalance_timeout": 6.0,
    "broker_request_timeout": 10.0,
    # commit often, so the test sees what faust commits within a second
    "broker_commit_interval": 0.2,
}


@contextmanager
def spike_broker(tmp_root: Path) -> Iterator[tuple[str, str]]:
    """``(bootstrap, label)``: ``$HUB_KAFKA_BOOTSTRAP`` if set; Apache Kafka with
    ``HUB_TEST_BROKER=kafka`` (skips without java/mvn); else an embedded Tansu. Always stopped."""
    configured = os.environ.get("HUB_KAFKA_BOOTSTRAP")
    if configured:
        yield configured, f"external {configured}"
        return
    if os.environ.get("HUB_TEST_BROKER") == "kafka":
        from tests.support.apache_kafka import ApacheKafka, missing_tools

        missing = missing_tools()
        if missing:
            pytest.skip(f"Apache Kafka needs {' and '.join(missing)} on PATH")
        kafka = ApacheKafka(tmp_root / "faust-spike-kafka")
        bootstrap = kafka.start()
        try:
            yield bootstrap, "apache-kafka"
        finally:
            kafka.stop()
        return
    from hub.runtime.tansu import TansuBroker

    broker = TansuBroker()
    bootstrap = broker.start()
    try:
        yield bootstrap, "tansu"
    finally:
        broker.stop()


def run_isolated(scenario: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run ``scenario()`` with ``asyncio.run`` in a fresh thread; bounded by ``timeout``."""
    box: dict[str, Any] = {}

    def target() -> None:
        async def bounded() -> T:
            return await asyncio.wait_for(scenario(), timeout)

        try:
            box["value"] = asyncio.run(bounded())
        except BaseException as exc:  # handed to the test thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name="faust-spike", daemon=True)
    thread.start()
    thread.join(timeout + 20)
    if thread.is_alive():
        pytest.fail(f"faust scenario still running {timeout + 20:.0f} s after it started")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


class Offsets:
    """What the group has committed, read the way an operator would (OffsetFetch)."""

    def __init__(self, bootstrap: str, group: str, tp: TopicPartition) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                          enable_auto_commit=False)
        self.tp = tp

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def committed(self) -> int | None:
        value = await self._consumer.committed(self.tp)
        return int(value) if value is not None else None

    async def wait_for(self, target: int, timeout: float) -> int | None:
        """Poll until the committed offset is at least ``target``; returns the last value read
        (lower than ``target`` when it never got there)."""
        deadline = time.monotonic() + timeout
        value = await self.committed()
        while (value is None or value < target) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            value = await self.committed()
        return value


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def faust_app(bootstrap: str, app_id: str, **extra: Any) -> Any:
    """A faust App on ``bootstrap`` with no web server, no tables, its data in a temp dir."""
    import faust

    return faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="faust-spike-"),
        store="memory://",
        topic_partitions=1,
        consumer_auto_offset_reset="earliest",
        **GROUP_TIMING,
        **extra,
    )


def release_unacked(app: Any) -> int:
    """Ack every message faust still waits for, so ``wait_empty`` (stop, rebalance) can end."""
    consumer = app.consumer
    stuck = list(consumer._unacked_messages)
    for message in stuck:
        consumer.ack(message)
    return len(stuck)


async def stop_app(app: Any, start_task: asyncio.Task[Any] | None, timeout: float = 10.0) -> None:
    """Stop the app (bounded), then the task that started it.

    With ``stream_wait_empty`` (faust's default) ``App.stop`` waits, without a deadline, for every
    event a stream took to be acked; an event whose handler raised under ``noack()`` never is.
    After ``timeout`` such events are acked here so the app can stop at all.
    """
    stop = asyncio.ensure_future(app.stop())
    try:
        done, _ = await asyncio.wait({stop}, timeout=timeout)
        if not done:
            release_unacked(app)
            done, _ = await asyncio.wait({stop}, timeout=timeout)
        if not done:
            raise AssertionError(f"the faust app did not stop in {2 * timeout:.0f} s")
        stop.result()
    finally:
        if not stop.done():
            stop.cancel()
        if start_task is not None and not start_task.done():
            start_task.cancel()
            with contextlib.suppress(BaseException):  # cancelled or failed: nothing to keep
                await asyncio.wait_for(start_task, 5)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
