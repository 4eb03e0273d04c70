"""Where the dev mode's logs go: every detail to a file, only warnings to the terminal.

A dev mode left running prints a few lines a minute, not one per HTTP call: the terminal
gets its start-up summary, a live line of counts and the warnings worth a look; the file
(``<data dir>/dev.log``, rotated) gets everything at info (debug with ``--log-level debug``,
which also shows it all in the terminal).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import structlog

from hub.logging import configure_logging

FILE = "dev.log"
COUNTED = frozenset({"step_failed", "event_dead_lettered"})
"""Warnings the live line counts (compensated executions, dead letters): the demo makes
them on purpose every few seconds, so the terminal shows the count and the file each one."""
MAX_BYTES = 20 * 1024 * 1024
BACKUPS = 2


def configure_dev_logging(level: str, data_dir: Path) -> Path:
    """Send the hub's and the libraries' logs to ``<data_dir>/dev.log`` and warnings (or
    everything at ``debug``) to stderr; returns the file's path."""
    configure_logging(level, json_output=False)  # the redaction policy and the processors
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    to_file = min(lvl, logging.INFO)
    to_terminal = lvl if lvl <= logging.DEBUG else max(lvl, logging.WARNING)
    path = Path(data_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    config = structlog.get_config()
    processors = list(config["processors"])
    renderer = processors.pop()  # what configure_logging renders with, kept for both
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer])
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    file_handler.setLevel(to_file)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(to_terminal)
    if lvl > logging.DEBUG:
        terminal.addFilter(_not_counted)
    for handler in (file_handler, terminal):
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(file_handler)
    root.addHandler(terminal)
    root.setLevel(min(to_file, to_terminal))
    structlog.configure(
        processors=[*processors, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(min(to_file, to_terminal)),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    return path


def _not_counted(record: logging.LogRecord) -> bool:
    event = record.msg.get("event") if isinstance(record.msg, dict) else None
    return event not in COUNTED
