"""What step code sees: ``StepContext`` and the container it resolves services from."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from hub import tracing
from hub.engine.events import DEFAULT_MAX_EVENT_BYTES, check_event
from hub.engine.payload import to_json
from hub.errors import HubError, ServiceConfigError

_OUTBOX_NS = uuid.UUID("6f1c1d0e-52a3-4c2e-9a55-3b0f3a1e7c11")

F = TypeVar("F", bound=Callable[..., Any])


Factory = Callable[[], Any]

PROVIDERS: dict[str, Factory] = {}
"""Factories of named services (connectors), registered by ``@provides`` at import."""


def provides(name: str) -> Callable[[F], F]:
    """Register a factory that builds the service ``name`` (e.g. a connector) from its
    configuration; every hub's container builds it on first use, or all of them at start-up
    with ``Container.build_all()``, and closes what it built when the hub closes."""

    def register(factory: F) -> F:
        existing = PROVIDERS.get(name)
        if existing is not None and existing.__qualname__ != factory.__qualname__:
            raise HubError(f"service {name!r} is provided twice: by "
                           f"{existing.__module__}.{existing.__qualname__} and "
                           f"{factory.__module__}.{factory.__qualname__}")
        PROVIDERS[name] = factory
        return factory

    return register


class Container:
    """A small registry through which steps reach connectors and services by name, as in
    Medusa's container: ``ctx.container.resolve("erp")``.

    Services given or registered explicitly win over ``@provides`` factories, so a test can
    hand in its own; a service built from a factory is owned, and closed by ``aclose``.
    """

    def __init__(self, services: dict[str, Any] | None = None,
                 providers: dict[str, Factory] | None = None) -> None:
        self._services: dict[str, Any] = dict(services or {})
        self._providers = PROVIDERS if providers is None else providers
        self._built: list[Any] = []

    def register(self, name: str, service: Any) -> None:
        self._services[name] = service

    def resolve(self, name: str) -> Any:
        try:
            return self._services[name]
        except KeyError:
            pass
        factory = self._providers.get(name)
        if factory is None:
            known = ", ".join(self.names()) or "none"
            raise HubError(
                f"nothing is registered in the container as {name!r} (registered: {known}); "
                "register it with hub.container.register(name, service) or @provides(name)"
            )
        service = factory()
        self._services[name] = service
        self._built.append(service)
        return service

    def build_all(self) -> list[str]:
        """Build every provided service now, so bad configuration fails at start-up; raise
        ``ServiceConfigError`` naming each service that cannot be built and why (all of
        them, so one restart fixes every setting)."""
        problems: list[str] = []
        for name in sorted(self._providers):
            try:
                self.resolve(name)
            except HubError as exc:
                problems.append(f"{name}: {exc}")
        if problems:
            raise ServiceConfigError(problems)
        return self.names()

    async def aclose(self) -> None:
        """Close the services this container built (those with an ``aclose``)."""
        built, self._built = self._built, []
        for service in reversed(built):
            close = getattr(service, "aclose", None)
            if close is not None:
                await close()
        for name in [n for n, s in self._services.items() if any(s is b for b in built)]:
            del self._services[name]

    def __contains__(self, name: str) -> bool:
        return name in self._services or name in self._providers

    def names(self) -> list[str]:
        return sorted(set(self._services) | set(self._providers))


@dataclass(frozen=True)
class StepContext:
    """The run-time facts a step may use. ``idempotency_key`` is the same for every attempt
    and every worker that runs this step of this execution: send it to outside systems."""

    execution_id: str
    transaction_id: str
    workflow: str
    step: str
    attempt: int
    idempotency_key: str
    container: Container
    log: Any = field(repr=False)
    compensating: bool = False
    trigger: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    """While compensating: the error that made the workflow roll back (``message``, ``step``,
    ``type``), so a compensation can report why, e.g. in an ``order.failed`` event."""
    outbox: list[dict[str, Any]] = field(default_factory=list, repr=False)
    output_recorded: bool = True
    """While compensating: False when the step never recorded an outcome (it was cut by a
    cancel, or still waiting, or its worker died mid-call) though its call may have reached
    the outside system. The compensation then gets the ``compensate_input`` the step
    returned before waiting, or None, and ``step_input``: it should look up what the call
    made (replay it with ``forward()``) and undo that, if anything."""
    step_input: Any = None
    """While compensating a step whose output was not recorded: the input it was called with."""

    def forward(self) -> StepContext:
        """This step's forward context (its idempotency key, not the compensation's): a
        compensation whose step recorded no output replays the forward call with it, so the
        outside system answers with what the lost call made, and undoes that."""
        return dataclasses.replace(self, compensating=False, outbox=[],
                                   idempotency_key=f"{self.execution_id}:{self.step}")
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    """The largest record ``emit`` accepts (``HUB_MAX_EVENT_BYTES``)."""

    @property
    def traceparent(self) -> str | None:
        """The W3C trace context to pass on, so a trace spans the systems a workflow
        touches: this attempt's span when tracing is on, else that of what started the run
        (a Kafka header or an HTTP header)."""
        value = tracing.current_traceparent() or (self.trigger or {}).get("traceparent")
        return value if isinstance(value, str) else None

    def emit(self, topic: str, event: Any, *, key: str | None = None,
             headers: dict[str, str] | None = None) -> str:
        """Publish ``event`` to ``topic`` through the transactional outbox.

        The event is stored with this step's checkpoint (so only if the step succeeds) and
        relayed to Kafka afterwards. Its id is derived from the execution, the step and the
        event's position in the step, so a re-run step emits the same ids: returns the id.

        Raises ``UnpublishableEvent`` (the step fails, without retries) for a topic name
        Kafka refuses or a record over ``max_event_bytes``: nothing is emitted.
        """
        payload = to_json(event, f"event emitted by step {self.step!r}")
        phase = "/compensate" if self.compensating else ""
        event_id = str(uuid.uuid5(_OUTBOX_NS, f"{self.execution_id}/{self.step}{phase}/"
                                               f"{len(self.outbox)}"))
        hdrs = dict(headers or {})
        if self.traceparent and "traceparent" not in hdrs:
            hdrs["traceparent"] = self.traceparent
        check_event(topic, payload, key, hdrs, self.max_event_bytes)
        self.outbox.append({"id": event_id, "step": self.step, "topic": topic, "key": key,
                            "payload": payload, "headers": hdrs})
        return event_id

    @staticmethod
    def make(
        *,
        execution_id: str,
        transaction_id: str,
        workflow: str,
        step: str,
        attempt: int,
        container: Container,
        compensating: bool = False,
        trigger: dict[str, Any] | None = None,
        failure: dict[str, Any] | None = None,
        output_recorded: bool = True,
        step_input: Any = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> StepContext:
        key = f"{execution_id}:{step}" + (":compensate" if compensating else "")
        return StepContext(
            execution_id=execution_id,
            transaction_id=transaction_id,
            workflow=workflow,
            step=step,
            attempt=attempt,
            idempotency_key=key,
            container=container,
            log=structlog.get_logger("hub.step").bind(
                execution_id=execution_id, workflow=workflow, step=step, attempt=attempt,
                compensating=compensating,
            ),
            compensating=compensating,
            trigger=trigger,
            failure=failure,
            output_recorded=output_recorded,
            step_input=step_input,
            max_event_bytes=max_event_bytes,
        )
