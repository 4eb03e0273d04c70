"""Every error the hub raises, in one small tree.

```
HubError
  DefinitionError        composer or step misuse, raised at definition time
  InputValidationError   bad run input: no execution created
  PayloadTooLarge        an input or output over the configured size
  UnknownWorkflow        no workflow registered under that name
  ExecutionNotFound      no execution with that id or transaction id
  InvalidTransition      an operation that the execution's state forbids
  OutboxEventNotFound    no outbox row with that id
  WorkflowFailed         a run ended without success (carries the Run)
  StepError              raised by step code
    PermanentStepError   never retried: the workflow compensates
      UnpublishableEvent an emitted event Kafka would refuse (topic name, size)
  ConnectorError         raised by connectors
    TransientConnectorError   worth a retry
    PermanentConnectorError   the system said no
  StoreError             Postgres is unusable (not a passing disconnect)
  ServiceConfigError     services (connectors) the workflows resolve cannot be built
  LeaseLost              this worker no longer owns the execution
```
Retryability travels as the ``retryable`` attribute, never parsed from text; so does the wait
a retry should keep (``retry_after``, seconds, on ``StepError`` and ``TransientConnectorError``:
a 429's ``Retry-After`` reaches the engine's retry timer this way).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.engine.run import Run


class HubError(Exception):
    """Base of every error the hub raises on purpose."""

    retryable: bool = False


RETRY_AFTER_MAX_S = 3600.0
"""The longest wait a retry delay may ask for; a longer one is cut to it (an outside system's
header is not trusted to park a step for a week)."""


def bounded_retry_after(value: object) -> float | None:
    """A retry delay as the engine uses it: seconds in [0, ``RETRY_AFTER_MAX_S``], or None
    for anything else (absent, negative, not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_MAX_S)


class _RetryAfter(HubError):
    """An error that may say how long to wait before the next attempt."""

    def __init__(self, *args: object, retry_after: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after = bounded_retry_after(retry_after)
        """Seconds to wait before the next attempt; None: the step's own backoff."""


class DefinitionError(HubError):
    """A workflow or step definition is wrong; raised when the module defining it is imported."""


class InputValidationError(HubError):
    """The input of a run does not validate; no execution was created."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class PayloadTooLarge(HubError):
    """An input or step output is larger than ``HUB_MAX_PAYLOAD_BYTES``."""


class UnknownWorkflow(HubError):
    """No workflow with that name (or that version) is registered."""


class ExecutionNotFound(HubError):
    """No execution matches the id or transaction id."""


class OutboxEventNotFound(HubError):
    """No outbox row has that id (or it was purged after it was sent)."""


class InvalidTransition(HubError):
    """The execution or step is not in a state that allows the operation."""


class DuplicateDelivery(HubError):
    """A signed webhook's id was already accepted for its source, for another request: a
    replay. Nothing was recorded."""


class WorkflowFailed(HubError):
    """A run ended compensated, cancelled or in ``compensation_failed``; ``run`` tells which."""

    def __init__(self, run: Run) -> None:
        err = run.error or {}
        where = f" at step {err['step']!r}" if err.get("step") else ""
        super().__init__(
            f"workflow {run.workflow!r} (transaction {run.transaction_id!r}) ended "
            f"{run.status}{where}: {err.get('message', 'no error recorded')}"
        )
        self.run = run


class StepError(_RetryAfter):
    """Raised by step code; retried up to the step's ``max_retries`` unless permanent,
    after ``retry_after`` seconds when given (else the step's backoff)."""

    retryable = True


class PermanentStepError(StepError):
    """A step failure that no retry can fix: the workflow compensates at once."""

    retryable = False


class UnpublishableEvent(PermanentStepError):
    """``ctx.emit`` was given an event Kafka would refuse: an illegal topic name, or a record
    over ``HUB_MAX_EVENT_BYTES``. Refused when the step emits it, so the step fails naming
    the topic, instead of the relay failing the row later."""


class ConnectorError(HubError):
    """A call to an outside system failed."""


class TransientConnectorError(_RetryAfter, ConnectorError):
    """The system may accept the same call later (connection error, 5xx, 429);
    ``retry_after``: when it said to try again."""

    retryable = True


class PermanentConnectorError(ConnectorError):
    """The system refused the call; repeating it cannot help."""

    retryable = False


class StoreError(HubError):
    """Postgres refused an operation for a reason other than a passing disconnect."""


class ServiceConfigError(HubError):
    """Services the loaded workflows resolve (connectors) cannot be built: their settings
    are missing or wrong. Raised at start-up, naming every service at fault at once, so a
    worker never claims an execution it would fail for want of configuration."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class BrokerUnavailable(HubError):
    """A read needs the broker and there is none (not configured, or not answering): the
    API answers 503, as for Postgres."""


class LeaseLost(HubError):
    """Another worker took over the execution; this one must stop advancing it."""
