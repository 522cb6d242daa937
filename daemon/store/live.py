"""What a running daemon knows only in memory, published for `cutout status`.

The files still settling or found incomplete, and whether the hot folder's volume
is there, live in the watch thread. Once per tick, when they changed, they are
written to `live.json` in the state folder (atomically, not fsynced: a crash
loses nothing that matters, the next daemon publishes its own). `status` reads
it only while the daemon holds the lock, so a stale file is never shown.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from daemon.atomic import write_atomic

LIVE_FILE = "live.json"


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
    """One snapshot: when, the files held back, and why the hot folder is unavailable (if it is)."""

    updated: float
    waiting: list[Waiting]
    volume_problem: str | None
    store_problem: str | None = None
    """Since when, and why, the job store cannot be reached (a fleet's database away)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SLACK_BYTES = 4096
"""live.json is padded with spaces to a multiple of this (JSON ignores them), so that on a full
state disk the next snapshot can still be written over the old one in place: the moment
`status` must say that files cannot be queued is exactly when no new file can be made."""


class LiveState:
    """Writes the snapshot when it changed (ages alone are not a change: status adds them up)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: tuple[object, ...] | None = None

    def publish(
        self, *, waiting: list[Waiting], volume_problem: str | None, now: float, store_problem: str | None = None
    ) -> None:
        key = (tuple((w.path, w.size, w.incomplete, w.unqueued) for w in waiting), volume_problem, store_problem)
        if key == self._last:
            return
        self._last = key
        snapshot = Live(updated=now, waiting=waiting, volume_problem=volume_problem, store_problem=store_problem)
        data = _padded(json.dumps(snapshot.to_dict()).encode())
        try:
            write_atomic(self.path, data, durable=False)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            self._overwrite(snapshot)

    def _overwrite(self, snapshot: Live) -> None:
        """The disk is full: the snapshot over the old file's own bytes (no new block needed),
        the list of files shortened until it fits. Not atomic: a reader may find it half
        written for an instant (it then shows nothing), which beats showing nothing at all."""
        try:
            with open(self.path, "r+b") as handle:
                room = os.fstat(handle.fileno()).st_size
                waiting = list(snapshot.waiting)
                while len(data := json.dumps(replace(snapshot, waiting=waiting).to_dict()).encode()) > room and waiting:
                    waiting.pop()
                if len(data) <= room:
                    handle.write(data + b" " * (room - len(data)))
        except OSError:
            self._last = None  # not shown this time: try again at the next change or tick

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _padded(data: bytes) -> bytes:
    """To the next multiple of SLACK_BYTES, with at least a quarter of one to spare."""
    return data.ljust(((len(data) + SLACK_BYTES // 4) // SLACK_BYTES + 1) * SLACK_BYTES)


def read_live(state: Path) -> Live | None:
    """The running daemon's last snapshot, or None (no daemon, or nothing published)."""
    try:
        data = json.loads((state / LIVE_FILE).read_text(encoding="utf-8"))
        waiting = [Waiting(**item) for item in data["waiting"]]
        return Live(updated=float(data["updated"]), waiting=waiting, volume_problem=data["volume_problem"],
                    store_problem=data.get("store_problem"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
