"""Where the next page of a dead-letter topic starts: an offset per partition, as text.

A page of dead letters is read from these offsets, never from the topic's beginning, so a
caller walks a topic of any size a bounded page at a time. The text (``0:200,1:0``) travels
in URLs and CLI flags; a cursor is read strictly, since it comes from outside.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hub.errors import HubError

MAX_CURSOR_CHARS = 4000
"""A cursor longer than this names more partitions than a topic plausibly has."""

_PAIR = re.compile(r"^(\d{1,5}):(\d{1,19})$")


class BadCursor(HubError):
    """A cursor that is not ``partition:offset[,partition:offset...]``."""


def encode_cursor(positions: Mapping[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


def decode_cursor(text: str) -> dict[int, int]:
    if len(text) > MAX_CURSOR_CHARS:
        raise BadCursor(f"cursor longer than {MAX_CURSOR_CHARS} characters; pass the `next` "
                        "of the previous page")
    out: dict[int, int] = {}
    for part in text.split(","):
        m = _PAIR.match(part.strip())
        if m is None:
            raise BadCursor(f"cursor {text[:80]!r} is not partition:offset[,...]; pass the "
                            "`next` of the previous page")
        out[int(m.group(1))] = int(m.group(2))
    return out
