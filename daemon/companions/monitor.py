"""What is worth an alert, found by looking from outside the worker's path.

`Monitor.tick()` runs on the daemon's companion thread every `alerts.check_seconds`. It
reads the store through its own read-only view (daemon/store/view.py), the state folder's
session record (what the watch thread holds back) and the output disk, and posts events to `daemon.companions.alerts.Alerts`:

- **quarantined**: jobs that failed since the last look (the store's own clock, so a
  fleet's database time is compared with itself);
- **stalled**: work waiting (pending or running) while nothing ended for
  `alerts.stall_minutes`, once per stall, and **moving** when it ends;
- **disk_low**: the output's disk under `alerts.disk_free_percent` free, once until it recovers;
- **review**: more doubtful cut-outs wait in the review folder than at the last look: how many
  wait now (the first look says so too, when any wait);
- **not_queued**: settled files the job store could not take (its disk full: the session record's `live`), once
  until every one is queued;
- **crashed**: said at start-up, from the session record (daemon/store/session.py): a daemon
  that did not stop cleanly never wrote its `stopped_at` (a fatal signal, `kill -9`, the OOM
  killer, a power cut).

A store that cannot be read is skipped (tried again at the next tick): the daemon's own
log already says it is away.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import structlog

from daemon.companions.alerts import Alerts, Event
from daemon.errors import CutoutError
from daemon.settings import AlertSettings
from daemon.store.session import read_live
from daemon.store.view import StoreView

log = structlog.get_logger("cutout.monitor")

DISK_HYSTERESIS = 1.0
"""Percent above the threshold the disk must get back to before it can alert again."""


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


class Monitor:
    """Derives alert events from the store, the live state and the disk."""

    def __init__(
        self, *, settings: AlertSettings, alerts: Alerts, open_view: Callable[[], StoreView], output: Path,
        state: Path, clock: Callable[[], float] = time.time,
        disk_usage: Callable[[Path], DiskUsage] = lambda p: DiskUsage(*shutil.disk_usage(p)),
    ) -> None:
        self.settings, self.alerts, self.open_view = settings, alerts, open_view
        self.output, self.state, self.clock, self.disk_usage = output, state, clock, disk_usage
        self._view: StoreView | None = None
        self._cursor = clock()
        """The latest failure already told, on the store's clock; what failed before the start is not news
        (a fleet's database clock may differ from this machine's by a few seconds: that much is missed or repeated)."""
        self._mark: tuple[int, float | None] | None = None
        self._waiting_since: float | None = None
        self._stalled = False
        self._disk_low = False
        self._not_queued = False
        self._in_review = 0

    def close(self) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None

    def tick(self) -> None:
        """One look at everything; a part that fails is logged and skipped."""
        for check in (self._quarantines, self._stall, self._reviews):
            try:
                check(self._store())
            except CutoutError as exc:
                log.debug("monitor_store_unreadable", error=str(exc))
                self.close()
                break
        try:
            self._disk()
        except OSError as exc:
            log.debug("monitor_disk_unreadable", error=str(exc))
        self._unqueued()

    def _unqueued(self) -> None:
        """Files that settled while the store could not write: the stall alert cannot see them
        (they are in no count), so they are an alert of their own."""
        live = read_live(self.state)
        unqueued = [w for w in live.waiting if w.unqueued] if live else []
        if unqueued and not self._not_queued:
            detail = (f"{len(unqueued)} new file{'s' if len(unqueued) != 1 else ''} could not be queued "
                      f"({unqueued[0].unqueued}); offered again until the job store takes them")
            self.alerts.post_event(Event(kind="not_queued", detail=detail, at=self.clock(), file=unqueued[0].path))
        self._not_queued = bool(unqueued)

    def _store(self) -> StoreView:
        if self._view is None:
            self._view = self.open_view()
        return self._view

    def _quarantines(self, view: StoreView) -> None:
        count, jobs = view.failed_since(self._cursor)
        if not count:
            return
        self._cursor = max((job.finished_at or 0.0) for job in jobs) if jobs else self._cursor
        now = self.clock()
        for job in reversed(jobs):  # oldest first; a file that vanished before its turn is no alarm
            if job.reason != "vanished":
                self.alerts.post_event(Event(kind="quarantined", detail=job.message or "", at=now,
                                             file=job.source.as_posix(), reason=job.reason))
        for _ in range(count - len(jobs)):  # more than one look's examples: counted all the same
            self.alerts.post_event(Event(kind="quarantined", detail="", at=now, reason="unlisted"))

    def _reviews(self, view: StoreView) -> None:
        """Cut-outs waiting for a person: said when more wait than at the last look, with how many wait."""
        waiting = view.counts().get("review", 0)
        if waiting > self._in_review:
            plural = "s wait" if waiting != 1 else " waits"
            detail = (f"{waiting} doubtful cut-out{plural} for review ({waiting - self._in_review} new): "
                      "cutout review list, or the dashboard's Review view")
            self.alerts.post_event(Event(kind="review", detail=detail, at=self.clock()))
        self._in_review = waiting

    def _stall(self, view: StoreView) -> None:
        counts, mark, now = view.counts(), view.progress(), self.clock()
        waiting = counts["pending"] + counts["running"]
        if waiting == 0 or mark != self._mark or self._waiting_since is None:
            if self._stalled and mark != self._mark:
                self.alerts.post_event(Event(kind="moving", detail="jobs are finishing again", at=now))
            self._stalled = False
            self._mark, self._waiting_since = mark, (now if waiting else None)
            return
        minutes = (now - self._waiting_since) / 60
        if not self._stalled and minutes >= self.settings.stall_minutes:
            self._stalled = True
            live = read_live(self.state)
            why = live.volume_problem or live.store_problem if live else None
            detail = f"{waiting} jobs waiting and none finished for {minutes:.0f} min"
            self.alerts.post_event(Event(kind="stalled", detail=detail + (f" ({why})" if why else ""), at=now))

    def _disk(self) -> None:
        threshold = self.settings.disk_free_percent
        if threshold <= 0:
            return
        usage = self.disk_usage(self.output)
        free = 100.0 * usage.free / usage.total if usage.total else 100.0
        if not self._disk_low and free < threshold:
            self._disk_low = True
            detail = f"{free:.1f}% free ({usage.free / 1e9:.1f} GB) on the disk of {self.output}"
            self.alerts.post_event(Event(kind="disk_low", detail=detail, at=self.clock()))
        elif self._disk_low and free >= threshold + DISK_HYSTERESIS:
            self._disk_low = False
