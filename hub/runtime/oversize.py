"""Dead letters that fit the size limit, without changing a byte of what they carry.

A record near the limit plus a long traceback in its context headers would be refused by
the producer, and the partition would retry that dead letter for ever. The context is ours
to cut; the value, the key and the original headers are the evidence (and what a redrive
sends back), so they are never cut: a record that does not fit even with its context
emptied is not dead-lettered at all, and the consumer parks its partition instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from hub import wire as h
from hub.engine.payload import tail_lines

Headers = list[tuple[str, bytes]]
"""Kafka record headers as the producer takes them."""

CUT_MESSAGE_CHARS = 1000
"""An exception message kept to its head: the head says what went wrong."""
CUT_STACK_CHARS = 2000
"""A traceback kept to its tail, from a line start: the last frames and the exception line."""
CUT_KEY_CHARS = 200
"""The decoded copy of the key in ``hub.errors.key`` (the key itself is sent whole)."""

_CUT: dict[str, Callable[[str], str]] = {
    h.DLQ_EXCEPTION_MESSAGE: lambda v: v[:CUT_MESSAGE_CHARS],
    h.DLQ_EXCEPTION_STACKTRACE: lambda v: tail_lines(v, CUT_STACK_CHARS),
    h.DLQ_KEY: lambda v: v[:CUT_KEY_CHARS],
}


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
                ) -> int:
    """The size the producer checks against ``max_request_size`` (aiokafka's own estimate)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers)))


def _headers(original: Headers, context: Mapping[str, str]) -> Headers:
    return [*original, *((k, v.encode()) for k, v in context.items())]


def fitted_headers(key: bytes | None, value: bytes | None, original: Headers,
                   context: Mapping[str, str], limit: int) -> list[Headers]:
    """The header sets to try, largest first, each within ``limit``: the full context, then
    the context cut (marked ``hub.errors.truncated: true``), then the context with its free
    text emptied. Empty when not even the last fits: the record cannot be dead-lettered."""
    full = _headers(original, context)
    cut = {k: _CUT[k](v) if k in _CUT else v for k, v in context.items()}
    bare = {k: "" if k in _CUT else v for k, v in context.items()}
    candidates = [full,
                  _headers(original, {**cut, h.DLQ_TRUNCATED: "true"}),
                  _headers(original, {**bare, h.DLQ_TRUNCATED: "true"})]
    fitting = [c for c in candidates if record_size(key, value, c) <= limit]
    out: list[Headers] = []
    for c in fitting:  # a cut that changed nothing is not worth a second try
        if c not in out:
            out.append(c)
    return out


def is_truncated(headers: Headers) -> bool:
    return (h.DLQ_TRUNCATED, b"true") in headers
