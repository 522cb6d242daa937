"""The daemon's life in one record: `session.json` in the state folder.

    {"schema": 1, "pid": 4242, "started_at": 1796000000.0, "stopped_at": null,
     "previous_end": "the daemon (pid 4100, ...) did not stop cleanly: it crashed (...)" | null,
     "live": {"updated": ..., "waiting": [...], "volume_problem": null, "store_problem": null} | null,
     "telemetry": {...daemon.companions.telemetry.Snapshot...} | null}

Written by the running daemon, read by `cutout status` (what is held back), the dashboard (in
this process or in `cutout dashboard`), the monitor, and the next start (did the last daemon
stop cleanly: `stopped_at` is set by a clean stop only). Each section has one writer: `live`
the watch thread, once per tick when it changed; `telemetry` the companions thread, every couple
of seconds when it moved. Every write replaces the whole record atomically (not fsynced: a crash
loses figures, never jobs; the next daemon writes its own), under one lock.

Two files stay beside it, because they cannot be JSON written by us: the lock (`daemon.lock`,
flock'ed, with the pid), and the crash report (`crash-report.txt`), which `faulthandler` writes
from inside a dying process; the next start folds its first line into `previous_end`.

Earlier versions wrote `live.json`, `telemetry.json` and a `session.json` marker without a
schema: the next start reads the marker once (a marker left behind is a daemon that did not
stop cleanly) and removes all three.

The record is padded with spaces (JSON ignores them) so that on a full state disk the next one
can be written over the old file's own bytes: the moment `status` must say that files cannot
be queued is exactly when no new file can be made.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daemon.atomic import write_atomic
from daemon.store.crashreport import CRASH_REPORT_FILE, CrashReport

SESSION_FILE = "session.json"
SCHEMA = 1
OLD_FILES = ("live.json", "telemetry.json")
"""What versions before the session record wrote instead (with a schema-less `session.json`)."""
SLACK_BYTES = 4096
"""The record is padded to a multiple of this, with at least a quarter of it to spare."""


@dataclass(frozen=True)
class Waiting:
    """A file the settler holds back, for `cutout status`."""

    path: str
    size: int
    waiting: float  # seconds since it was first seen
    incomplete: bool  # found unfinished (empty, no end marker); else still changing or settling
    unqueued: str | None = None  # settled, but the job store could not take it (a full disk): why


@dataclass(frozen=True)
class Live:
    """What the watch thread holds: when, the files held back, why the hot folder or the store is away."""

    updated: float
    waiting: list[Waiting]
    volume_problem: str | None
    store_problem: str | None = None
    """Since when, and why, the job store cannot be reached (a fleet's database away)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Live:
        return cls(updated=float(data["updated"]), waiting=[Waiting(**item) for item in data["waiting"]],
                   volume_problem=data["volume_problem"], store_problem=data.get("store_problem"))


@dataclass(frozen=True)
class Session:
    """The record as read back."""

    pid: int
    started_at: float
    stopped_at: float | None
    previous_end: str | None
    live: Live | None
    telemetry: dict[str, Any] | None
    """The companions' figures, as `daemon.companions.telemetry.Snapshot.from_dict` reads them."""


def read_session(state: Path) -> Session | None:
    """The last record written in `state`, or None (no daemon ever ran there, or unreadable)."""
    try:
        data = json.loads((state / SESSION_FILE).read_text(encoding="utf-8"))
        if data.get("schema") != SCHEMA:
            return None
        live = data.get("live")
        return Session(pid=int(data["pid"]), started_at=float(data["started_at"]), stopped_at=data.get("stopped_at"),
                       previous_end=data.get("previous_end"), live=Live.from_dict(live) if live else None,
                       telemetry=data.get("telemetry"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def read_live(state: Path) -> Live | None:
    """What the running daemon holds back, or None (no daemon, or nothing published)."""
    session = read_session(state)
    return session.live if session else None


class SessionRecord:
    """The running daemon's record: `begin()` at start, `publish_*` while it runs, `end()` at a clean stop."""

    def __init__(self, state: Path) -> None:
        self.state, self.path = state, state / SESSION_FILE
        self._lock = threading.Lock()
        self._record: dict[str, Any] = {}
        self._encoded: dict[str, str] = {}
        """Each section's JSON, made when the section is set: the watch thread's small, frequent
        changes never serialise the telemetry's hundreds of job timings again."""
        self._live_key: tuple[object, ...] | None = None

    def begin(self, *, now: float) -> str | None:
        """Start this daemon's record; returns how the last daemon ended when it did not stop
        cleanly (None when it did, or never ran). Read before the daemon re-arms its crash report."""
        with self._lock:  # first: whatever fails below, later writes are this life's record
            self._record = {"schema": SCHEMA, "pid": os.getpid(), "started_at": now, "stopped_at": None,
                            "previous_end": None, "live": None, "telemetry": None}
            self._encoded = {name: json.dumps(value) for name, value in self._record.items()}
        previous = _previous_end(self.state)
        for name in OLD_FILES:
            (self.state / name).unlink(missing_ok=True)
        self._set(previous_end=previous)
        return previous

    def publish_live(
        self, *, waiting: list[Waiting], volume_problem: str | None, now: float, store_problem: str | None = None
    ) -> None:
        """The watch thread's state, written when it changed (ages alone are not a change: status adds them up)."""
        key = (tuple((w.path, w.size, w.incomplete, w.unqueued) for w in waiting), volume_problem, store_problem)
        if key == self._live_key:
            return
        live = Live(updated=now, waiting=waiting, volume_problem=volume_problem, store_problem=store_problem)
        # Not shown this time (an error, or no room at all): tried again at the next tick.
        self._live_key = key if self._set(live=asdict(live)) else None

    def publish_telemetry(self, figures: dict[str, Any]) -> bool:
        """The companions' figures; False when the state disk took nothing at all."""
        return self._set(telemetry=figures)

    def end(self, *, now: float, telemetry: dict[str, Any] | None = None) -> bool:
        """A clean stop: nothing held back any more, the last figures, and when it stopped."""
        final = {"telemetry": telemetry} if telemetry is not None else {}
        return self._set(live=None, stopped_at=now, **final)

    def _set(self, **sections: Any) -> bool:
        """Raises the OSError of a state folder that refuses the write (other than a full disk)."""
        with self._lock:
            self._record.update(sections)
            self._encoded.update({name: json.dumps(value) for name, value in sections.items()})
            return self._write()

    def _write(self) -> bool:
        data = ("{" + ", ".join(f"{json.dumps(name)}: {value}" for name, value in self._encoded.items()) + "}").encode()
        try:
            write_atomic(self.path, _padded(data), durable=False)
            return True
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return self._overwrite()

    def _overwrite(self) -> bool:
        """The disk is full: the record over the old file's own bytes (no new block needed), shortened
        until it fits: the last jobs' timings first, then the files held back from the end. Not atomic:
        a reader may find it half written for an instant (and shows nothing), which beats nothing at all."""
        try:
            with open(self.path, "r+b") as handle:
                room = os.fstat(handle.fileno()).st_size
                for data in _shorter(self._record):
                    if len(data) <= room:
                        handle.write(data + b" " * (room - len(data)))
                        return True
        except OSError:
            pass
        return False


def _shorter(record: dict[str, Any]) -> Iterator[bytes]:
    """The record's bytes, then ever shorter versions of it."""
    yield json.dumps(record).encode()
    telemetry = record.get("telemetry")
    if telemetry and telemetry.get("recent"):
        record = {**record, "telemetry": {**telemetry, "recent": []}}
        yield json.dumps(record).encode()
    live: dict[str, Any] = record.get("live") or {}
    waiting = list(live.get("waiting", []))
    while waiting:
        waiting.pop()
        yield json.dumps({**record, "live": {**live, "waiting": waiting}}).encode()


def _padded(data: bytes) -> bytes:
    """To the next multiple of SLACK_BYTES, with at least a quarter of one to spare."""
    return data.ljust(((len(data) + SLACK_BYTES // 4) // SLACK_BYTES + 1) * SLACK_BYTES)


def _previous_end(state: Path) -> str | None:
    """How the last daemon ended when it did not stop cleanly, from its record (or an earlier
    version's marker) and its crash report; None after a clean stop or when none ran."""
    try:
        data = json.loads((state / SESSION_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    if data.get("schema") == SCHEMA and data.get("stopped_at") is not None:
        return None
    since = data.get("started_at")
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    report = CrashReport(state / CRASH_REPORT_FILE).previous()
    how = (f"it crashed ({report.strip().splitlines()[0][:200]})" if report
           else "it was killed or the machine lost power (no crash report)")
    return f"the daemon (pid {data.get('pid', '?')}, started {started}) did not stop cleanly: {how}"
