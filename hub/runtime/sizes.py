"""What a fetched record weighs in memory, counted one way wherever records are held.

Bounds on records alone let a few large records (each up to the broker's limit) fill a
process: the consumer's backlog and a page of dead letters are bounded in bytes too, and
both count a record as its key, value and header bytes, the part that grows with hostile
or careless producers (the per-record overhead is constant and bounded by the record caps).
"""

from __future__ import annotations

from aiokafka import ConsumerRecord


def held_bytes(record: ConsumerRecord[bytes, bytes]) -> int:
    """Key, value and header bytes of a fetched record."""
    size = len(record.key or b"") + len(record.value or b"")
    for name, value in record.headers or ():
        size += len(name) + len(value or b"")
    return size
