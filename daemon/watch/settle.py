"""Finding settled files: watchdog events as hints, the file itself as the truth.

The observer thread only records *which* paths may have changed. The settle
loop decides, from `stat()` and the file's bytes, when a file is complete: its
size and mtime unchanged for the settle window and, for JPEG and PNG, its end
marker present. Only then is it offered to the queue. A periodic
reconciliation scan catches whatever the events missed (dropped FSEvents,
network volumes, files added while the daemon was down).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.errors import InvalidName, JobError, QueueError, is_queue_damage
from daemon.folders.layout import content_hash, display, is_candidate_name, is_storable, iter_inputs, storable
from daemon.pipeline.formats import file_truncation
from daemon.store.jobs import Fingerprint, JobStore, Offer
from daemon.store.session import Waiting

log = structlog.get_logger("cutout.watch")

STORE_RETRY_SECONDS = 2.0
"""How often a settled file the store could not take (a full disk) is offered again."""
OFFERS_PER_TRANSACTION = 100
"""Settled files offered in one transaction at most: a burst costs one commit per hundred
files, and the store's name lock is never held for long (a fleet's other daemons wait on it)."""
FINDER_COPY_BIRTHTIME = -751_619_104.0
"""1946-02-14 08:34:56 UTC: the creation date Finder gives a file it is still copying."""


class HintSink(Protocol):
    """Where the observer sends paths that may have changed (the Settler)."""

    def hint(self, rel: PurePosixPath) -> None: ...


@dataclass
class _Watched:
    """A path that may still be being written."""

    fingerprint: Fingerprint
    first_seen: float
    changed_at: float
    checked: Fingerprint | None = None  # the fingerprint last found incomplete
    verified: Fingerprint | None = None  # the fingerprint last found complete
    unqueued: str | None = None  # settled, but the store could not take it: why


Rejecter = Callable[[PurePosixPath, JobError], object]
"""Takes a file refused before it becomes a job (its name), to quarantine; raises if it cannot."""


class Settler:
    """Tracks changing files and offers each to the queue once it has settled.

    No single path can stop it: whatever goes wrong with one file is logged once and
    that file is set aside until it changes; every other file keeps flowing. A store that
    cannot take a settled file (its disk full, a lock held too long) is not the file's fault:
    the file stays watched, counted as not queued, and is offered again every
    STORE_RETRY_SECONDS until the store takes it.
    """

    def __init__(
        self,
        *,
        root: Path,
        queue: JobStore,
        settle_seconds: float,
        incomplete_timeout: float,
        clock: Callable[[], float],
        on_queued: Callable[[], None],
        on_rejected: Rejecter,
        follow_symlinks: bool = False,
    ) -> None:
        self.root, self.queue, self.clock = root, queue, clock
        self.settle_seconds, self.incomplete_timeout = settle_seconds, incomplete_timeout
        self.on_queued, self.on_rejected, self.follow_symlinks = on_queued, on_rejected, follow_symlinks
        self._lock = threading.Lock()
        self._hints: set[PurePosixPath] = set()
        self._watched: dict[PurePosixPath, _Watched] = {}
        self._set_aside: dict[PurePosixPath, Fingerprint | None] = {}
        """Files that failed in a way only a change can mend (and links not followed): not looked at again until then."""
        self._store_problem: str | None = None
        self._store_retry_at = 0.0
        self._settled_now: list[PurePosixPath] = []
        """Files found settled this round, offered at its end."""

    def hint(self, rel: PurePosixPath) -> None:
        """Called from the observer thread: this path may have changed."""
        with self._lock:
            self._hints.add(rel)

    def pending(self) -> int:
        with self._lock:
            return len(self._hints) + len(self._watched)

    def waiting(self) -> list[Waiting]:
        """The files held back now, oldest first (called from the watch thread only)."""
        now = self.clock()
        return [
            Waiting(display(rel), w.fingerprint.size, round(now - w.first_seen, 1), w.checked == w.fingerprint,
                    unqueued=w.unqueued)
            for rel, w in sorted(self._watched.items(), key=lambda item: item[1].first_seen)
        ]

    def run_once(self) -> None:
        """Look at every hinted or watched path; offer the settled ones."""
        with self._lock:
            hinted, self._hints = self._hints, set()
        now = self.clock()
        for rel in hinted:
            self._guarded(self._observe, rel, now)
        for rel in list(self._watched):
            self._guarded(self._check, rel, now)
        self._offer_settled(now)

    def _guarded(self, step: Callable[..., None], rel: PurePosixPath, now: float, *more: object) -> None:
        try:
            step(rel, now, *more)
        except QueueError as exc:
            if is_queue_damage(exc):
                raise  # not this file's: the queue itself is damaged, and the daemon stops (runner)
            self._store_away(rel, exc, now)
        except Exception as exc:  # one file's problem (a name the database refuses, a bug) is that file's alone
            if is_queue_damage(exc):
                raise  # not this file's: the queue itself is damaged, and the daemon stops (runner)
            self._watched.pop(rel, None)
            self._set_aside[rel] = self._fingerprint(rel)
            log.exception("file_set_aside", path=display(rel), until="it changes, or the daemon restarts")

    def _store_away(self, rel: PurePosixPath, exc: QueueError, now: float) -> None:
        """The store could not take a settled file: it stays watched, and is offered again."""
        watched = self._watched.get(rel)
        if watched is not None:
            watched.unqueued = str(exc)
        if self._store_problem is None:
            log.error("file_not_queued", path=display(rel), error=str(exc),
                      action=f"kept: offered again every {STORE_RETRY_SECONDS:g} s until the job store takes it")
        self._store_problem, self._store_retry_at = str(exc), now + STORE_RETRY_SECONDS

    def _fingerprint(self, rel: PurePosixPath) -> Fingerprint | None:
        return Fingerprint.read(self.root / rel, follow_symlinks=self.follow_symlinks)

    def _observe(self, rel: PurePosixPath, now: float) -> None:
        fingerprint = self._fingerprint(rel)
        if self._skipped(rel, fingerprint):
            self._watched.pop(rel, None)
            return
        watched = self._watched.get(rel)
        if fingerprint is None:
            self._watched.pop(rel, None)
        elif watched is None:
            self._watched[rel] = _Watched(fingerprint, first_seen=now, changed_at=now)
        elif watched.fingerprint != fingerprint:
            watched.fingerprint, watched.changed_at = fingerprint, now

    def _skipped(self, rel: PurePosixPath, fingerprint: Fingerprint | None) -> bool:
        """Set aside and unchanged, or a symbolic link not to be followed (said once)."""
        if rel in self._set_aside:
            if self._set_aside[rel] == fingerprint:
                return True
            del self._set_aside[rel]
        if fingerprint is None and (self.root / rel).is_symlink():
            self._set_aside[rel] = None
            log.warning("symlink_ignored", path=display(rel), setting="watch.follow_symlinks is off")
            return True
        return False

    def _check(self, rel: PurePosixPath, now: float) -> None:
        self._observe(rel, now)
        watched = self._watched.get(rel)
        if watched is None or now - watched.changed_at < self.settle_seconds:
            return
        if self._store_problem is not None and now < self._store_retry_at:
            watched.unqueued = watched.unqueued or self._store_problem  # no offer until the next try
            return
        if self._complete(rel, watched) or now - watched.changed_at >= self.incomplete_timeout:
            # Unchanged for the whole timeout yet incomplete: it never will be. Queued anyway,
            # the worker's own check quarantines it as truncated instead of watching it forever.
            self._settled_now.append(rel)

    def _offer_settled(self, now: float) -> None:
        """Offer this round's settled files: those of a burst together, in one transaction."""
        settled, self._settled_now = self._settled_now, []
        # In name order: concurrent batches (a fleet's watcher hands over) lock rows alike.
        outcomes, away = self._offered_in_batches(sorted(rel for rel in settled if is_storable(rel)), now)
        for rel in settled:
            if rel not in away:  # a batch taken before another failed does not say the store is back
                self._guarded(self._offer_one, rel, now, outcomes.get(rel), not away)

    def _offered_in_batches(
        self, names: list[PurePosixPath], now: float
    ) -> tuple[dict[PurePosixPath, Offer | None], set[PurePosixPath]]:
        """The outcomes of `names` offered a batch at a time, and those the store could not take
        (it went away): they stay watched, and are offered again at the next try."""
        outcomes: dict[PurePosixPath, Offer | None] = {}
        for start in range(0, len(names), OFFERS_PER_TRANSACTION):
            try:
                outcomes.update(self._offered_together(names[start : start + OFFERS_PER_TRANSACTION]))
            except QueueError as exc:
                if is_queue_damage(exc):
                    raise  # not these files': the queue itself is damaged, and the daemon stops (runner)
                for rel in names[start:]:
                    self._store_away(rel, exc, now)
                return outcomes, set(names[start:])
        return outcomes, set()

    def _offered_together(self, batch: list[PurePosixPath]) -> dict[PurePosixPath, Offer | None]:
        """The store's outcome for each of several files offered at once; those not in it (a
        lone file, all of a batch where one failed) are offered alone."""
        if len(batch) < 2:
            return {}
        try:
            outcomes = self.queue.offer_together([(rel, self._watched[rel].fingerprint) for rel in batch])
        except Exception as exc:  # one file's problem: found, and said, when each is offered alone
            if isinstance(exc, QueueError) or is_queue_damage(exc):
                raise
            log.warning("offered_one_by_one", files=len(batch), error=f"{type(exc).__name__}: {exc}",
                        why="the store refused the batch: each file is offered alone, to find which")
            return {}
        return dict(zip(batch, outcomes))

    def _offer_one(self, rel: PurePosixPath, now: float, outcome: Offer | None, store_back: bool) -> None:
        """`rel` settled: offered (alone, unless the batch did it), then no longer watched;
        unless its job is still running, when it is looked at again later, so that a
        replacement is not missed. `store_back`: the batch's success says the store is writable."""
        watched = self._watched[rel]
        if outcome is None:
            outcome = self._settled(rel, watched.fingerprint)
        else:
            self._said(rel, watched.fingerprint, outcome, store_back=store_back)
        if outcome != "busy":
            del self._watched[rel]
        else:
            watched.changed_at = now

    def _complete(self, rel: PurePosixPath, watched: _Watched) -> bool:
        if watched.checked == watched.fingerprint:
            return False  # already found incomplete at exactly this size and mtime
        if watched.verified == watched.fingerprint:
            return True  # already read whole and found complete
        try:
            complete = not _finder_copying(self.root / rel) and file_truncation(self.root / rel) is None
        except OSError:
            return False
        if complete:
            watched.verified = watched.fingerprint
        else:
            watched.checked = watched.fingerprint
        return complete

    def _settled(self, rel: PurePosixPath, fingerprint: Fingerprint) -> Offer | None:
        """A settled file: to the queue, or, when its name cannot be stored, to quarantine."""
        if not is_storable(rel):
            self._reject(rel, InvalidName(f"the file name is not valid UTF-8 ({display(rel)})"), fingerprint)
            return None
        return self._offer(rel, fingerprint)

    def _reject(self, rel: PurePosixPath, error: JobError, fingerprint: Fingerprint) -> None:
        try:
            self.on_rejected(rel, error)
        except JobError as exc:  # it could not even be moved: said once, then left alone until it changes
            self._set_aside[rel] = fingerprint
            log.error("file_not_quarantined", path=display(rel), reason=error.reason, error=str(exc),
                      now_at=str(self.root / storable(rel)))

    def _offer(self, rel: PurePosixPath, fingerprint: Fingerprint) -> Offer | None:
        path = self.root / rel
        try:
            outcome = self.queue.offer(rel, fingerprint, content_hash=lambda: content_hash(path))
        except OSError as exc:  # vanished between settle and hash: nothing to do
            log.info("file_vanished", path=display(rel), error=str(exc))
            return None
        self._said(rel, fingerprint, outcome)
        return outcome

    def _said(self, rel: PurePosixPath, fingerprint: Fingerprint, outcome: Offer, *, store_back: bool = True) -> None:
        """The store took `rel`: said, with the store writable again if it was not (`store_back`)."""
        if self._store_problem is not None and store_back:
            log.warning("store_writable_again", path=display(rel), was=self._store_problem)
            self._store_problem = None
        if outcome in ("queued", "requeued"):
            log.info("file_queued", path=display(rel), outcome=outcome, size=fingerprint.size)
            self.on_queued()


def _finder_copying(path: Path) -> bool:
    birth = getattr(os.stat(path), "st_birthtime", None)
    return birth is not None and abs(birth - FINDER_COPY_BIRTHTIME) < 1.0


# --- Reconciliation --------------------------------------------------------------
def reconcile(
    *, root: Path, queue: JobStore, settler: Settler, done_found: list[PurePosixPath] | None = None
) -> int:
    """Hint every input whose state the queue does not already account for; how many. Done
    inputs found unchanged are added to `done_found` when given (with `originals: delete` or
    `archive`, they are originals whose policy is still to apply)."""
    known = queue.known()
    hinted = 0
    for rel in iter_inputs(root):
        if not is_candidate_name(rel.name):
            continue
        accounted = _accounted_for(known.get(rel.as_posix()), root / rel)
        if accounted == "done" and done_found is not None:
            done_found.append(rel)
        if accounted:
            continue
        settler.hint(rel)
        hinted += 1
    return hinted


def _accounted_for(record: tuple[str, int, int] | None, path: Path) -> str | None:
    """Why the queue needs nothing for this file: "busy" (pending or running), "done" (done and
    unchanged), "review" (waiting for review, unchanged); None: it must be looked at."""
    if record is None:
        return None
    state, size, mtime_ns = record
    if state in ("pending", "running"):
        return "busy"
    fingerprint = Fingerprint.read(path)
    unchanged = fingerprint == Fingerprint(size, mtime_ns)
    return state if state in ("done", "review") and unchanged else None


# --- The observer ------------------------------------------------------------------
CONTENT_EVENTS: tuple[type[FileSystemEvent], ...] = (
    FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent, FileDeletedEvent,
    DirCreatedEvent, DirMovedEvent,
)
"""Events that can mean new or changed content. Not opens, closes without a write or
attribute changes: a backup or indexer reading the hot folder (or the settle check's own
read) must not wake the settler, or every read would start another."""


class _Hints(FileSystemEventHandler):
    """Turns content events into hints; does no I/O beyond what a new folder needs."""

    def __init__(self, *, root: Path, settler: HintSink) -> None:
        self.root, self.settler = root, settler

    def on_any_event(self, event: FileSystemEvent) -> None:
        if not isinstance(event, CONTENT_EVENTS):  # the polling observer has no filter of its own
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                self._hint(Path(os.fsdecode(raw)), event)

    def _hint(self, path: Path, event: FileSystemEvent) -> None:
        try:
            rel = PurePosixPath(path.relative_to(self.root).as_posix())
        except ValueError:
            return
        if rel == PurePosixPath(".") or any(part.startswith(".") for part in rel.parts):
            return
        if isinstance(event, (DirCreatedEvent, DirMovedEvent)):
            # A folder moved in arrives as one event; its files bring none of their own.
            for inner in iter_inputs(path):
                self.settler.hint(rel / inner)
        elif not event.is_directory and is_candidate_name(path.name):
            self.settler.hint(rel)


def start_observer(*, root: Path, settler: HintSink, polling: bool, poll_interval: float) -> BaseObserver:
    """A running recursive observer: native events, or polling for network volumes."""
    observer: BaseObserver = PollingObserver(timeout=poll_interval) if polling else Observer()
    handler = _Hints(root=root, settler=settler)
    observer.schedule(handler, str(root), recursive=True, event_filter=list(CONTENT_EVENTS))
    observer.daemon = True
    observer.start()
    return observer
