"""The memory guard: a daemon that grew too large, or ran its share of images, starts afresh.

A long-running model process can grow: the Apple GPU's allocator keeps what it once used, a
library leaks a little per image. Rather than let an unattended Mac mini swap, the daemon
measures its own memory and, past `worker.memory_ceiling_mb` (or after
`worker.restart_after_images` images), stops taking work, lets what is in flight finish,
stops cleanly (the prefetched jobs go back uncounted, exactly as at a SIGTERM) and starts
again as the same process (`restart_process`: the same command line, `exec`ed, so the service
manager sees one process that never went away and no restart is throttled or counted). Nothing
in the queue is touched and no job is charged.

A ceiling below what the daemon needs at rest (its model loaded, before its first image)
would restart it after every image: that is said once, and the ceiling is left alone for
that run (the image count still holds).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import structlog

from daemon.companions.telemetry import proc_resident

log = structlog.get_logger("cutout.guard")

EXIT_RESTART = 75
"""EX_TEMPFAIL: the daemon asks to be started again. `cutout watch` re-executes itself; any
other caller exits with it, and the service manager (restart on a non-zero exit) starts it."""
CHECK_SECONDS = 5.0
"""How often the memory is read: reading it costs a little (a `ps` on macOS)."""


def resident_now() -> int | None:
    """This process's resident memory now (not its peak, which never comes down, as the
    telemetry's is on macOS): /proc on Linux, `ps` on macOS; None where neither answers."""
    now = proc_resident()
    if now is not None:
        return now
    try:
        found = subprocess.run(["ps", "-o", "rss=", "-p", str(os.getpid())], capture_output=True, text=True,
                               timeout=5, check=True)
        return int(found.stdout.strip()) * 1024
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


class MemoryGuard:
    """Says when the daemon should start afresh: `due(done)` with the images done since its start."""

    def __init__(
        self, *, ceiling_mb: int, after_images: int, measure: Callable[[], int | None] = resident_now,
        clock: Callable[[], float] = time.monotonic, check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.ceiling = ceiling_mb * 1024 * 1024 if ceiling_mb > 0 else None
        self.after_images = after_images if after_images > 0 else None
        self.measure, self.clock, self.check_seconds = measure, clock, check_seconds
        self._next_check = clock()
        self._said_below = False

    def start(self) -> None:
        """Before the first image: a ceiling the daemon is already above is said once and left aside."""
        at_rest = self.measure() if self.ceiling is not None else None
        if self.ceiling is not None and at_rest is not None and at_rest >= self.ceiling:
            log.warning("memory_ceiling_below_start", resident_mb=round(at_rest / 2**20), ceiling_mb=self.ceiling // 2**20,
                        action="not applied in this run: the daemon needs this much with its model loaded; "
                               "raise worker.memory_ceiling_mb")
            self.ceiling = None

    def due(self, *, done: int) -> str | None:
        """Why the daemon should start afresh now, or None. Never before its first image."""
        if done == 0:
            return None
        if self.after_images is not None and done >= self.after_images:
            return f"{done} images done (worker.restart_after_images: {self.after_images})"
        if self.ceiling is None or self.clock() < self._next_check:
            return None
        self._next_check = self.clock() + self.check_seconds
        resident = self.measure()
        if resident is not None and resident >= self.ceiling:
            return (f"resident memory {resident / 2**20:.0f} MB reached worker.memory_ceiling_mb "
                    f"({self.ceiling // 2**20} MB)")
        return None


def restart_process() -> int:
    """Start this very command again in this process (the lock and every file of ours are closed
    on exec: Python opens them non-inheritable). Returns only if that fails: EXIT_RESTART, for
    the service manager to start it instead."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, sys.orig_argv)
    except OSError as exc:
        log.error("restart_failed", error=str(exc), action="exiting; the service manager starts it again")
    return EXIT_RESTART
