"""The transition core: typed state + one event + the time -> one typed change.

Pure (no I/O, no asyncio, no clock of its own), so every rule of the engine (retries,
timeouts, skips, the compensation order, signals) is tested without Postgres, and the
executor is left with the wiring: it hands each outcome to ``advance``, writes the change
it gets back in one checkpoint, and runs the steps the change launches.

Compensation is exact (ARCHITECTURE invariant 6): a step gets its ``seq`` when its success
is recorded; compensation undoes ``seq`` in descending order, each step once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hub.engine.graph import SLEEP_KIND, Graph, StepNode
from hub.engine.payload import Unserializable, encode, to_json
from hub.engine.run import FINAL_STATUSES, SETTLED_STEP_STATES, RunStatus, StepState
from hub.engine.sleeps import SleepValueError, wake_time
from hub.engine.state import NOT_STARTED, ExecState, Failure, Phase, StepRecord
from hub.engine.values import ResolveError, Values
from hub.errors import PayloadTooLarge
from hub.types import JSON

Outbox = Mapping[str, Any]
"""One outbox row a step emitted (id, step, topic, key, payload, headers)."""


# -- events --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StepSucceeded:
    step: str
    output: JSON = None
    compensate_input: JSON = None
    outbox: tuple[Outbox, ...] = ()


@dataclass(frozen=True, slots=True)
class StepSkipped:
    """The step answered ``StepResponse.skip()``."""

    step: str


@dataclass(frozen=True, slots=True)
class StepFailed:
    step: str
    failure: Failure
    retryable: bool
    retry_after: float | None = None
    """Seconds the step (or the system it called) asked to wait before the next attempt."""
    yielded: bool = False
    """Not a failure: the step lets its lease go until ``retry_after`` (``None``: until a
    manual retry), then runs again; the wait counts against no retry budget of its own (a
    map whose item waits for its retry: the item keeps its own count)."""


@dataclass(frozen=True, slots=True)
class StepTimedOut:
    step: str
    failure: Failure


@dataclass(frozen=True, slots=True)
class StepCut:
    """Its task was cancelled by us (a cancel, an operator's compensation)."""

    step: str


@dataclass(frozen=True, slots=True)
class CompensationSucceeded:
    step: str
    outbox: tuple[Outbox, ...] = ()


@dataclass(frozen=True, slots=True)
class CompensationFailed:
    step: str
    failure: Failure
    retryable: bool
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class SignalReceived:
    """A signal from outside: an async step's outcome, a retry, a resume."""

    kind: str
    step: str | None
    payload: JSON = None


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """Stop going forward: ``compensate`` (an operator's request) or a plain cancel."""

    reason: str
    compensate: bool = False


@dataclass(frozen=True, slots=True)
class Released:
    """Nothing runs until a timer or a signal: the status tells whether the outside must
    act (``waiting``)."""


@dataclass(frozen=True, slots=True)
class TimerDue:
    """Time passed or something landed: plan what may run now. ``running``: the steps
    whose tasks are in flight in this worker."""

    running: frozenset[str] = frozenset()


Event = (StepSucceeded | StepSkipped | StepFailed | StepTimedOut | StepCut
         | CompensationSucceeded | CompensationFailed | SignalReceived | CancelRequested
         | Released | TimerDue)


# -- the change ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Launch:
    """A step to run now (or its compensation), as attempt ``attempt``."""

    step: str
    compensating: bool
    attempt: int


@dataclass(frozen=True, slots=True)
class Note:
    """A log line the transition asks for (the executor logs it, with its context)."""

    level: Literal["debug", "info", "warning", "error"]
    event: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """What one event did: the state after it and what the store must write for it.

    ``steps`` are whole records to write (the store merges them by step id); ``error`` a
    new run error; ``events`` the transitions announced; ``launches`` the steps to run now;
    ``cut`` the steps in flight to cancel. ``status_changed``: the status or phase moved."""

    state: ExecState
    steps: Mapping[str, StepRecord] = field(default_factory=dict)
    events: tuple[tuple[str, str], ...] = ()
    status_changed: bool = False
    error: Failure | None = None
    launches: tuple[Launch, ...] = ()
    cut: tuple[str, ...] = ()
    outbox: tuple[Outbox, ...] = ()
    notes: tuple[Note, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing happened: only the state it carries counts."""
        return not (self.steps or self.events or self.status_changed or self.error is not None
                    or self.launches or self.cut or self.outbox or self.notes)

    @property
    def writes(self) -> bool:
        """Something here must be checkpointed."""
        return bool(self.steps) or self.status_changed or self.error is not None

    def then(self, later: Change) -> Change:
        """This change followed by ``later``: one checkpoint writes both."""
        if self.empty:
            return later
        return Change(
            state=later.state,
            steps={**self.steps, **later.steps},
            events=self.events + later.events,
            status_changed=self.status_changed or later.status_changed,
            error=later.error if later.error is not None else self.error,
            launches=self.launches + later.launches,
            cut=self.cut + later.cut,
            outbox=self.outbox + later.outbox,
            notes=self.notes + later.notes,
        )


@dataclass(frozen=True, slots=True)
class Context:
    """What transitions read besides the state: the graph and the bounds."""

    graph: Graph
    input: JSON
    workflow: str
    max_payload_bytes: int


def unchanged(state: ExecState) -> Change:
    return Change(state=state)


def advance(ctx: Context, state: ExecState, event: Event, now: float) -> Change:
    """The change ``event`` makes to ``state`` at wall time ``now``."""
    d = _Draft(ctx, state, now)
    if isinstance(event, TimerDue):
        _plan(d, set(event.running))
    elif isinstance(event, StepSucceeded | StepSkipped | StepFailed | StepTimedOut | StepCut):
        _on_invoked(d, event)
    elif isinstance(event, CompensationSucceeded | CompensationFailed):
        _on_compensated(d, event)
    elif isinstance(event, Released):
        if d.status != RunStatus.WAITING and d.awaiting_outside():
            d.set_status(RunStatus.WAITING)
    elif isinstance(event, CancelRequested):
        if d.phase == Phase.FORWARD and not d.finished:
            d.note("info", "execution_stop_requested",
                   kind="compensate" if event.compensate else "cancel")
            d.fail(Failure(message=event.reason,
                           type="CompensationRequested" if event.compensate else "Cancelled"),
                   cancel=not event.compensate)
    else:
        _on_signal(d, event)
    return d.change()


# -- the draft: one transition's working copy ----------------------------------------------
class _Draft:
    """The state being changed by one event; ``change()`` freezes it."""

    def __init__(self, ctx: Context, state: ExecState, now: float) -> None:
        self.ctx = ctx
        self.graph = ctx.graph
        self.now = now
        self.base = state
        self.steps: dict[str, StepRecord] = dict(state.steps)
        self.status = state.status
        self.phase = state.phase
        self.error = state.error
        self.result = state.result
        self.seq = state.seq
        self.written: dict[str, StepRecord] = {}
        self.events: list[tuple[str, str]] = []
        self.status_changed = False
        self.new_error: Failure | None = None
        self.launches: list[Launch] = []
        self.cut: list[str] = []
        self.outbox: list[Outbox] = []
        self.notes: list[Note] = []

    def rec(self, step_id: str) -> StepRecord:
        return self.steps.get(step_id, NOT_STARTED)

    def set(self, step_id: str, event: str | None = None, **fields: Any) -> StepRecord:
        st = self.rec(step_id).but(**fields)
        self.steps[step_id] = self.written[step_id] = st
        if event:
            self.events.append((event, step_id))
        return st

    def settled(self, step_id: str) -> bool:
        return self.steps.get(step_id, NOT_STARTED).state in SETTLED_STEP_STATES

    def complete(self, step_id: str, output: JSON, compensate_input: JSON) -> None:
        self.set(step_id, "step_success", state=StepState.DONE, output=output,
                 compensate_input=compensate_input, finished_at=self.now, seq=self.seq,
                 due=None, unrecorded=False)
        self.seq += 1

    def interrupt(self, step_id: str, compensate_input: JSON = None) -> None:
        """A step whose call may have reached the outside, with no output recorded (cut by
        a cancel, waiting when the run rolled back, or left mid-call by a dead worker): it
        joins the compensation order as the latest step, its compensation told so."""
        self.set(step_id, "step_interrupted", output=None, unrecorded=True,
                 compensate_input=compensate_input, seq=self.seq, due=None)
        self.seq += 1

    def fail(self, error: Failure, *, cancel: bool = False) -> None:
        """Switch to compensation; the first error is the one the run reports."""
        if self.phase != Phase.FORWARD:
            return
        self.phase = Phase.CANCELLING if cancel else Phase.COMPENSATING
        self.error = self.new_error = error
        self.status_changed = True
        self.events.append(("compensate_begin", ""))

    def fail_compensation(self, error: Failure) -> None:
        base = self.error or Failure(message=error.message, type="CompensationFailed",
                                     step=error.step)
        self.error = self.new_error = base.but(compensation_error=error)

    def set_status(self, status: RunStatus) -> None:
        if self.status != status:
            self.status = status
            self.status_changed = True

    def finish(self, status: RunStatus) -> None:
        self.status = status
        self.status_changed = True
        self.events.append(("finish", ""))

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def note(self, level: Literal["debug", "info", "warning", "error"], event: str,
             **fields: Any) -> None:
        self.notes.append(Note(level, event, fields))

    def values(self) -> Values:
        return Values(self.graph, self.ctx.input, self.steps)

    def awaiting_outside(self) -> bool:
        return self._state().awaiting_outside()

    def _state(self) -> ExecState:
        return ExecState(self.status, self.phase, self.steps, self.error, self.result,
                         self.seq)

    def change(self) -> Change:
        state = self._state() if (self.written or self.status_changed or self.new_error
                                  or self.result is not self.base.result) else self.base
        return Change(
            state=state, steps=self.written, events=tuple(self.events),
            status_changed=self.status_changed, error=self.new_error,
            launches=tuple(self.launches), cut=tuple(self.cut), outbox=tuple(self.outbox),
            notes=tuple(self.notes),
        )


def compensable(node: StepNode) -> bool:
    return node.compensate is not None and not node.options.no_compensation


# -- planning ------------------------------------------------------------------------------
def _plan(d: _Draft, running: set[str]) -> None:
    if d.finished:
        return
    if d.phase == Phase.FORWARD:
        _plan_forward(d, running)
    else:
        _plan_compensation(d, running)
    if d.status == RunStatus.PENDING and not d.finished:
        d.events.insert(0, ("begin", ""))
        d.set_status(RunStatus.RUNNING)


def _launch(d: _Draft, node: StepNode, running: set[str], **fields: Any) -> None:
    st = d.set(node.id, "step_begin", attempts=d.rec(node.id).attempts + 1,
               started_at=d.now, **fields)
    d.launches.append(Launch(node.id, False, st.attempts))
    running.add(node.id)  # planned: never launched twice by the passes that follow


def _plan_forward(d: _Draft, running: set[str]) -> None:
    now = d.now
    values = d.values()
    active = bool(running)
    changed = True
    while changed:
        changed = False
        for node in d.graph.steps.values():
            if node.id in running:
                continue
            st = d.rec(node.id)
            state = st.state
            if state in SETTLED_STEP_STATES:
                continue  # most nodes of a running workflow: nothing to plan
            if state == StepState.NOT_STARTED:
                if not all(d.settled(a) for a in node.after):
                    continue
                try:
                    holds = values.condition_holds(node)
                except ResolveError as exc:
                    d.fail(Failure.of(node.id, str(exc), 0))
                    _plan_compensation(d, running)
                    return
                if not holds:
                    d.set(node.id, "step_skipped", state=StepState.SKIPPED, finished_at=now)
                    changed = True
                    continue
                if node.kind == SLEEP_KIND:
                    try:
                        due = wake_time(values.resolve(node.input), now)
                    except (ResolveError, SleepValueError) as exc:
                        d.fail(Failure.of(node.id, f"sleep {node.id!r}: {exc}", 1))
                        _plan_compensation(d, running)
                        return
                    # no code runs: the record's due time is the sleep (a row with a due
                    # time like every timer, so a restart loses none)
                    d.set(node.id, "step_sleeping", state=StepState.WAITING, attempts=1,
                          started_at=now, due=due)
                    changed = changed or due <= now
                    continue
                _launch(d, node, running, state=StepState.INVOKING, due=None)
            elif state == StepState.INVOKING:
                # held by us but not running: the previous owner died mid-step
                _launch(d, node, running)
            elif state == StepState.TEMP_FAILURE:
                if st.due is not None and st.due <= now:
                    _launch(d, node, running, state=StepState.INVOKING, due=None)
            elif (state == StepState.WAITING and node.kind == SLEEP_KIND
                  and st.due is not None and st.due <= now):
                d.complete(node.id, None, None)  # its time has come
                changed = True
            elif state == StepState.WAITING and st.due is not None and st.due <= now:
                error = Failure.of(node.id, "async step timed out after "
                                   f"{node.options.timeout}s", st.attempts or 1)
                d.set(node.id, "step_failure", state=StepState.TIMEOUT, due=None,
                      error=error, finished_at=now)
                _on_permanent(d, node, error)
                if d.phase != Phase.FORWARD:
                    _plan_compensation(d, running)
                    return
                changed = True
    if d.phase != Phase.FORWARD:
        _plan_compensation(d, running)
        return
    if not running and all(d.settled(s) for s in d.graph.steps):
        try:
            result = to_json(values.resolve(d.graph.result), "the workflow's result")
            encode(result, f"result of workflow {d.ctx.workflow!r}", d.ctx.max_payload_bytes)
        except (ResolveError, Unserializable, PayloadTooLarge) as exc:
            d.fail(Failure.of("", str(exc), 0))
            _plan_compensation(d, running)
            return
        d.result = result
        d.finish(RunStatus.SUCCEEDED)
        return
    live = RunStatus.RUNNING
    if not (active or d.launches) and d.awaiting_outside():
        live = RunStatus.WAITING
    if live != d.status:
        if d.status == RunStatus.PENDING:
            d.events.insert(0, ("begin", ""))
        d.set_status(live)


def _plan_compensation(d: _Draft, running: set[str]) -> None:
    if d.phase == Phase.CANCELLING or (d.error is not None
                                       and d.error.type == "CompensationRequested"):
        # an operator stopped it: steps in flight are cut, not awaited
        d.cut.extend(s for s in running if d.rec(s).state == StepState.INVOKING
                     and s not in d.cut)
    if any(d.rec(s).state == StepState.INVOKING for s in running):
        d.set_status(RunStatus.RUNNING)
        return  # let in-flight steps land first: a success must be compensated too
    for step_id, st in list(d.steps.items()):
        if st.state == StepState.WAITING and d.graph.steps[step_id].kind == SLEEP_KIND:
            # a cancel (or a failure elsewhere) wakes a sleep: it never ran, so it is skipped
            d.set(step_id, "step_skipped", state=StepState.SKIPPED, finished_at=d.now, due=None)
    for step_id, st in list(d.steps.items()):
        # waiting for the outside (a payment authorised, awaiting its confirmation), or
        # left mid-call by a worker that died: undone too, latest first; and a map step
        # that failed or waits for an item's retry: the items it completed are undone
        node = d.graph.steps[step_id]
        if (st.seq is None and compensable(node)
                and (st.state in (StepState.WAITING, StepState.INVOKING)
                     or (node.fanout is not None
                         and st.state in (StepState.PERMANENT_FAILURE, StepState.TIMEOUT,
                                          StepState.TEMP_FAILURE)))):
            d.interrupt(step_id, st.compensate_input)
    order = sorted(
        (s for s, st in d.steps.items()
         if st.seq is not None and compensable(d.graph.steps[s])),
        key=lambda s: d.steps[s].seq or 0, reverse=True,
    )
    for step_id in order:
        st = d.rec(step_id)
        if st.state == StepState.REVERTED:
            continue
        if st.state == StepState.FAILED:
            if d.status != RunStatus.COMPENSATION_FAILED:
                d.finish(RunStatus.COMPENSATION_FAILED)
            return
        if step_id in running or st.state == StepState.WAITING_TO_COMPENSATE:
            d.set_status(RunStatus.RUNNING if step_id in running else RunStatus.WAITING)
            return
        if st.state == StepState.COMPENSATING and st.due is not None and st.due > d.now:
            return  # a compensation retry is scheduled
        st = d.set(step_id, "compensate_step_begin", state=StepState.COMPENSATING,
                   comp_attempts=st.comp_attempts + 1, due=None)
        d.set_status(RunStatus.RUNNING)
        d.launches.append(Launch(step_id, True, st.comp_attempts))
        return
    d.finish(RunStatus.CANCELLED if d.phase == Phase.CANCELLING else RunStatus.COMPENSATED)


# -- outcomes ------------------------------------------------------------------------------
def _on_invoked(d: _Draft, event: StepSucceeded | StepSkipped | StepFailed | StepTimedOut
                | StepCut) -> None:
    node = d.graph.steps[event.step]
    st = d.rec(node.id)
    attempts = st.attempts or 1
    opts = node.options
    now = d.now
    if isinstance(event, StepCut):
        # cut by a cancel or an operator's compensation: it never completed, but its call
        # may have reached the outside system, so its compensation runs (told so)
        if compensable(node):
            d.interrupt(node.id)
        else:
            d.set(node.id, None, state=StepState.NOT_STARTED, due=None)
        return
    if isinstance(event, StepSucceeded):
        if opts.is_async:
            due = (st.started_at or now) + opts.timeout if opts.timeout else None
            # what the call returned to undo it (a payment intent's id) is kept: if the
            # run rolls back while this step waits, its compensation needs it
            d.set(node.id, "step_awaiting", state=StepState.WAITING, due=due,
                  compensate_input=event.compensate_input)
            d.note("info", "step_awaiting", step=node.id)
        else:
            d.complete(node.id, event.output, event.compensate_input)
            d.note("debug", "step_succeeded", step=node.id, attempt=attempts)
        d.outbox.extend(event.outbox)
        return
    if isinstance(event, StepSkipped):
        d.set(node.id, "step_skipped", state=StepState.SKIPPED, finished_at=now)
        return
    error = event.failure
    if isinstance(event, StepFailed) and event.yielded:
        due = None if event.retry_after is None else now + event.retry_after
        d.set(node.id, "step_failure", state=StepState.TEMP_FAILURE, error=error, due=due)
        d.note("info", "step_yielded", step=node.id, attempt=attempts,
               delay_s=None if due is None else round(event.retry_after or 0.0, 3),
               error=error.message[:200])
        return
    if isinstance(event, StepFailed) and event.retryable and attempts <= opts.max_retries:
        delay = event.retry_after if event.retry_after is not None else opts.retry_delay(
            attempts)
        due = now + delay if opts.auto_retry else None
        d.set(node.id, "step_failure", state=StepState.TEMP_FAILURE, error=error, due=due)
        d.note("warning", "step_retry_scheduled", step=node.id, attempt=attempts,
               delay_s=None if due is None else round(delay, 3),
               retry_after=event.retry_after is not None, error=error.message[:200])
        return
    state = StepState.TIMEOUT if isinstance(event, StepTimedOut) else StepState.PERMANENT_FAILURE
    d.set(node.id, "step_failure", state=state, error=error, finished_at=now, due=None)
    d.note("warning", "step_failed", step=node.id, attempt=attempts,
           error=error.message[:200], state=str(state))
    _on_permanent(d, node, error)


def _on_permanent(d: _Draft, node: StepNode, error: Failure) -> None:
    opts = node.options
    if opts.continue_on_permanent_failure:
        return
    skip = opts.skip_on_permanent_failure
    if skip:
        target = skip if isinstance(skip, str) else None
        keep: set[str] = set()
        if target is not None:
            if target not in d.graph.steps:
                d.fail(error.but(message=f"{error.message} (and skip_on_permanent_failure "
                                 f"names unknown step {target!r})"))
                return
            keep = descendants(d.graph, target)
        for other in d.graph.steps:
            if other not in keep and d.rec(other).state == StepState.NOT_STARTED:
                d.set(other, "step_skipped", state=StepState.SKIPPED, finished_at=d.now)
        return
    d.fail(error)


def descendants(graph: Graph, root: str) -> set[str]:
    """``root`` and every step that (transitively) runs after it."""
    out = {root}
    changed = True
    while changed:
        changed = False
        for node in graph.steps.values():
            if node.id not in out and any(a in out for a in node.after):
                out.add(node.id)
                changed = True
    return out


def _on_compensated(d: _Draft, event: CompensationSucceeded | CompensationFailed) -> None:
    node = d.graph.steps[event.step]
    attempts = d.rec(node.id).comp_attempts or 1
    if isinstance(event, CompensationSucceeded):
        d.outbox.extend(event.outbox)
        if node.options.compensate_async:
            d.set(node.id, "compensate_step_awaiting", state=StepState.WAITING_TO_COMPENSATE)
            return
        d.set(node.id, "compensate_step_success", state=StepState.REVERTED,
              compensated_at=d.now, due=None)
        d.note("info", "step_compensated", step=node.id, attempt=attempts)
        return
    error = event.failure.but(compensation=True)
    if event.retryable and attempts <= node.options.max_retries:
        delay = event.retry_after if event.retry_after is not None else (
            node.options.retry_delay(attempts))
        d.set(node.id, "compensate_step_failure", comp_error=error, due=d.now + delay)
        d.note("warning", "compensation_retry_scheduled", step=node.id, attempt=attempts,
               error=error.message[:200])
        return
    d.set(node.id, "compensate_step_failure", state=StepState.FAILED, comp_error=error,
          due=None)
    d.fail_compensation(error)
    d.note("error", "compensation_failed", step=node.id, attempt=attempts,
           error=error.message[:200])


# -- signals -------------------------------------------------------------------------------
_EXPECTED = {"success": StepState.WAITING, "failure": StepState.WAITING,
             "wake": StepState.WAITING,
             "compensation_success": StepState.WAITING_TO_COMPENSATE,
             "compensation_failure": StepState.WAITING_TO_COMPENSATE}


def _on_signal(d: _Draft, event: SignalReceived) -> None:
    kind, step_id = event.kind, event.step
    payload = event.payload if isinstance(event.payload, dict) else {}
    if kind in ("cancel", "compensate"):
        if d.phase == Phase.FORWARD and not d.finished:
            d.note("info", "execution_stop_requested", kind=kind)
            d.fail(Failure(message=str(payload.get("reason") or kind),
                           type="Cancelled" if kind == "cancel" else "CompensationRequested"),
                   cancel=kind == "cancel")
        return
    if kind == "resume" or step_id is None or step_id not in d.graph.steps:
        return
    node = d.graph.steps[step_id]
    st = d.rec(step_id)
    expected = _EXPECTED.get(kind)
    if expected is not None and st.state != expected:
        # accepted while the step waited, applied after it moved on (a cancel landed
        # first): it changes nothing, and says so
        d.note("warning", "signal_ignored", step=step_id, kind=kind, state=str(st.state))
        return
    if kind == "wake":
        if node.kind == SLEEP_KIND:  # an operator ends a sleep early
            d.note("info", "sleep_woken", step=step_id)
            d.complete(step_id, None, None)
    elif kind == "success":
        d.complete(step_id, event.payload, event.payload)
    elif kind == "compensation_success":
        d.set(step_id, "compensate_step_success", state=StepState.REVERTED,
              compensated_at=d.now)
    elif kind in ("failure", "compensation_failure"):
        error = Failure(message=str(payload.get("message", "failed")), type="AsyncStepFailure",
                        step=step_id, attempt=st.attempts)
        if kind == "failure":
            d.set(step_id, "step_failure", state=StepState.PERMANENT_FAILURE, error=error,
                  finished_at=d.now, due=None)
            _on_permanent(d, node, error)
        else:
            error = error.but(compensation=True)
            d.set(step_id, "compensate_step_failure", state=StepState.FAILED, comp_error=error)
            d.fail_compensation(error)
    elif kind == "retry":
        if st.state == StepState.TEMP_FAILURE:
            d.set(step_id, None, due=d.now)
        elif st.state == StepState.FAILED:
            d.set(step_id, None, state=StepState.COMPENSATING, due=None)
            d.status = RunStatus.RUNNING
            d.status_changed = True
