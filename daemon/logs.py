"""The process's output at start-up: structlog (JSON lines for machines, launchd and pipes;
readable text for people), and the warnings filters, set once before any thread."""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import stat
import sys
import typing
import warnings
from typing import TextIO

import structlog

from daemon.settings import LoggingSettings


DECODER_WARNINGS = r"PIL(\..*)?"
"""Where Pillow's warnings come from (odd headers, corrupt EXIF, big images): the decode and
the daemon's own size limit decide, so they are noise in the log."""


def silence_decoder_warnings() -> None:
    """Ignore Pillow's warnings, process-wide: once at start-up, before any thread. (A
    `catch_warnings()` on the stage pool or the dashboard's threads is not thread-safe: two
    interleaved ones can leave the process with a changed filter list for good.)"""
    warnings.filterwarnings("ignore", module=DECODER_WARNINGS)


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
        rotating = PrivateRotatingFileHandler(
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


LOG_FILE_MODE = 0o600
"""The log names every photo, folder and failure: for its owner's eyes only."""


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A size-rotated log whose every file is 0600: the first, each one started after a rollover,
    and one an older version left readable by others."""

    def _open(self) -> io.TextIOWrapper:
        # The handler always opens in a text mode ("a"), so this is a TextIOWrapper.
        stream = open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors, opener=_private_opener)
        return typing.cast(io.TextIOWrapper, stream)


def _private_opener(path: str, flags: int) -> int:
    fd = os.open(path, flags, LOG_FILE_MODE)
    if stat.S_IMODE(os.fstat(fd).st_mode) != LOG_FILE_MODE:
        try:
            os.fchmod(fd, LOG_FILE_MODE)
        except OSError:  # someone else's file we may append to: a log still beats none
            pass
    return fd


def _renderers(*, as_json: bool) -> list[structlog.types.Processor]:
    """JSON gets the traceback as a string field; the console renders it itself, plainly: rich's
    tracebacks would print every frame's local variables, secrets (a webhook URL, a token) included."""
    if as_json:
        return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    return [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]


def _handler(handler: logging.Handler, *, as_json: bool) -> logging.Handler:
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderers(as_json=as_json)],
            foreign_pre_chain=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)],
        )
    )
    return handler
