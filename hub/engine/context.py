"""What step code sees: ``StepContext`` and the container it resolves services from."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from hub.errors import HubError

_OUTBOX_NS = uuid.UUID("6f1c1d0e-52a3-4c2e-9a55-3b0f3a1e7c11")


class Container:
    """A small registry through which steps reach connectors and services by name, as in
    Medusa's container: ``ctx.container.resolve("erp")``."""

    def __init__(self, services: dict[str, Any] | None = None) -> None:
        self._services: dict[str, Any] = dict(services or {})

    def register(self, name: str, service: Any) -> None:
        self._services[name] = service

    def resolve(self, name: str) -> Any:
        try:
            return self._services[name]
        except KeyError:
            known = ", ".join(sorted(self._services)) or "none"
            raise HubError(
                f"nothing is registered in the container as {name!r} (registered: {known}); "
                "register it with hub.container.register(name, service)"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._services

    def names(self) -> list[str]:
        return sorted(self._services)


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
    outbox: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def traceparent(self) -> str | None:
        """The W3C trace context of what started the run (a Kafka header or an HTTP header):
        connectors pass it on so a trace spans the systems a workflow touches."""
        value = (self.trigger or {}).get("traceparent")
        return value if isinstance(value, str) else None

    def emit(self, topic: str, event: Any, *, key: str | None = None,
             headers: dict[str, str] | None = None) -> str:
        """Publish ``event`` to ``topic`` through the transactional outbox.

        The event is stored with this step's checkpoint (so only if the step succeeds) and
        relayed to Kafka afterwards. Its id is derived from the execution, the step and the
        event's position in the step, so a re-run step emits the same ids: returns the id.
        """
        event_id = str(uuid.uuid5(_OUTBOX_NS, f"{self.execution_id}/{self.step}/"
                                               f"{len(self.outbox)}"))
        hdrs = dict(headers or {})
        if self.traceparent and "traceparent" not in hdrs:
            hdrs["traceparent"] = self.traceparent
        self.outbox.append({"id": event_id, "step": self.step, "topic": topic, "key": key,
                            "payload": event, "headers": hdrs})
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
        )
