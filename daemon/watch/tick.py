"""The watch thread's work, one tick at a time: who watches, whether the folder is there, what settled.

    every tick       is the hot folder's volume there? (a NAS that drops pauses everything)
                     are we the watcher? (always on one machine; in a fleet, one daemon at a
                     time, and never with `watch.role: worker`)
                     watcher and folder there: an observer runs, files settle, the folder is
                     rescanned when due, at once after a return or a change of watcher
    when it changed  the session record's `live` for `cutout status`

The heartbeat is not the watch thread's: `beat()` runs every lease / 3 on a thread of its own
(`cutout-heartbeat`, runner.py), taking none of the watch's lock, so that a rescan of a large
NAS tree that outlasts a lease never hands this worker's jobs to another machine.

The observer is started and stopped only here, so there is exactly one place that decides
whether this process listens to the hot folder.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import structlog
from watchdog.observers.api import BaseObserver

from daemon.folders.outputs import Folders
from daemon.folders.volume import Volume
from daemon.settings import Settings
from daemon.store.jobs import JobStore, WorkerInfo
from daemon.store.session import SessionRecord
from daemon.watch.settle import Settler, reconcile
from daemon.work.worker import Worker

log = structlog.get_logger("cutout.daemon")

ObserverFactory = Callable[..., BaseObserver]
"""`watch.start_observer`'s signature: (*, root, settler, polling, poll_interval) -> a started observer."""
ROLE_CHECK_SECONDS = 2.0
"""How often a daemon asks whether it is (still) the fleet's watcher: a dead watcher's
successor starts watching within about this long after the store noticed the death."""


@dataclass(frozen=True, kw_only=True)
class Identity:
    """What this daemon reports of itself to the fleet."""

    worker: str
    model: str
    device: str
    started_at: float


@dataclass
class FolderWatch:
    settings: Settings
    folders: Folders
    queue: JobStore
    worker: Worker
    settler: Settler
    volume: Volume
    session: SessionRecord
    observer_factory: ObserverFactory
    identity: Identity
    store_problem: Callable[[], str | None]
    clock: Callable[[], float]
    monotonic: Callable[[], float]
    scan: Callable[..., int] = reconcile
    """The rescan (`watch.reconcile`); a test passes a slow one."""
    finish_originals: Callable[[list[PurePosixPath]], None] | None = None
    """With `originals: delete` or `archive`: applies the policy to done, unchanged originals a
    rescan still finds (one whose check failed while the hot folder was away, say)."""
    observer: BaseObserver | None = None
    leading: bool = False
    paused: bool = False
    _rescan_now: bool = field(default=True, init=False)
    _next_scan: float = field(default=0.0, init=False)
    _next_role_check: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def tick(self) -> None:
        with self._lock:
            try:
                present = self._volume_present()
                watching = self._lead() and present
                self._listen(watching)
                if watching:
                    self._settle()
            finally:  # also while the store is away: status says so
                self.session.publish_live(waiting=self.settler.waiting(), volume_problem=self.volume.problem,
                                          now=self.clock(), store_problem=self.store_problem())

    def start(self) -> None:
        """Listen from the start when this daemon is the watcher (the first tick scans)."""
        with self._lock:
            self._listen(self._lead() and self.volume.check())

    def close(self) -> None:
        with self._lock:
            self._listen(False)
            self.queue.leave(self.identity.worker)

    # --- who watches, and whether there is anything to watch ------------------------------
    def _lead(self) -> bool:
        if self.monotonic() < self._next_role_check:
            return self.leading
        self._next_role_check = self.monotonic() + ROLE_CHECK_SECONDS
        leading = self.settings.watch.role == "auto" and self.queue.lead()
        changed, self.leading = leading != self.leading, leading
        if changed:
            (log.info if leading else log.warning)(
                "watcher_changed", watcher=leading, input=str(self.folders.input),
                action="watching the hot folder" if leading else "only processing: another daemon watches the folder",
            )
            self.queue.report_worker(self._info())  # the fleet's status shows the new watcher at once
        return leading

    def _volume_present(self) -> bool:
        """Pause while the hot folder's volume is gone (no job touched); rescan when it is back."""
        was_there = not self.paused  # not volume.available: the worker may have noticed first
        there = self.volume.check()
        self.paused = not there
        if was_there and not there:
            log.error("hot_folder_unavailable", input=str(self.folders.input), problem=self.volume.problem,
                      action="paused: no job is claimed or changed until it returns")
        elif there and not was_there:
            log.warning("hot_folder_back", input=str(self.folders.input), action="watching again, rescanning now")
            self._rescan_now = True
            self.worker.wake.set()
        return there

    def _listen(self, on: bool) -> None:
        """An observer while watching; a fresh one each time (a dropped mount kills its watches)."""
        if on and self.observer is None:
            watch = self.settings.watch
            self.observer = self.observer_factory(root=self.folders.input, settler=self.settler,
                                                  polling=watch.polling, poll_interval=watch.poll_interval_seconds)
            self._rescan_now = True
        elif not on and self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None

    # --- settling, rescans, heartbeats ---------------------------------------------------------
    def _settle(self) -> None:
        """Rescan when due (or just started watching), then settle what is watched."""
        if self.monotonic() >= self._next_scan or self._rescan_now:
            self._rescan_now = False
            left: list[PurePosixPath] = []
            hinted = self.scan(root=self.folders.input, queue=self.queue, settler=self.settler,
                               done_found=left if self.finish_originals else None)
            log.info("reconciled", new_or_changed=hinted)
            if left and self.finish_originals is not None:
                self.finish_originals(left)
            self._next_scan = self.monotonic() + self.settings.watch.reconcile_interval_seconds
        self.settler.run_once()

    def beat(self) -> None:
        """The jobs in flight stay this daemon's; the fleet sees it alive. On the heartbeat's own
        thread, every third of a lease: never behind a rescan."""
        self.worker.heartbeat()
        self.queue.report_worker(self._info())

    def _info(self) -> WorkerInfo:
        me = self.identity
        return WorkerInfo(
            worker=me.worker, host=socket.gethostname(), pid=os.getpid(), device=me.device, model=me.model,
            started_at=me.started_at, seen_at=self.clock(), done=self.worker.done,
            current=self.worker.current(), leader=self.leading,
        )
