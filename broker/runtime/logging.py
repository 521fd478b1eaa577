"""structlog set-up: JSON lines in production, readable console in a terminal.

Per-message context (submission id, version, topic, partition, offset) is bound by the
services with `RecordContext`."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from structlog.contextvars import bind_contextvars, reset_contextvars


def configure_logging(
    fmt: Literal["auto", "console", "json"] = "auto", level: str = "INFO"
) -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class RecordContext:
    """Log fields for the record in hand, bound on entry (and by `bind`) and reset on exit.

    Bound and reset with tokens: `bound_contextvars` copies the whole context per call, which
    costs twice as much on every record of the hot paths."""

    __slots__ = ("_tokens",)

    def __init__(self, **fields: Any) -> None:
        self._tokens = dict(bind_contextvars(**fields))

    def bind(self, **fields: Any) -> None:
        self._tokens.update(bind_contextvars(**fields))

    def __enter__(self) -> RecordContext:
        return self

    def __exit__(self, *exc: object) -> None:
        reset_contextvars(**self._tokens)


def info_enabled(logger: Any) -> bool:
    """Whether `logger` writes INFO lines now (not at the usual WARNING of `swb bench`):
    checked once per batch, so no INFO line is built for nothing on a hot path."""
    enabled = getattr(logger.bind(), "is_enabled_for", None)
    return True if enabled is None else bool(enabled(logging.INFO))
