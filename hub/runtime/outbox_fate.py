"""What a failed publish of one outbox row means for that row: retry it later, or fail it.

```
publish error
  refused record: the broker or the client will refuse this record every time
    MessageSizeTooLargeError, RecordListTooLargeError   over a size limit
    InvalidTopicError, an illegal name (checked first)  no such topic can exist
    TopicAuthorizationFailedError                       not ours to write to
    UnknownTopicOrPartitionError                        absent after the metadata wait
    CorruptRecordException, InvalidTimestampError, PolicyViolationError, ...
    TypeError, ValueError, UnicodeError                 the row's data cannot be encoded
  anything else: the connection, the cluster or the producer, not the row
    KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError, ...
```
A refused row is failed at once (it waits for an operator with the reason); any other error
is retried with backoff, and fails too once it reached the relay's bound of attempts.
"""

from __future__ import annotations

import re
import uuid

from aiokafka import errors as ke

from hub.engine.payload import clean_text
from hub.store.store import OutboxFate

REFUSED: tuple[type[BaseException], ...] = (
    ke.MessageSizeTooLargeError,
    ke.RecordListTooLargeError,
    ke.InvalidTopicError,
    ke.TopicAuthorizationFailedError,
    ke.UnknownTopicOrPartitionError,
    ke.CorruptRecordException,
    ke.InvalidTimestampError,
    ke.PolicyViolationError,
    ke.UnsupportedForMessageFormatError,
    TypeError,
    ValueError,
    UnicodeError,
)
"""Errors that say this record will never be accepted: retrying cannot help."""


_ERROR_CODE = re.compile(r"^\[Error -?\d+\] \w+:?\s*")


def reason(exc: BaseException) -> str:
    """The stored and logged reason: the error's class and message, bounded and storable."""
    name = type(exc).__name__
    text = _ERROR_CODE.sub("", str(exc).strip())  # aiokafka's "[Error 10] ClassName: "
    text = text.removeprefix(f"{name}: ")
    description = getattr(type(exc), "description", None)  # a broker error code's meaning
    if isinstance(description, str) and description not in text:
        text = f"{text}: {description}" if text else description
    return clean_text(f"{name}: {text}"[:2000])


def fate_of(row_id: uuid.UUID, exc: BaseException) -> OutboxFate:
    """The fate of a row whose publish raised ``exc``."""
    if isinstance(exc, REFUSED):
        return OutboxFate(row_id, "failed", reason(exc))
    return OutboxFate(row_id, "retry", reason(exc))
