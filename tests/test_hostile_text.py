"""Text from outside systems that Postgres cannot store (NUL, lone surrogates) fails nothing:
it is cleaned once on its way to jsonb, and a shared statement that still fails on one row's
data is retried row by row, so only that row fails."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import asyncpg
from pydantic import BaseModel

from hub import Hub, PermanentStepError, WorkflowResponse, create_step, create_workflow
from hub.engine.checkpoint import Batcher
from hub.store.store import is_data_error

GARBAGE = "ERP said: \x00bad\ud800 reply \udfff"


class Order(BaseModel):
    id: str


def _erp_replies_garbage(inp: Order, _ctx: object) -> None:
    raise PermanentStepError(f"{GARBAGE} for {inp.id}")


def _fine(inp: Order, _ctx: object) -> str:
    return f"ok {inp.id}"


@create_workflow("hostile-text-fails")
def hostile_fails(inp: Order) -> WorkflowResponse:
    return WorkflowResponse(create_step("ht-erp", _erp_replies_garbage)(inp))


@create_workflow("hostile-text-fine")
def hostile_fine(inp: Order) -> WorkflowResponse:
    return WorkflowResponse(create_step("ht-fine", _fine)(inp))


async def test_an_error_message_with_nul_and_lone_surrogates_is_stored_cleaned(hub: Hub) -> None:
    runs = await asyncio.gather(
        *[hostile_fails(hub).run(input={"id": f"bad-{i}"}, raise_on_error=False)
          for i in range(5)],
        *[hostile_fine(hub).run(input={"id": f"good-{i}"}) for i in range(20)])
    bad, good = runs[:5], runs[5:]
    assert all(r.status == "succeeded" for r in good), "neighbours of a bad row are untouched"
    for run in bad:
        stored = await hub.get_run(run.id)
        assert not stored.parked and stored.status in ("compensated", "cancelled", "failed")
        message = stored.error["message"] if stored.error else ""
        assert "ERP said: \ufffdbad\ufffd reply \ufffd" in message, message
        assert "\x00" not in json.dumps(stored.error)


async def test_a_shared_statement_failing_on_one_row_fails_only_that_row(
        dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}; "
                           f"CREATE TABLE {schema}.doc (id int PRIMARY KEY, body jsonb)")

        async def flush(rows: Sequence[tuple[int, str]]) -> set[int]:
            await conn.executemany(
                f"INSERT INTO {schema}.doc VALUES ($1, $2::jsonb)", list(rows))
            return {r[0] for r in rows}

        batcher: Batcher[tuple[int, str], int] = Batcher(
            flush, lambda r: r[0], max_inflight=1, isolate=is_data_error)
        rows = [(i, json.dumps({"n": i})) for i in range(10)]
        rows[4] = (4, '{"text": "a NUL \\u0000 from a vendor"}')  # jsonb refuses it
        results = await asyncio.gather(*[batcher.write(r) for r in rows],
                                       return_exceptions=True)
        assert isinstance(results[4], asyncpg.DataError), results[4]
        assert [r for i, r in enumerate(results) if i != 4] == [True] * 9
        stored = await conn.fetch(f"SELECT id FROM {schema}.doc ORDER BY id")
        assert [r["id"] for r in stored] == [i for i in range(10) if i != 4]
    finally:
        await conn.close()


def test_a_hostile_event_id_still_keys_a_start_storably() -> None:
    """The derived transaction id of a start without one comes from the record's event id,
    a header any publisher sets: a huge one, a NUL, a lone surrogate or a line break must
    still give a stable id Postgres can store, never the raw header."""
    from hub.engine.payload import storable_text
    from hub.runtime.subscriber import SubscriberContext

    def key(event_id: str | None, offset: int = 7) -> str:
        return SubscriberContext(hub=None, subscriber="s", topic="t", partition=0,  # type: ignore[arg-type]
                                 offset=offset, key=None, timestamp=0,
                                 event_id=event_id).start_key

    assert key("evt-1") == "s:event:evt-1"
    for hostile in ("x" * 100_000, "a\x00b", "a\ud800b", "line\nbreak"):
        derived = key(hostile)
        assert derived.startswith("s:event-sha256:") and len(derived) < 100
        assert storable_text(derived) and derived == key(hostile, offset=99), "stable"
    assert key(None) == "s:t:0:7", "no event id: the record's position"
