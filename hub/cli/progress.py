"""A progress line on stderr that always ends: whatever follows it (the summary, an error
message) starts on a line of its own, even when the command fails midway."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TextIO


def bar(done: int, total: int, width: int = 30) -> str:
    """``[#####.....]`` for ``done`` of ``total``."""
    filled = min(width, int(width * done / max(1, total)))
    return f"[{'#' * filled}{'.' * (width - filled)}]"


class ProgressLine:
    """One line redrawn in place (``\\r``) on stderr; stdout stays for results.

    ``draw(text, key)``: a new ``key`` (another partition) ends the line drawn for the last
    one, so each keeps its final state. Leaving the ``with`` block ends the line, whether
    the command succeeded or raised.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._width = 0
        self._key: str | None = None

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def draw(self, text: str, key: str | None = None) -> None:
        if self._width and key != self._key:
            self.end()
        self._key = key
        # pad over what a longer earlier text left on the line
        self.stream.write(f"\r{text}{' ' * max(0, self._width - len(text))}")
        self.stream.flush()
        self._width = max(self._width, len(text))

    def end(self) -> None:
        """End the line (a no-op when nothing is drawn on it)."""
        if self._width:
            self.stream.write("\n")
            self.stream.flush()
        self._width = 0
        self._key = None

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.end()
