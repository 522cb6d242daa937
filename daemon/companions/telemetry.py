"""What the daemon measures while it runs, published for the dashboard and `/metrics`.

The worker states, once per job, what happened and where the time went as one typed
`JobRecord` (outcome, reason, per-stage seconds, queue wait, total), and hands that same
record to the log (the `job` event) and to `Telemetry.observe`: the figures never depend on
how the log spells a field, nor on `logging.level`.

`Telemetry` keeps the counts and fixed-bucket histograms since the daemon started and
the timings of the last jobs. `TelemetryPublisher` puts them into the session record
(daemon/store/session.py) every few seconds when they changed, with a heartbeat, so a
dashboard in another process (`cutout dashboard`) sees them, and sees when the daemon
stopped or died.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from daemon.store.session import SessionRecord, read_session
from daemon.work.record import JobRecord

log = structlog.get_logger("cutout.telemetry")

BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Histogram upper bounds in seconds: a 10 ms encode to a five-minute CPU forward."""
DOUBT_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""The doubt score's histogram upper bounds (daemon.pipeline.doubt: 0..1)."""
RECENT_JOBS = 500
"""Jobs whose timings are kept for the before/after view (older ones show the store's times)."""
HEARTBEAT_SECONDS = 15.0
"""A snapshot is written at least this often, so a dead daemon's last sign of life is known."""


@dataclass
class Histogram:
    """Counts per bucket (not cumulative; the last is +Inf), their sum, and their number."""

    bounds: tuple[float, ...] = BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        index = next((i for i, bound in enumerate(self.bounds) if value <= bound), len(self.bounds))
        self.counts[index] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus' buckets: (upper bound, observations at or below it), +Inf last."""
        running, out = 0, []
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.total}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, bounds: tuple[float, ...] = BUCKETS) -> Histogram:
        counts = [int(n) for n in data["counts"]]
        if len(counts) != len(bounds) + 1:
            raise ValueError("histogram buckets changed")
        return cls(bounds=bounds, counts=counts, total=float(data["sum"]))


@dataclass(frozen=True)
class JobTiming:
    """One finished job as the worker reported it."""

    path: str
    outcome: str
    reason: str | None
    stages: dict[str, float]
    queue_wait: float
    total: float
    at: float


@dataclass
class Snapshot:
    """Everything the session record's `telemetry` holds."""

    pid: int
    model: str
    device: str
    started_at: float
    updated: float
    stopped_at: float | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    stages: dict[str, Histogram] = field(default_factory=dict)
    job_seconds: Histogram = field(default_factory=Histogram)
    queue_wait_seconds: Histogram = field(default_factory=Histogram)
    doubt: Histogram = field(default_factory=lambda: Histogram(DOUBT_BUCKETS))
    """The doubt scores of finished cut-outs."""
    last_success: float | None = None
    rss_bytes: int | None = None
    recent: list[JobTiming] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid, "model": self.model, "device": self.device, "started_at": self.started_at,
            "updated": self.updated, "stopped_at": self.stopped_at, "outcomes": self.outcomes,
            "stages": {name: h.to_dict() for name, h in self.stages.items()},
            "job_seconds": self.job_seconds.to_dict(), "queue_wait_seconds": self.queue_wait_seconds.to_dict(),
            "doubt": self.doubt.to_dict(), "last_success": self.last_success, "rss_bytes": self.rss_bytes,
            "recent": [vars(t) for t in self.recent],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(
            pid=int(data["pid"]), model=str(data["model"]), device=str(data["device"]),
            started_at=float(data["started_at"]), updated=float(data["updated"]), stopped_at=data.get("stopped_at"),
            outcomes={str(k): int(v) for k, v in data["outcomes"].items()},
            stages={str(k): Histogram.from_dict(v) for k, v in data["stages"].items()},
            job_seconds=Histogram.from_dict(data["job_seconds"]),
            queue_wait_seconds=Histogram.from_dict(data["queue_wait_seconds"]),
            doubt=Histogram.from_dict(data["doubt"], bounds=DOUBT_BUCKETS) if "doubt" in data else Histogram(DOUBT_BUCKETS),
            last_success=data.get("last_success"), rss_bytes=data.get("rss_bytes"),
            recent=[JobTiming(**item) for item in data["recent"]],
        )

    def timing(self, path: str) -> JobTiming | None:
        return next((t for t in reversed(self.recent) if t.path == path), None)


class Telemetry:
    """The running daemon's measurements; `observe` is called from any thread."""

    def __init__(self, *, model: str, device: str, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._snapshot = Snapshot(pid=os.getpid(), model=model, device=device, started_at=clock(), updated=clock())
        self._recent: OrderedDict[str, JobTiming] = OrderedDict()
        self.generation = 0
        """Grows at every change: the publisher writes only when it moved."""

    def observe(self, record: JobRecord) -> None:
        """One job's end (from any thread)."""
        timing = JobTiming(path=record.path, outcome=record.outcome, reason=record.reason, stages=dict(record.timings),
                           queue_wait=record.queue_wait, total=record.total, at=self.clock())
        with self._lock:
            snap = self._snapshot
            snap.outcomes[timing.outcome] = snap.outcomes.get(timing.outcome, 0) + 1
            if timing.outcome in ("done", "review"):  # a cut-out made either way: its timings count
                snap.last_success = timing.at
                for stage, seconds in timing.stages.items():
                    snap.stages.setdefault(stage, Histogram()).observe(seconds)
                snap.job_seconds.observe(timing.total)
                if record.doubt is not None:
                    snap.doubt.observe(record.doubt)
                snap.queue_wait_seconds.observe(timing.queue_wait)
            self._recent.pop(timing.path, None)
            self._recent[timing.path] = timing
            while len(self._recent) > RECENT_JOBS:
                self._recent.popitem(last=False)
            self.generation += 1

    def snapshot(self, *, stopped: bool = False) -> Snapshot:
        """A copy, stamped now (with this process's memory)."""
        with self._lock:
            data = self._snapshot.to_dict()
            data["recent"] = [vars(t) for t in self._recent.values()]
        snap = Snapshot.from_dict(data)
        snap.updated, snap.rss_bytes = self.clock(), resident_bytes()
        snap.stopped_at = snap.updated if stopped else None
        return snap


def proc_resident() -> int | None:
    """This process's resident memory now, from /proc (Linux); None where there is none."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def resident_bytes() -> int | None:
    """This process's resident memory: current on Linux, the peak on macOS (no /proc there)."""
    found = proc_resident()
    if found is not None:
        return found
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


# --- Publishing and reading ---------------------------------------------------------------
class TelemetryPublisher:
    """Puts the figures into the session record when they moved, and at least every heartbeat."""

    def __init__(
        self, telemetry: Telemetry, *, session: SessionRecord, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.telemetry, self.session, self.monotonic = telemetry, session, monotonic
        self._written: tuple[int, float] | None = None
        self._failing = False

    def tick(self) -> None:
        generation, now = self.telemetry.generation, self.monotonic()
        if self._written and self._written[0] == generation and now - self._written[1] < HEARTBEAT_SECONDS:
            return
        self._attempt(lambda: self.session.publish_telemetry(self.telemetry.snapshot().to_dict()))
        self._written = (generation, now)

    def stopped(self) -> None:
        """A clean stop: the last figures, and the record's `stopped_at`, say when."""
        snapshot = self.telemetry.snapshot(stopped=True)
        self._attempt(lambda: self.session.end(now=snapshot.updated, telemetry=snapshot.to_dict()))

    def _attempt(self, write: Callable[[], bool]) -> None:
        """Best effort: a full state disk pauses the figures (said once), never the daemon."""
        try:
            written = write()
            error = None if written else "no room on the state folder's disk"
        except OSError as exc:
            error = exc.strerror or str(exc)
        if error and not self._failing:
            log.warning("telemetry_not_written", path=str(self.session.path), error=error)
        self._failing = error is not None


def read_telemetry(state: Path) -> Snapshot | None:
    """The daemon's last published figures, or None (never published, or unreadable)."""
    session = read_session(state)
    try:
        return Snapshot.from_dict(session.telemetry) if session and session.telemetry else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
