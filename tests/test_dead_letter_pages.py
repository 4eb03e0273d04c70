"""Dead-letter topics are read a bounded page at a time, never whole.

A dead-letter topic filled by a producer bug upstream (thousands of letters, or a few large
ones) costs each reader, the API, the console and ``hub dlq``, one page: at most ``limit``
records fetched and 4 MiB held, with a cursor to the rest; counts come from offsets.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from hub import Hub
from hub import wire as h
from hub.api import ApiSettings, create_app, create_key
from hub.metrics import REGISTRY
from hub.runtime.admin import reconcile
from hub.runtime.deadletters import (
    PAGE_BYTES,
    count_dead_letters,
    read_dead_letters,
    read_letters,
)
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.topics import load_topics
from hub.settings import KafkaSettings
from tests.support.console import serve

pytestmark = pytest.mark.broker

MANY = 5000


def _topics(tmp_path: Path, prefix: str, partitions: int) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(f"""
topics:
  {prefix}.in:
    partitions: 1
    dead_letter: {prefix}.in.dlq
  {prefix}.in.dlq:
    partitions: {partitions}
""")
    return path


async def _fill(bootstrap: str, path: Path, topic: str, n: int, *, size: int = 20,
                partitions: int = 1) -> None:
    """``n`` dead letters, sent in batches (not one round trip each)."""
    await reconcile(load_topics(path), KafkaSettings(bootstrap=bootstrap), bootstrap,
                    create=True)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        sent = [await producer.send(topic, b"x" * size, partition=i % partitions,
                                    key=f"k{i}".encode(),
                                    headers=[(h.DLQ_TOPIC, b"orders"), (h.DLQ_STAGE, b"handler"),
                                             (h.DLQ_OFFSET, str(i).encode())])
                for i in range(n)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _read(topic: str) -> float:
    return REGISTRY.get_sample_value("hub_dead_letter_records_read_total",
                                     {"topic": topic}) or 0.0


async def test_a_page_of_a_large_dead_letter_topic_fetches_at_most_its_limit(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    dlq = f"{prefix}.in.dlq"
    await _fill(kafka_bootstrap, _topics(tmp_path, prefix, 2), dlq, MANY, partitions=2)
    s = KafkaSettings(bootstrap=kafka_bootstrap)

    before = _read(dlq)

    count = await count_dead_letters(hub, s, kafka_bootstrap, dlq)
    assert (count.held, count.redriven, count.approximate) == (MANY, 0, False)
    assert _read(dlq) - before <= 2, "a count reads a record per partition at most"

    first = await read_dead_letters(hub, s, kafka_bootstrap, dlq, limit=200)
    assert len(first.letters) == 200 and first.next is not None
    # a page, and a record per partition to learn where each ends
    assert first.fetched <= 202 and _read(dlq) - before <= 204, "one page, not the topic"
    assert [(d.partition, d.offset) for d in first.letters] == [(0, o) for o in range(200)]

    seen = [d.ref for d in first.letters]
    cursor, pages = first.next, 1
    while cursor is not None:
        page = await read_dead_letters(hub, s, kafka_bootstrap, dlq, cursor=cursor, limit=200)
        assert page.fetched <= 202 and len(page.letters) <= 200
        seen += [d.ref for d in page.letters]
        cursor, pages = page.next, pages + 1
    assert pages == MANY // 200 and len(seen) == len(set(seen)) == MANY
    assert seen == sorted(seen, key=lambda r: tuple(int(x) for x in r.split("/")[-2:]))

    one = await read_letters(hub, s, kafka_bootstrap, [f"{dlq}/1/1234"])
    assert one[f"{dlq}/1/1234"].headers[h.DLQ_STAGE] == "handler"


async def test_a_page_of_large_letters_is_cut_at_its_byte_cap_with_a_cursor(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    dlq = f"{prefix}.in.dlq"
    size = 900 * 1024  # six letters: 5.3 MiB, over the 4 MiB a page holds
    await _fill(kafka_bootstrap, _topics(tmp_path, prefix, 1), dlq, 6, size=size)
    s = KafkaSettings(bootstrap=kafka_bootstrap)
    first = await read_dead_letters(hub, s, kafka_bootstrap, dlq)
    held = sum(len(d.value or b"") for d in first.letters)
    assert len(first.letters) == PAGE_BYTES // (size + 100) == 4 and held <= PAGE_BYTES
    assert first.next == "0:4"
    rest = await read_dead_letters(hub, s, kafka_bootstrap, dlq, cursor=first.next)
    assert [d.offset for d in rest.letters] == [4, 5] and rest.next is None


async def test_the_api_and_the_console_page_dead_letters_with_a_next_cursor(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    dlq = f"{prefix}.in.dlq"
    path = _topics(tmp_path, prefix, 1)
    await _fill(kafka_bootstrap, path, dlq, 120)
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topics_file=path)
    app = create_app(hub, settings=ApiSettings(), kafka=kafka, subscribers=SubscriberRegistry())
    read_key = (await create_key(hub.store, "viewer", ["read"])).token
    auth = {"Authorization": f"Bearer {read_key}"}
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        before = _read(dlq)
        r = await client.get("/dead-letters", params={"topic": dlq, "limit": 50}, headers=auth)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) == 50 and body["next"] == "0:50"
        assert body["items"][0]["ref"] == f"{dlq}/0/0" and body["items"][0]["stage"] == "handler"
        assert _read(dlq) - before <= 51
        r = await client.get("/dead-letters", params={"topic": dlq, "cursor": "0:100"},
                             headers=auth)
        assert [i["offset"] for i in r.json()["items"]] == list(range(100, 120))
        assert r.json()["next"] is None
        bad = await client.get("/dead-letters", params={"topic": dlq, "cursor": "all"},
                               headers=auth)
        assert bad.status_code == 422
        counts = (await client.get("/dead-letters/counts", headers=auth)).json()
        assert counts[dlq] == {"held": 120, "redriven": 0, "waiting": 120,
                               "approximate": False}

        login = await client.get("/ui/login")
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', login.text)
        assert nonce is not None
        r = await client.post("/ui/login", data={"api_key": read_key,
                                                 "login_nonce": nonce.group(1),
                                                 "next": "/ui/dead-letters"})
        before = _read(dlq)
        page = await client.get(r.headers["location"])
        assert page.status_code == 200
        assert page.text.count(f"<code>{dlq}/0/") == 50
        more = re.search(r'<a rel="next" href="([^"]+)"', page.text)
        assert more is not None and "cursor=0%3A50" in more.group(1)
        assert _read(dlq) - before <= 51
        last = await client.get(more.group(1).replace("&amp;", "&").replace(
            "cursor=0%3A50", "cursor=0%3A100"))
        assert last.text.count(f"<code>{dlq}/0/") == 20 and 'rel="next"' not in last.text
        overview = await client.get("/ui/fragments/kafka")
        assert re.search(r">120</strong> not redriven", overview.text)
