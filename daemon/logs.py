"""structlog set-up: JSON lines for machines (launchd, pipes), readable text for people."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from typing import TextIO

import structlog

from daemon.settings import LoggingSettings


def wants_json(settings: LoggingSettings, *, stream: TextIO) -> bool:
    if settings.format == "auto":
        return not stream.isatty()
    return settings.format == "json"


def configure_logging(settings: LoggingSettings, *, stream: TextIO | None = None, console: bool = True) -> None:
    """Route structlog through stdlib logging to `stream` (unless `console` is off) and, if set, a rotating file."""
    stream = stream or sys.stdout
    as_json = wants_json(settings, stream=stream)
    handlers: list[logging.Handler] = [_handler(logging.StreamHandler(stream), as_json=as_json)] if console else []
    if settings.file is not None:
        settings.file.parent.mkdir(parents=True, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(
            settings.file, maxBytes=settings.max_bytes, backupCount=settings.backups, encoding="utf-8"
        )
        handlers.append(_handler(rotating, as_json=True))
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(settings.level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _renderers(*, as_json: bool) -> list[structlog.types.Processor]:
    """JSON gets the traceback as a string field; the console renders it itself."""
    if as_json:
        return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    return [structlog.dev.ConsoleRenderer()]


def _handler(handler: logging.Handler, *, as_json: bool) -> logging.Handler:
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderers(as_json=as_json)],
            foreign_pre_chain=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)],
        )
    )
    return handler
