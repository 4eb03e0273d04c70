"""Log set-up for the hub's own processes (CLI, benchmarks). Libraries never configure
logging; a program that embeds the hub calls this or configures structlog itself."""

from __future__ import annotations

import logging
import sys

import structlog

from hub.redaction import DEFAULT, Redaction
from hub.settings import HubSettings
from hub.tracing import add_trace_ids


def configure_logging(level: str = "info", *, json_output: bool | None = None,
                      redaction: Redaction | None = None) -> None:
    """Structured logs to stderr at ``level``: JSON lines when ``json_output`` (by default
    when stderr is not a terminal, i.e. in production), readable lines in a terminal. A
    field a log line carries is redacted by the policy (``redaction``, else the process's
    ``HUB_REDACT_FIELDS``, else the defaults)."""
    if redaction is None:
        redaction = _process_redaction()
    if json_output is None:
        json_output = not sys.stderr.isatty()
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_ids,  # trace_id, span_id of the current span, when tracing is on
            redaction.log_processor,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def _process_redaction() -> Redaction:
    """The policy of ``HUB_REDACT_FIELDS`` if it is set and valid, else the defaults (a bad
    setting is reported by the settings check, not by the logger)."""
    try:
        return Redaction(HubSettings().redact_fields)
    except Exception:
        return DEFAULT
