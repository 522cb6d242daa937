"""Finding settled files: watchdog events as hints, the file itself as the truth.

The observer thread only records *which* paths may have changed. The settle
loop decides, from `stat()` and the file's bytes, when a file is complete: its
size and mtime unchanged for the settle window and, for JPEG and PNG, its end
marker present. Only then is it offered to the queue. A periodic
reconciliation scan catches whatever the events missed (dropped FSEvents,
network volumes, files added while the daemon was down).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import structlog
from watchdog.events import DirCreatedEvent, DirMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.layout import is_input_name, iter_inputs
from daemon.pipeline.formats import file_truncation
from daemon.queue import Fingerprint, JobQueue, Offer

log = structlog.get_logger("cutout.watch")

IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".download", ".partial")
FINDER_COPY_BIRTHTIME = -751_619_104.0
"""1946-02-14 08:34:56 UTC: the creation date Finder gives a file it is still copying."""


def is_candidate_name(name: str) -> bool:
    """An image name that is not a temp, lock or hidden file."""
    lowered = name.lower()
    return is_input_name(name) and not name.startswith("~$") and not lowered.endswith(IGNORED_SUFFIXES)


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


class Settler:
    """Tracks changing files and offers each to the queue once it has settled."""

    def __init__(
        self,
        *,
        root: Path,
        queue: JobQueue,
        settle_seconds: float,
        incomplete_timeout: float,
        clock: Callable[[], float],
        on_queued: Callable[[], None],
    ) -> None:
        self.root, self.queue, self.clock = root, queue, clock
        self.settle_seconds, self.incomplete_timeout = settle_seconds, incomplete_timeout
        self.on_queued = on_queued
        self._lock = threading.Lock()
        self._hints: set[PurePosixPath] = set()
        self._watched: dict[PurePosixPath, _Watched] = {}

    def hint(self, rel: PurePosixPath) -> None:
        """Called from the observer thread: this path may have changed."""
        with self._lock:
            self._hints.add(rel)

    def pending(self) -> int:
        with self._lock:
            return len(self._hints) + len(self._watched)

    def run_once(self) -> None:
        """Look at every hinted or watched path; offer the settled ones."""
        with self._lock:
            hinted, self._hints = self._hints, set()
        now = self.clock()
        for rel in hinted:
            self._observe(rel, now)
        for rel in list(self._watched):
            self._check(rel, now)

    def _observe(self, rel: PurePosixPath, now: float) -> None:
        fingerprint = Fingerprint.read(self.root / rel)
        watched = self._watched.get(rel)
        if fingerprint is None:
            self._watched.pop(rel, None)
        elif watched is None:
            self._watched[rel] = _Watched(fingerprint, first_seen=now, changed_at=now)
        elif watched.fingerprint != fingerprint:
            watched.fingerprint, watched.changed_at = fingerprint, now

    def _check(self, rel: PurePosixPath, now: float) -> None:
        self._observe(rel, now)
        watched = self._watched.get(rel)
        if watched is None or now - watched.changed_at < self.settle_seconds:
            return
        if self._complete(rel, watched) or now - watched.changed_at >= self.incomplete_timeout:
            # Unchanged for the whole timeout yet incomplete: it never will be. Queued anyway,
            # the worker's own check quarantines it as truncated instead of watching it forever.
            if self._offer(rel, watched.fingerprint) != "busy":
                del self._watched[rel]
            else:  # its job is still running: look again later, so a replacement is not missed
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

    def _offer(self, rel: PurePosixPath, fingerprint: Fingerprint) -> Offer | None:
        path = self.root / rel
        try:
            outcome = self.queue.offer(rel, fingerprint, content_hash=lambda: content_hash(path))
        except OSError as exc:  # vanished between settle and hash: nothing to do
            log.info("file_vanished", path=str(rel), error=str(exc))
            return None
        if outcome in ("queued", "requeued"):
            log.info("file_queued", path=str(rel), outcome=outcome, size=fingerprint.size)
            self.on_queued()
        return outcome


def _finder_copying(path: Path) -> bool:
    birth = getattr(os.stat(path), "st_birthtime", None)
    return birth is not None and abs(birth - FINDER_COPY_BIRTHTIME) < 1.0


# --- Reconciliation --------------------------------------------------------------
def reconcile(*, root: Path, queue: JobQueue, settler: Settler) -> int:
    """Hint every input whose state the queue does not already account for; how many."""
    known = queue.known()
    hinted = 0
    for rel in iter_inputs(root):
        if not is_candidate_name(rel.name):
            continue
        if _accounted_for(known.get(rel.as_posix()), root / rel):
            continue
        settler.hint(rel)
        hinted += 1
    return hinted


def _accounted_for(record: tuple[str, int, int] | None, path: Path) -> bool:
    if record is None:
        return False
    state, size, mtime_ns = record
    if state in ("pending", "running"):
        return True
    fingerprint = Fingerprint.read(path)
    return state == "done" and fingerprint == Fingerprint(size, mtime_ns)


# --- The observer ------------------------------------------------------------------
class _Hints(FileSystemEventHandler):
    """Turns watchdog events into hints; does no I/O beyond what a new folder needs."""

    def __init__(self, *, root: Path, settler: HintSink, on_root_gone: Callable[[], None]) -> None:
        self.root, self.settler, self.on_root_gone = root, settler, on_root_gone

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                self._hint(Path(os.fsdecode(raw)), event)

    def _hint(self, path: Path, event: FileSystemEvent) -> None:
        if path == self.root and event.event_type == "deleted":
            self.on_root_gone()
            return
        try:
            rel = PurePosixPath(path.relative_to(self.root).as_posix())
        except ValueError:
            return
        if isinstance(event, (DirCreatedEvent, DirMovedEvent)) or (event.is_directory and path.is_dir()):
            # A folder moved in arrives as one event; its files bring none of their own.
            for inner in iter_inputs(path):
                self.settler.hint(rel / inner)
        elif is_candidate_name(path.name) and not any(part.startswith(".") for part in rel.parts):
            self.settler.hint(rel)


def start_observer(
    *, root: Path, settler: HintSink, polling: bool, poll_interval: float, on_root_gone: Callable[[], None]
) -> BaseObserver:
    """A running recursive observer: native events, or polling for network volumes."""
    observer: BaseObserver = PollingObserver(timeout=poll_interval) if polling else Observer()
    observer.schedule(_Hints(root=root, settler=settler, on_root_gone=on_root_gone), str(root), recursive=True)
    observer.daemon = True
    observer.start()
    return observer
