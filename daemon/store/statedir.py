"""The state folder: what the daemon keeps there, who holds it, and whether its queue is sound.

    queue.sqlite3 (-wal, -shm)   the job queue (daemon.store.sqlite), checked here before use
    daemon.lock                  flock'ed by the running daemon, which writes its pid in it
    crash-report.txt             a fatal signal's traceback (daemon.store.crashreport)
    session.json                 the daemon's life: pid, start and clean stop, what it holds back,
                                 its figures (daemon.store.session)
    model-pin.json               the pinned model revision (daemon.models.fetch)

The daemon (`runner`), the read-only commands (`status`, `retry`) and `doctor` all find
these files here, so a read-only command never imports the daemon's life cycle.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from daemon.atomic import access_problem, make_private_dir
from daemon.errors import ConfigError, QueueDamaged, QueueError, from_sqlite_error
from daemon.store.crashreport import CRASH_REPORT_FILE
from daemon.store.sqlite import JobQueue

QUEUE_FILE = "queue.sqlite3"
LOCK_FILE = "daemon.lock"
STATE_FILES = (QUEUE_FILE, f"{QUEUE_FILE}-wal", f"{QUEUE_FILE}-shm", LOCK_FILE, CRASH_REPORT_FILE)
"""What the daemon writes in the state folder: start-up refuses any of them it cannot write. Not
the session record: it is best effort, and written by rename, which needs only the folder."""
QueueState = Literal["missing", "empty", "healthy", "damaged"]
MAX_PROBLEMS = 3
"""sqlite lists up to this many problems in a refusal; the first ones say enough."""


# --- The lock: one daemon per state folder -------------------------------------
def acquire_lock(state: Path) -> IO[str]:
    """Hold an exclusive lock on the state folder for the life of the process."""
    make_private_dir(state)
    handle = _open_state_file(state / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"a daemon (pid {owner}) is already running on {state}") from exc
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def daemon_pid(state: Path) -> int | None:
    """The pid of the daemon holding the state folder's lock, or None when none runs."""
    path = state / LOCK_FILE
    if not path.exists():
        return None
    with _open_state_file(path, "r") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
    return None


def _open_state_file(path: Path, mode: str) -> IO[str]:
    """`open`, with a refusal that says whose the file is and how to fix it instead of a traceback."""
    try:
        return open(path, mode, encoding="utf-8")
    except OSError as exc:
        problem = access_problem(path) if path.exists() else None
        raise ConfigError(f"folders.state: cannot open {path}: {problem or exc.strerror or exc}") from exc


# --- Checking the file -------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueHealth:
    path: Path
    state: QueueState
    problem: str = ""
    """For empty and damaged: what is wrong, as the end of a sentence starting with the file."""


def queue_path(state: Path) -> Path:
    return state / QUEUE_FILE


def inspect_queue(path: Path, *, thorough: bool = False) -> QueueHealth:
    """What the queue file is, without changing it: sqlite's quick_check (integrity_check when thorough).

    Raises QueueError when sqlite cannot open it for another reason than damage (locked,
    permissions, I/O): that is not something a rebuild would fix.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return QueueHealth(path, "missing")
    except OSError as exc:
        raise QueueError(f"cannot read the queue database {path}: {exc.strerror or exc}") from exc
    if size == 0:
        return QueueHealth(path, "empty", "is empty (0 bytes)")
    check = "integrity_check" if thorough else "quick_check"
    problems, has_jobs = _sqlite_check(path, pragma=check)
    if problems:
        return QueueHealth(path, "damaged", f"is damaged ({check}: {'; '.join(problems[:MAX_PROBLEMS])})")
    if not has_jobs:
        return QueueHealth(path, "empty", "is a database without the jobs table")
    return QueueHealth(path, "healthy")


def _sqlite_check(path: Path, *, pragma: str) -> tuple[list[str], bool]:
    """sqlite's own findings, and whether the jobs table is there; read-only, so a check changes nothing."""
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute(f"PRAGMA {pragma}({MAX_PROBLEMS + 1})").fetchall()
            has_jobs = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        error = from_sqlite_error(exc, path=path)
        if isinstance(error, QueueDamaged):
            return [str(exc)], False
        raise error from exc
    found = [line for row in rows for line in str(row[0]).splitlines() if not line.startswith("*** in database")]
    return ([] if found == ["ok"] else found), has_jobs is not None


def open_job_queue(path: Path, *, clock: Callable[[], float] = time.time) -> JobQueue:
    """`JobQueue(path)`, with sqlite's errors on opening translated into QueueDamaged or QueueError."""
    try:
        return JobQueue(path, clock=clock)
    except sqlite3.DatabaseError as exc:
        raise from_sqlite_error(exc, path=path) from exc


def open_existing_queue(path: Path, *, clock: Callable[[], float] = time.time) -> JobQueue:
    """For `cutout status` and `retry`: a healthy queue, or a clear refusal.

    An empty file is refused too, and not opened: opening would write a fresh schema
    into it, and the daemon would then take it for a healthy queue and redo everything.
    """
    health = inspect_queue(path)
    if health.state == "missing":
        raise ConfigError(f"no queue at {path}: the daemon has not run with this state folder yet")
    if health.state == "empty":
        raise QueueDamaged(path, f"{health.problem}; the daemon rebuilds it by itself at its next start")
    if health.state == "damaged":
        raise QueueDamaged(path, health.problem)
    return open_job_queue(path, clock=clock)
