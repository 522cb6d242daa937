"""What the dashboard shows, gathered in one place and kept for a second.

Every page, live update and `/metrics` scrape asks `Board.overview()`; within
`REFRESH_SECONDS` they share one answer, so ten open phones cost the store what one does.

- The store is read through `daemon.store.view` (read-only; never in the worker's way).
  When it cannot be read (a fleet's database restarting, a queue not made yet), the last
  answer is kept with `store_problem` saying since when, and the view is opened again at
  the next look.
- Whether the daemon runs comes from the state folder's lock (`statedir.daemon_pid`);
  what it runs (model, device, memory) from its session record, and, when it is not
  running, since when (its clean stop, or its last heartbeat).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from daemon.companions.telemetry import JobTiming, Snapshot, read_telemetry
from daemon.errors import CutoutError
from daemon.folders.outputs import Folders
from daemon.folders.routing import SEED_ROUTING, Routing
from daemon.settings import DashboardSettings, QueueSettings
from daemon.store.jobs import STATES, Job, State, WorkerInfo
from daemon.pipeline.constants import DOUBTFUL
from daemon.store.session import Waiting, read_live
from daemon.store.statedir import daemon_pid
from daemon.store.view import StoreView, open_view

REFRESH_SECONDS = 1.0
QUARANTINE_SHOWN = 200
DOUBTFUL_SHOWN = 50
"""The latest doubtful cut-outs the page lists (the most doubtful first)."""
CHART_MINUTES = 60
REVIEW_SHOWN = 500
"""The cut-outs waiting for review the Review view lists at most (the latest; the page says how many wait)."""


@dataclass(frozen=True)
class DaemonInfo:
    running: bool
    pid: int | None = None
    model: str | None = None
    device: str | None = None
    started_at: float | None = None
    last_seen: float | None = None
    """Not running: its clean stop, or its last heartbeat (it died); None if it never published."""
    rss_bytes: int | None = None


@dataclass(frozen=True)
class Overview:
    taken_at: float
    daemon: DaemonInfo
    counts: dict[State, int] = field(default_factory=lambda: {s: 0 for s in STATES})
    done_today: int = 0
    oldest_pending_age: float | None = None
    per_minute: list[int] = field(default_factory=lambda: [0] * CHART_MINUTES)
    """Cutouts finished in each of the last 60 minutes, oldest first."""
    recent: list[Job] = field(default_factory=list)
    quarantine: list[Job] = field(default_factory=list)
    failed_by_reason: dict[tuple[str, bool], int] = field(default_factory=dict)
    workers: list[WorkerInfo] = field(default_factory=list)
    last_success: float | None = None
    hot_folder_problem: str | None = None
    store_problem: str | None = None
    telemetry: Snapshot | None = None
    unqueued: list[Waiting] = field(default_factory=list)
    """Settled files the job store could not take yet (its disk full): offered again until it can."""
    doubtful: list[Job] = field(default_factory=list)
    """The latest cut-outs whose doubt is over DOUBTFUL, the most doubtful first."""

    @property
    def quarantined(self) -> dict[str, int]:
        """Files in quarantine by reason, most first."""
        held = {reason: n for (reason, inside), n in self.failed_by_reason.items() if inside}
        return dict(sorted(held.items(), key=lambda item: (-item[1], item[0])))

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def per_minute_last_hour(self) -> float:
        return sum(self.per_minute) / CHART_MINUTES


@dataclass(frozen=True)
class ReviewList:
    """The cut-outs waiting for review, as the Review view shows them."""

    jobs: list[Job]
    """Each with `output` the file to show (as in the review folder), the latest REVIEW_SHOWN."""
    total: int
    problem: str | None = None
    """Why the store could not be read (then nothing is listed)."""


MAX_JOB_ID = 2**63 - 1
"""Job ids are 64-bit signed integers in both stores."""


class Board:
    """The dashboard's one reader of the store, the live state and the telemetry."""

    def __init__(
        self, *, folders: Folders, queue: QueueSettings, dashboard: DashboardSettings,
        telemetry: Callable[[], Snapshot | None] | None = None, clock: Callable[[], float] = time.time,
        view: Callable[[], StoreView] | None = None, routing: Routing = SEED_ROUTING,
    ) -> None:
        self.folders, self.dashboard, self.clock, self.routing = folders, dashboard, clock, routing
        self.telemetry = telemetry or (lambda: read_telemetry(folders.state))
        self._open_view = view or (lambda: open_view(queue, state=folders.state))
        self._view: StoreView | None = None
        self._lock = threading.Lock()
        self._last: Overview | None = None
        self._unreachable_since: float | None = None

    def close(self) -> None:
        with self._lock:
            self._drop_view()

    def overview(self) -> Overview:
        with self._lock:
            now = self.clock()
            if self._last is not None and 0 <= now - self._last.taken_at < REFRESH_SECONDS:
                return self._last
            daemon, telemetry = self._daemon(now)
            live = read_live(self.folders.state) if daemon.running else None
            try:
                fresh = self._read(self._view_now(), now=now)
            except CutoutError as exc:
                self._drop_view()
                self._unreachable_since = self._unreachable_since or now
                since = datetime.fromtimestamp(self._unreachable_since).strftime("%H:%M:%S")
                kept = self._last or Overview(taken_at=now, daemon=daemon)
                fresh = replace(kept, store_problem=f"the job store cannot be read since {since}: {exc}")
            else:
                self._unreachable_since = None
            self._last = replace(fresh, taken_at=now, daemon=daemon, telemetry=telemetry,
                                 hot_folder_problem=live.volume_problem if live else None,
                                 unqueued=[w for w in live.waiting if w.unqueued] if live else [])
            return self._last

    def invalidate(self) -> None:
        """The next look reads afresh (after a retry changed the store)."""
        with self._lock:
            if self._last is not None:
                self._last = replace(self._last, taken_at=float("-inf"))

    def job(self, job_id: int) -> Job | None:
        if not 0 < job_id <= MAX_JOB_ID:  # no such row; and SQLite cannot even bind it
            return None
        with self._lock:
            try:
                job = self._view_now().get_job(job_id)
            except CutoutError:
                self._drop_view()
                return None
        return None if job is None else self.shown(job)

    def in_review(self) -> ReviewList:
        """The cut-outs waiting for review, read afresh at each look (a person acts on them)."""
        with self._lock:
            try:
                view = self._view_now()
                jobs, total = view.jobs(state="review", limit=REVIEW_SHOWN), view.counts().get("review", 0)
            except CutoutError as exc:
                self._drop_view()
                return ReviewList(jobs=[], total=0, problem=f"the job store cannot be read: {exc}")
        return ReviewList(jobs=[self.shown(job) for job in jobs], total=total)

    def shown(self, job: Job) -> Job:
        """The job with `output` the file to show: its first recipe's cutout (the claimed seed name
        is written only by the default recipe), or its mask when it has nothing else."""
        files = self.routing.files(job.source, claimed=job.output)
        first = next((file for file in files if not file.mask), files[0] if files else None)
        return job if first is None else replace(job, output=first.path)

    def timing(self, job: Job) -> JobTiming | None:
        snapshot = self.telemetry()
        return snapshot.timing(job.source.as_posix()) if snapshot else None

    def original(self, job: Job) -> tuple[str, str] | None:
        """Where the job's original is now, as (root, relative path): the hot folder, else the archive."""
        for root in ("input", "archive"):
            if (getattr(self.folders, root) / job.source).is_file():
                return root, job.source.as_posix()
        return None

    # --- reading -------------------------------------------------------------------------
    def _view_now(self) -> StoreView:
        if self._view is None:
            self._view = self._open_view()
        return self._view

    def _drop_view(self) -> None:
        if self._view is not None:
            try:
                self._view.close()
            except Exception:  # closing a broken connection: nothing more to lose
                pass
            self._view = None

    def _read(self, view: StoreView, *, now: float) -> Overview:
        oldest = view.oldest_pending_since()
        hour = view.finished_since(now - CHART_MINUTES * 60)
        per_minute = [0] * CHART_MINUTES
        for at in hour:
            index = CHART_MINUTES - 1 - int((now - at) // 60)
            if 0 <= index < CHART_MINUTES:
                per_minute[index] += 1
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        failed = view.jobs(state="failed", limit=QUARANTINE_SHOWN)
        return Overview(
            taken_at=now, daemon=DaemonInfo(running=False), counts=view.counts(),
            done_today=len(view.finished_since(midnight)) if midnight < now - CHART_MINUTES * 60
            else sum(1 for at in hour if at >= midnight),
            oldest_pending_age=None if oldest is None else max(0.0, now - oldest), per_minute=per_minute,
            recent=[self.shown(job) for job in view.jobs(state="done", limit=self.dashboard.recent)],
            quarantine=[job for job in failed if job.quarantine is not None],
            failed_by_reason=view.failed_by_reason(), workers=view.fleet(), last_success=view.last_finished(),
            doubtful=sorted((self.shown(job) for job in view.doubtful(above=DOUBTFUL, limit=DOUBTFUL_SHOWN)),
                            key=lambda job: (-(job.doubt or 0.0), -(job.finished_at or 0.0))),
        )

    def _daemon(self, now: float) -> tuple[DaemonInfo, Snapshot | None]:
        try:
            pid = daemon_pid(self.folders.state)
        except CutoutError:  # a lock file this user cannot read: say "not running" rather than fail the page
            pid = None
        snap = self.telemetry()
        if snap is None:
            return DaemonInfo(running=pid is not None, pid=pid), None
        running = pid is not None
        seen = None if running else (snap.stopped_at or snap.updated)
        return DaemonInfo(running=running, pid=pid, model=snap.model, device=snap.device, started_at=snap.started_at,
                          last_seen=seen, rss_bytes=snap.rss_bytes if running else None), snap
