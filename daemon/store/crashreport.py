"""How the last `cutout watch` died: of a fatal signal of its own, or from outside.

A process that segfaults in a decoder or a GPU driver, aborts in a C++ library, or hits
a bus error writes a traceback here first (Python's `faulthandler`, armed on this file
for SIGSEGV, SIGFPE, SIGABRT, SIGBUS and SIGILL). A process stopped from outside leaves
the file empty: `kill -9`, launchd's stop timeout, the kernel's OOM killer (all SIGKILL,
which no handler can catch) and a power cut. Start-up reads the file before arming it
again, so the queue can tell a crash, which the one job running alone caused, from a
kill, which is usually not the file's fault.

The file is its own descriptor, not descriptor 2: that one is a pipe to a log thread
(`daemon.cli.nativelog`) which dies with the process before it could read a crash dump.
"""

from __future__ import annotations

import faulthandler
import os
from pathlib import Path
from typing import BinaryIO

CRASH_REPORT_FILE = "crash-report.txt"
MAX_REPORT_CHARS = 8_000
"""faulthandler prints every thread's stack; the log keeps its end, where the crash is."""


class CrashReport:
    """The crash report file of one state folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._was_enabled = False

    def previous(self) -> str:
        """What the last process wrote before it died ('' for a clean exit or an outside kill)."""
        try:
            text = self.path.read_bytes().decode("utf-8", errors="replace").strip()
        except FileNotFoundError:
            return ""
        return text[-MAX_REPORT_CHARS:]

    def arm(self) -> None:
        """Empty the file and have a fatal signal in this process write its traceback into it."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._was_enabled = faulthandler.is_enabled()  # PYTHONFAULTHANDLER=1, or a test runner's
        faulthandler.enable(file=self._file, all_threads=True)

    def disarm(self) -> None:
        """A clean exit: stop writing here (the file stays empty, so the next start sees no crash),
        and give fatal signals back to stderr if they went there before."""
        if self._file is None:
            return
        faulthandler.disable()
        if self._was_enabled:
            faulthandler.enable()
        self._file.close()
        self._file = None
