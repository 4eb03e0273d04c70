"""``@subscriber(topic)``: the function that turns one event into workflow starts.

Subscribers register when their module is imported; workers import exactly the modules named
in ``HUB_SUBSCRIBERS`` (default: the project's ``subscribers`` package), so which code runs
is never a guess.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from hub import tracing
from hub.errors import DefinitionError

if TYPE_CHECKING:
    from hub.engine.hub import Hub

Handler = Callable[[Any, "SubscriberContext"], Awaitable[None]]


@dataclass(frozen=True)
class SubscriberContext:
    """Where the event came from, and the hub to start workflows with."""

    hub: Hub
    subscriber: str
    topic: str
    partition: int
    offset: int
    key: str | None
    timestamp: int
    headers: dict[str, str] = field(default_factory=dict)
    event_id: str | None = None
    attempt: int = 1
    replay: bool = False

    @property
    def start_key(self) -> str:
        """The transaction id of a start that gives none: the same on every delivery of this
        record (its event id, else its position), so a redelivery finds the first start."""
        if self.event_id and len(self.event_id) <= 200 and self.event_id.isprintable():
            return f"{self.subscriber}:event:{self.event_id}"
        if self.event_id:  # long or odd ids: their digest, stable and storable
            digest = hashlib.sha256(self.event_id.encode(errors="surrogatepass")).hexdigest()
            return f"{self.subscriber}:event-sha256:{digest}"
        return f"{self.subscriber}:{self.topic}:{self.partition}:{self.offset}"

    @property
    def trigger(self) -> dict[str, Any]:
        """The lineage every execution started from this event records."""
        return {
            "kind": "event", "topic": self.topic, "partition": self.partition,
            "offset": self.offset, "key": self.key, "event_id": self.event_id,
            "subscriber": self.subscriber, "timestamp": self.timestamp,
            **({"replay": True} if self.replay else {}),
            **({"traceparent": traceparent} if (traceparent := tracing.well_formed_traceparent(
                self.headers.get("traceparent"))) else {}),
        }


@dataclass(frozen=True)
class SubscriberSpec:
    """A registered subscriber."""

    name: str
    topic: str
    handler: Handler
    event_model: type[BaseModel] | None
    max_retries: int
    retry_backoff: float
    module: str


class SubscriberRegistry:
    def __init__(self) -> None:
        self._by_name: dict[str, SubscriberSpec] = {}

    def add(self, spec: SubscriberSpec) -> None:
        old = self._by_name.get(spec.name)
        if old is not None and old.module != spec.module:
            raise DefinitionError(
                f"subscriber {spec.name!r} is defined twice: in {old.module} and {spec.module}"
            )
        self._by_name[spec.name] = spec

    def for_topic(self, topic: str) -> list[SubscriberSpec]:
        return [s for s in self._by_name.values() if s.topic == topic]

    def topics(self) -> list[str]:
        return sorted({s.topic for s in self._by_name.values()})

    def all(self) -> list[SubscriberSpec]:
        return list(self._by_name.values())

    def with_prefix(self, prefix: str) -> SubscriberRegistry:
        """The same subscribers on ``prefix`` + their topic (see ``Topics.with_prefix``)."""
        if not prefix:
            return self
        out = SubscriberRegistry()
        for spec in self._by_name.values():
            out.add(dataclasses.replace(spec, topic=prefix + spec.topic))
        return out

    def get(self, name: str) -> SubscriberSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise DefinitionError(
                f"no subscriber named {name!r} (known: {', '.join(sorted(self._by_name))})"
            ) from None


SUBSCRIBERS = SubscriberRegistry()


def subscriber(
    topic: str, *, name: str | None = None, max_retries: int = 3, retry_backoff: float = 0.2,
    registry: SubscriberRegistry | None = None,
) -> Callable[[Handler], Handler]:
    """Run the decorated ``async def handler(event, ctx)`` for every event of ``topic``.

    The event is validated against the handler's annotation (a pydantic model) or the
    topic's model in topics.yaml. A handler error is retried ``max_retries`` times with
    backoff, then the event goes to the topic's dead-letter topic.
    """

    def decorate(fn: Handler) -> Handler:
        if not inspect.iscoroutinefunction(fn):
            raise DefinitionError(f"subscriber {fn.__qualname__}: must be an `async def`")
        params = list(inspect.signature(fn).parameters.values())
        if len(params) != 2:
            raise DefinitionError(
                f"subscriber {fn.__qualname__}: takes (event, ctx), got {len(params)} params"
            )
        model = None
        try:
            ann = typing.get_type_hints(fn).get(params[0].name)
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                model = ann
        except Exception:
            model = None
        (registry or SUBSCRIBERS).add(SubscriberSpec(
            name=name or fn.__name__, topic=topic, handler=fn, event_model=model,
            max_retries=max_retries, retry_backoff=retry_backoff,
            module=getattr(fn, "__module__", ""),
        ))
        return fn

    return decorate
