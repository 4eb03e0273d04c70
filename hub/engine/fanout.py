"""The fan-out runner: a map step's items, each run like a step, each state in its own row.

Cost stays flat per item: an item's transition rewrites one small ``fanout_item`` row
(batched with its neighbours' into one statement), never the execution's steps document,
which learns the map's outcome once, at its end. Each item calls with its own idempotency
key (``<execution>:<map>[<item key>]``), so a re-run or recovered map makes each item's
effect once; the items that completed are found done and are not run again.
Compensation undoes the ones left mid-call first (told their output was not recorded), then
the items that completed, latest first (``seq`` numbers the map's completions); the map
itself takes its place among the workflow's steps by its own completion (or failure).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Protocol

from hub.engine.checkpoint import Batcher
from hub.engine.clock import SYSTEM_CLOCK, Clock
from hub.engine.context import StepContext
from hub.engine.execution import Execution
from hub.engine.graph import FanoutSpec, StepNode
from hub.engine.outcome import Outcome, error_record
from hub.engine.payload import Unserializable, clean_text, encode
from hub.engine.run import StepState
from hub.errors import LeaseLost, PayloadTooLarge
from hub.settings import HubSettings
from hub.store.store import ItemRow, Store, is_data_error
from hub.types import JSON

_RUN_AGAIN = frozenset({StepState.NOT_STARTED, StepState.INVOKING, StepState.TEMP_FAILURE})
"""Item states a (re-)run of the map invokes; done, skipped and failed items stay."""

_UNDO = frozenset({StepState.DONE, StepState.INVOKING, StepState.COMPENSATING,
                   StepState.FAILED})
"""Item states compensation undoes (failed: a compensation that failed, retried)."""


class ItemSteps(Protocol):
    """What the runner needs of the executor: the map's list, a step's invocation and
    compensation with a given value, and an item's context."""

    def map_input(self, ex: Execution, node: StepNode) -> tuple[JSON, str | None]:
        """The map step's list, or the error that stops resolving it."""
        ...

    def item_ctx(self, ex: Execution, node: StepNode, attempt: int, *, compensating: bool,
                 output_recorded: bool = True, step_input: Any = None) -> StepContext: ...

    async def invoke_value(self, node: StepNode, value: Any, ctx: StepContext,
                           attempt: int) -> Outcome: ...

    async def compensate_value(self, node: StepNode, compensate_input: Any,
                               ctx: StepContext) -> Outcome: ...


@dataclass(slots=True)
class Item:
    """One item's state, as its row holds it."""

    idx: int
    key: str
    state: str = StepState.NOT_STARTED
    attempts: int = 0
    comp_attempts: int = 0
    seq: int | None = None
    output: JSON = None
    compensate_input: JSON = None
    error: dict[str, Any] | None = None

    @staticmethod
    def from_row(row: dict[str, Any]) -> Item:
        return Item(row["idx"], row["key"], row["state"], row["attempts"],
                    row["comp_attempts"], row["seq"], row["output"], row["compensate_input"],
                    row["error"])


@dataclass(slots=True)
class _Counter:
    """The map's completion order (resumed after the highest stored ``seq``)."""

    next: int

    def take(self) -> int:
        self.next += 1
        return self.next - 1


@dataclass(frozen=True, slots=True)
class _Wait:
    """An item waits for its retry longer than a lease is held (or for an operator's)."""

    error: dict[str, Any]
    delay: float | None  # None: until a manual retry


def _yield(node: StepNode, waits: list[_Wait]) -> Outcome:
    """The map lets its lease go until its waiting items are due: the longest wait (so no
    item runs before the time it asked for), or a manual retry if one waits for that."""
    manual = any(w.delay is None for w in waits)
    delay = None if manual else max(w.delay or 0.0 for w in waits)
    first = waits[0].error
    until = "a manual retry" if delay is None else f"its retry in {delay:g} s"
    return Outcome("retryable", error=first | {
        "step": node.id, "item": first["step"],
        "message": f"item {first['step']!r} waits for {until}: {first['message']}"},
        retry_after=delay, yielded=True)


class FanoutError(Exception):
    """The list cannot be fanned out (not a list, over the bound, keys clash): the map step
    fails before any item starts."""


def _text(value: JSON) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


class FanoutRunner:
    """Runs and compensates the map steps of the executions one executor drives."""

    def __init__(self, store: Store, settings: HubSettings, steps: ItemSteps,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self._store = store
        self._settings = settings
        self._steps = steps
        self._clock = clock
        """An item's retry waits on the executor's clock (a test's ManualClock drives it)."""
        self.writes: Batcher[ItemRow, tuple[Any, str, int]] = Batcher(
            store.fanout_write, lambda r: r.key, isolate=is_data_error)

    # -- forward ---------------------------------------------------------------------------
    def keys(self, node: StepNode, items: JSON) -> list[str]:
        """Each item's key, checked: the list, its bound and the keys' uniqueness."""
        spec = node.fanout
        assert spec is not None
        if not isinstance(items, list):
            raise FanoutError(f"map step {node.id!r} fans out over a list, got "
                              f"{type(items).__name__}")
        bound = spec.max_items or self._settings.max_fanout_items
        if len(items) > bound:
            raise FanoutError(
                f"map step {node.id!r}: {len(items)} items, over the bound of {bound} per "
                "fan-out (raise it with map_each(..., max_items=N) or HUB_MAX_FANOUT_ITEMS); "
                "no item was started")
        keys = [_key(spec, node, i, item) for i, item in enumerate(items)]
        seen: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k in seen:
                raise FanoutError(f"map step {node.id!r}: items {seen[k]} and {i} share the "
                                  f"key {k!r}; each item needs its own key")
            seen[k] = i
        return keys

    async def run(self, ex: Execution, node: StepNode) -> Outcome:
        spec = node.fanout
        assert spec is not None
        items, problem = self._steps.map_input(ex, node)
        try:
            if problem is not None:
                raise FanoutError(problem)
            keys = self.keys(node, items)
        except FanoutError as exc:
            return Outcome("permanent", error=error_record(node.id, str(exc), 1))
        assert isinstance(items, list)
        state = await self._load(ex, node, keys)
        if isinstance(state, Outcome):
            return state
        order = _Counter(1 + max((it.seq or 0 for it in state), default=0))
        queue = collections.deque(it for it in state if it.state in _RUN_AGAIN)
        failures: list[dict[str, Any]] = []
        waits: list[_Wait] = []
        outbox: list[dict[str, Any]] = []

        async def work() -> None:
            # an item that waits for its retry does not hold the others up: the map yields
            # once the rest have run
            while queue and not failures:
                it = queue.popleft()
                end = await self._run_item(ex, node, it, items[it.idx], outbox, order)
                if isinstance(end, _Wait):
                    waits.append(end)
                elif end is not None:
                    failures.append(end)

        workers = [asyncio.create_task(work())
                   for _ in range(min(spec.max_concurrency, len(queue)))]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            if workers:
                await asyncio.wait(workers)
        if failures:
            first = failures[0]
            return Outcome("permanent", error=first | {
                "step": node.id, "item": first["step"],
                "message": f"item {first['step']!r}: {first['message']}"})
        if waits:
            return _yield(node, waits)
        results = [it.output if it.state == StepState.DONE else None for it in state]
        try:
            encode(results, f"output of map step {node.id!r}", self._settings.max_payload_bytes)
        except (Unserializable, PayloadTooLarge) as exc:
            return Outcome("permanent", error=error_record(node.id, exc, 1))
        return Outcome("ok", results, None, outbox=tuple(outbox))

    async def _load(self, ex: Execution, node: StepNode, keys: list[str]) -> list[Item] | Outcome:
        rows = await self._store.fanout_items(ex.id, node.id)
        if not rows:
            if not await self._store.fanout_insert(ex.id, ex.epoch, node.id, keys):
                raise LeaseLost(f"execution {ex.sid}: epoch {ex.epoch} is no longer current")
            return [Item(i, k) for i, k in enumerate(keys)]
        state = [Item.from_row(r) for r in rows]
        if [it.key for it in state] != keys:
            return Outcome("permanent", error=error_record(
                node.id, f"map step {node.id!r}: its list changed since the fan-out began "
                f"({len(state)} items then, {len(keys)} now); it must be a step's output or "
                "the input, which do not change", 1))
        return state

    async def _run_item(self, ex: Execution, node: StepNode, it: Item, value: Any,
                        outbox: list[dict[str, Any]], order: _Counter,
                        ) -> dict[str, Any] | _Wait | None:
        """Run one item to an end: the error that fails the map, if it does, or the wait
        for its retry that the map yields to."""
        item_node = _item_node(node, it)
        opts = item_node.options
        while True:
            it.state, it.attempts = StepState.INVOKING, it.attempts + 1
            await self._save(ex, node, it)
            ctx = self._steps.item_ctx(ex, item_node, it.attempts, compensating=False)
            outcome = await self._steps.invoke_value(item_node, value, ctx, it.attempts)
            ex.calls.extend(ctx.calls.rows(ctx.step, ctx.attempt, ctx.compensating))
            if outcome.kind == "ok":
                it.state, it.output, it.compensate_input = (
                    StepState.DONE, outcome.output, outcome.compensate_input)
                it.seq = order.take()
                it.error = None
                outbox.extend(outcome.outbox)
                await self._save(ex, node, it)
                return None
            if outcome.kind == "skip":
                it.state = StepState.SKIPPED
                await self._save(ex, node, it)
                return None
            error = outcome.error or error_record(item_node.id, "unknown failure", it.attempts)
            it.error = error
            if outcome.kind == "retryable" and it.attempts <= opts.max_retries:
                it.state = StepState.TEMP_FAILURE
                await self._save(ex, node, it)
                delay = (outcome.retry_after if outcome.retry_after is not None
                         else opts.retry_delay(it.attempts))
                if not opts.auto_retry:
                    return _Wait(error, None)  # until an operator retries it
                if delay > self._settings.hold_timer_seconds:
                    return _Wait(error, delay)  # a timer, not a task holding the lease
                await self._clock.sleep(delay)
                continue
            if opts.skip_on_permanent_failure and not opts.continue_on_permanent_failure:
                it.state = StepState.SKIPPED
            else:
                it.state = StepState.PERMANENT_FAILURE
            await self._save(ex, node, it)
            if opts.continue_on_permanent_failure or opts.skip_on_permanent_failure:
                return None
            return error

    # -- compensation ----------------------------------------------------------------------
    async def compensate(self, ex: Execution, node: StepNode) -> Outcome:
        """Undo the items: those left mid-call first (the latest), then the completed ones
        in reverse order of completion, one at a time."""
        items, _ = self._steps.map_input(ex, node)
        state = [Item.from_row(r) for r in await self._store.fanout_items(ex.id, node.id)]
        todo = [it for it in state if it.state in _UNDO]
        order = [it for it in todo if it.seq is None] + sorted(
            (it for it in todo if it.seq is not None), key=lambda it: it.seq or 0,
            reverse=True)
        outbox: list[dict[str, Any]] = []
        for it in order:
            value = items[it.idx] if isinstance(items, list) and it.idx < len(items) else None
            error = await self._undo_item(ex, node, it, value, outbox)
            if error is not None:
                return Outcome("permanent", error=error | {
                    "step": node.id, "item": error["step"],
                    "message": f"item {error['step']!r}: {error['message']}"})
        return Outcome("ok", outbox=tuple(outbox))

    async def _undo_item(self, ex: Execution, node: StepNode, it: Item, value: Any,
                         outbox: list[dict[str, Any]]) -> dict[str, Any] | None:
        item_node = _item_node(node, it)
        recorded = it.seq is not None
        while True:
            it.state, it.comp_attempts = StepState.COMPENSATING, it.comp_attempts + 1
            await self._save(ex, node, it)
            ctx = self._steps.item_ctx(ex, item_node, it.comp_attempts, compensating=True,
                                       output_recorded=recorded,
                                       step_input=None if recorded else value)
            outcome = await self._steps.compensate_value(
                item_node, it.compensate_input if recorded else None, ctx)
            ex.calls.extend(ctx.calls.rows(ctx.step, ctx.attempt, ctx.compensating))
            if outcome.kind == "ok":
                it.state = StepState.REVERTED
                outbox.extend(outcome.outbox)
                await self._save(ex, node, it)
                return None
            error = (outcome.error or error_record(item_node.id, "unknown failure",
                                                   it.comp_attempts)) | {"compensation": True}
            it.error = error
            if outcome.kind == "retryable" and it.comp_attempts <= item_node.options.max_retries:
                await self._save(ex, node, it)
                await self._clock.sleep(item_node.options.retry_delay(it.comp_attempts))
                continue
            it.state = StepState.FAILED
            await self._save(ex, node, it)
            return error

    # -- rows ------------------------------------------------------------------------------
    async def _save(self, ex: Execution, node: StepNode, it: Item) -> None:
        row = ItemRow(ex.id, node.id, it.idx, ex.epoch, it.state, it.attempts,
                      it.comp_attempts, it.seq, _text(it.output), _text(it.compensate_input),
                      _text(it.error))
        if not await self.writes.write(row):
            raise LeaseLost(f"execution {ex.sid}: epoch {ex.epoch} is no longer current")


def _key(spec: FanoutSpec, node: StepNode, idx: int, item: JSON) -> str:
    if spec.key is None:
        return str(idx)
    try:
        key = spec.key(item)
    except Exception as exc:
        raise FanoutError(f"map step {node.id!r}: key(...) raised {exc!r} for item {idx}") \
            from exc
    if isinstance(key, bool) or not isinstance(key, str | int) or key == "":
        raise FanoutError(f"map step {node.id!r}: key(...) gave {key!r} for item {idx}; a "
                          "key is a non-empty str or an int")
    return clean_text(str(key)[:200])  # a key from outside data: bounded, storable


def _item_node(node: StepNode, it: Item) -> StepNode:
    """The item step under the item's own id, which its idempotency key derives from."""
    spec = node.fanout
    assert spec is not None
    return dataclasses.replace(spec.item, id=f"{node.id}[{it.key}]")


