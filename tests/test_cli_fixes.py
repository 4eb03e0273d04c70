"""What a person reads from the CLI and the API: an ended run shows its end state as its
phase, a cut traceback starts at a line, and a progress line always ends."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import traceback
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from hub import Hub, StepContext, WorkflowResponse, create_step, create_workflow
from hub import wire as h
from hub.api.service import HubService
from hub.cli.progress import ProgressLine
from hub.engine.payload import tail_lines
from hub.runtime.consumer import dead_letter_context
from hub.runtime.oversize import CUT_STACK_CHARS, fitted_headers, record_size
from tests.conftest import ROOT, worker_env


def _undo(_: Any, ctx: StepContext) -> None:
    return None


def _fail(_: Any, ctx: StepContext) -> None:
    raise RuntimeError("the carrier refused")


@create_workflow("fix-rolls-back")
def fix_rolls_back(inp: dict[str, Any]) -> WorkflowResponse:
    done = create_step("fix-done", lambda i, c: {"ok": True}, compensate=_undo)(inp)
    return WorkflowResponse(create_step("fix-fails", _fail, max_retries=0)(done))


async def test_an_ended_execution_shows_its_end_state_not_a_running_phase(
        hub: Hub, dsn: str, schema: str) -> None:
    run = await hub.start("fix-rolls-back", {}, raise_on_error=False)
    assert run.status == "compensated" and run.phase == "compensating"  # as stored
    service = HubService(hub)
    assert (await service.execution(run.id)).phase == "compensated"
    (item,) = (await service.executions(workflow="fix-rolls-back")).items
    assert item.phase == "compensated"
    env = worker_env(dsn, schema, "tests.test_cli_fixes")
    shown = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "hub", "executions", "show", run.id], env=env,
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["phase"] == "compensated"


def _long_error() -> BaseException:
    """An error whose traceback (200 chained causes) is far longer than any limit."""
    exc: BaseException | None = None
    for i in range(200):
        try:
            raise RuntimeError(f"layer {i}: " + "the warehouse said no " * 3) from exc
        except RuntimeError as err:
            exc = err
    assert exc is not None
    return exc


def _starts_a_line(whole: str, tail: str) -> bool:
    return whole.endswith(tail) and (tail == whole or whole[-len(tail) - 1] == "\n")


@pytest.mark.parametrize("limit", [1, 37, 500, 4000, 8000])
def test_a_cut_text_starts_at_a_line_boundary(limit: int) -> None:
    whole = "".join(traceback.format_exception(_long_error()))
    tail = tail_lines(whole, limit)
    assert len(tail) <= limit and tail
    # from a line start, or (a last line longer than the limit) a piece of that last line
    assert _starts_a_line(whole, tail) or "\n" not in tail.rstrip("\n"), tail[:80]


def test_a_last_line_longer_than_the_limit_keeps_its_own_tail() -> None:
    assert tail_lines("short\n" + "x" * 50, 10) == "x" * 10
    assert tail_lines("ab\ncd\n", 3) == "cd\n"  # the cut falls just after a newline


def _record() -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic="orders", partition=0, offset=7, timestamp=0,
                          timestamp_type=0, key=b"k", value=b"{}", checksum=None,
                          serialized_key_size=1, serialized_value_size=2, headers=())


def test_a_dead_letter_s_stored_traceback_starts_at_a_line() -> None:
    exc = _long_error()
    whole = "".join(traceback.format_exception(exc))
    ctx = dead_letter_context(_record(), "handler", exc, subscriber="s", attempts=1, group="g")
    stack = ctx[h.DLQ_EXCEPTION_STACKTRACE]
    assert len(stack) <= 8000 and _starts_a_line(whole, stack), stack[:80]

    # a record too large for its full context is sent with the traceback cut, still at a line
    full = [(k, v.encode()) for k, v in ctx.items()]
    limit = record_size(b"k", b"{}", full) - 1000
    fitted = fitted_headers(b"k", b"{}", [], ctx, limit)[0]
    cut = dict(fitted)[h.DLQ_EXCEPTION_STACKTRACE].decode()
    assert len(cut) <= CUT_STACK_CHARS and _starts_a_line(stack, cut), cut[:80]


def test_a_progress_line_ends_with_a_newline_even_when_the_command_fails() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), ProgressLine(out) as line:
        line.draw("redrive    [###...] 1/3")
        raise RuntimeError("a letter failed again")
    assert out.getvalue() == "\rredrive    [###...] 1/3\n"


def test_a_progress_line_of_another_partition_starts_a_line_of_its_own() -> None:
    out = io.StringIO()
    with ProgressLine(out) as line:
        line.draw("orders/0 10/10", key="orders/0")
        line.draw("orders/1 1/9", key="orders/1")
        line.draw("orders/1 9/9", key="orders/1")
    assert out.getvalue().split("\n") == ["\rorders/0 10/10", "\rorders/1 1/9\rorders/1 9/9", ""]


def test_a_shorter_redraw_clears_what_the_longer_one_left() -> None:
    out = io.StringIO()
    with ProgressLine(out) as line:
        line.draw("abcdef")
        line.draw("abc")
    assert out.getvalue() == "\rabcdef\rabc   \n"


def test_a_progress_line_with_nothing_drawn_writes_nothing() -> None:
    out = io.StringIO()
    with ProgressLine(out):
        pass
    assert out.getvalue() == ""


@pytest.mark.slow
async def test_db_purge_ends_its_progress_line(hub: Hub, dsn: str, schema: str) -> None:
    from tests.test_operations import op_retained

    await op_retained(hub).run(input={"sku": "P"})
    env = worker_env(dsn, schema, "tests.test_operations")
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "hub", "db", "purge"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.endswith("purged 1 execution(s)\n"), repr(out.stderr)
    assert out.stdout.startswith("purged 1 finished execution(s)")
