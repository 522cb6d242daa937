"""What native libraries write to stderr, as structured log events.

OpenCV's own logger writes its `[ WARN:...]` and `[ERROR:...] imdecode_ ...` lines to
std::cerr, and the libjpeg-turbo, libtiff and libpng it bundles print with
`fprintf(stderr, ...)` ("Corrupt JPEG data: premature end of data segment"): all of it
goes straight to file descriptor 2, past Python's logging. In this project's decode path
that is OpenCV: Pillow's JPEG decoder silences libjpeg's messages, and Pillow only reads
headers here unless OpenCV cannot decode the file. Run as `cutout watch > log 2>&1` (or
under a service manager that merges the two), those lines would sit between the JSON
lines as bare text.

`capture_native_stderr()` points descriptor 2 at a pipe and a thread turns each line into
a `native_stderr` warning event with the text in its `line` field. Python's own
`sys.stderr` moves to a copy of the original descriptor 2, so tracebacks, warnings and
progress bars still reach the terminal (or the service's stderr.log) unchanged.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import structlog

STDERR_FD = 2
MAX_LINE_BYTES = 16_384
"""A longer line is logged in pieces: one event stays readable, and a library that never
writes a newline cannot grow the reader's buffer without bound."""
OPENCV_WARNING = 3
"""cv::utils::logging::LOG_LEVEL_WARNING. OpenCV prints INFO and DEBUG to std::cout, which
is the daemon's JSON log: never more verbose than this, whatever OPENCV_LOG_LEVEL says."""

log = structlog.get_logger("cutout.native")


class NativeStderr:
    """Descriptor 2 read by a thread into log events, between `start()` and `stop()`."""

    def __init__(self) -> None:
        self._saved_fd: int | None = None
        self._python_stderr: TextIO | None = None
        self._previous: TextIO | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        _cap_opencv_logging()
        try:
            self._saved_fd = os.dup(STDERR_FD)
        except OSError as exc:  # started with descriptor 2 closed (sys.stderr is None then): nothing to capture
            log.info("native_stderr_not_captured", error=str(exc))
            return
        previous = sys.stderr
        previous.flush()  # what Python wrote so far goes to the real stderr, in order
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, STDERR_FD)
        os.close(write_fd)
        self._previous = previous
        self._python_stderr = os.fdopen(
            self._saved_fd, "w", buffering=1, encoding=previous.encoding or "utf-8",
            errors="backslashreplace", closefd=False,
        )
        sys.stderr = self._python_stderr
        _repoint_handlers(previous, self._python_stderr)  # a handler on fd 2 would feed its own input
        self._reader = threading.Thread(target=_read_lines, args=(read_fd,), name="cutout-native-stderr", daemon=True)
        self._reader.start()

    def stop(self, *, timeout: float = 2.0) -> None:
        """Descriptor 2 back as it was; the lines still in the pipe are logged first."""
        if self._saved_fd is None or self._previous is None or self._python_stderr is None:
            return
        self._python_stderr.flush()
        os.dup2(self._saved_fd, STDERR_FD)  # closes the pipe's last write end: the reader sees its end
        if self._reader is not None:
            # A child process that inherited descriptor 2 keeps the pipe open: do not wait for it forever.
            self._reader.join(timeout)
        sys.stderr = self._previous
        _repoint_handlers(self._python_stderr, self._previous)
        self._python_stderr.close()
        os.close(self._saved_fd)
        self._saved_fd = self._python_stderr = self._previous = self._reader = None


@contextmanager
def capture_native_stderr() -> Iterator[NativeStderr]:
    """`NativeStderr` started for the duration of the block."""
    capture = NativeStderr()
    capture.start()
    try:
        yield capture
    finally:
        capture.stop()


def _read_lines(read_fd: int) -> None:
    with os.fdopen(read_fd, "rb") as pipe:
        while chunk := pipe.readline(MAX_LINE_BYTES):
            line = chunk.decode("utf-8", errors="replace").rstrip("\r\n")
            if line.strip():
                log.warning("native_stderr", line=line)


def _repoint_handlers(old: TextIO, new: TextIO) -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is old:
            handler.setStream(new)


def _cap_opencv_logging() -> None:
    import cv2  # the daemon decodes with it anyway; read-only commands never get here

    if cv2.utils.logging.getLogLevel() > OPENCV_WARNING:
        cv2.utils.logging.setLogLevel(OPENCV_WARNING)
