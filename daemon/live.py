"""What a running daemon knows only in memory, published for `cutout status`.

The files still settling or found incomplete, and whether the hot folder's volume
is there, live in the watch thread. Once per tick, when they changed, they are
written to `live.json` in the state folder (atomically, not fsynced: a crash
loses nothing that matters, the next daemon publishes its own). `status` reads
it only while the daemon holds the lock, so a stale file is never shown.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
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


class LiveState:
    """Writes the snapshot when it changed (ages alone are not a change: status adds them up)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: tuple[object, ...] | None = None

    def publish(
        self, *, waiting: list[Waiting], volume_problem: str | None, now: float, store_problem: str | None = None
    ) -> None:
        key = (tuple((w.path, w.size, w.incomplete) for w in waiting), volume_problem, store_problem)
        if key == self._last:
            return
        self._last = key
        snapshot = Live(updated=now, waiting=waiting, volume_problem=volume_problem, store_problem=store_problem)
        write_atomic(self.path, json.dumps(snapshot.to_dict()).encode(), durable=False)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def read_live(state: Path) -> Live | None:
    """The running daemon's last snapshot, or None (no daemon, or nothing published)."""
    try:
        data = json.loads((state / LIVE_FILE).read_text(encoding="utf-8"))
        waiting = [Waiting(**item) for item in data["waiting"]]
        return Live(updated=float(data["updated"]), waiting=waiting, volume_problem=data["volume_problem"],
                    store_problem=data.get("store_problem"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
