"""Whether the hot folder's volume is there: a NAS share that drops must pause the daemon, not empty its queue.

When a network share goes away, its mount point usually stays: an empty folder on
the local disk (or, on macOS, no folder at all). Seen from the daemon, every
file "vanished" at once. The signs, checked every tick by the watch thread:

- the hot folder cannot be `stat`ed or `statvfs`ed (EIO, ENOTCONN, ESTALE, gone);
- it is a different folder than the one armed (device or inode changed);
- it was a mount point when armed and no longer is (same device as its parent);
- it is empty while the queue still has work for it.

While any holds, the daemon is paused: no job is claimed, no verdict is given on a
missing file, and no job changes state. It resumes once the folder can be read
again and is not empty (or the queue has nothing waiting), re-arms itself on what
is there now, and the caller restarts its observer and rescans at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class VolumeState(Protocol):
    """What the worker asks: is the hot folder there (last known), and is it there right now."""

    @property
    def available(self) -> bool: ...

    def check(self) -> bool: ...


class _AlwaysThere:
    available = True

    def check(self) -> bool:
        return True


ALWAYS_THERE: VolumeState = _AlwaysThere()
"""For `cutout process` and tests that have no volume to lose."""


@dataclass(frozen=True)
class Identity:
    """Which folder a path is: its device and inode, and whether it is a mount point."""

    device: int
    inode: int
    mount_point: bool

    @classmethod
    def of(cls, path: Path) -> Identity:
        """Raises OSError when the folder cannot be read (or its file system answered nothing)."""
        stat, parent = os.stat(path), os.stat(path.parent)
        os.statvfs(path)  # a dead NFS/SMB mount fails here even when stat is cached
        return cls(stat.st_dev, stat.st_ino, stat.st_dev != parent.st_dev)


class Volume:
    """The hot folder's presence: `check()` looks now (the watch thread, every tick; the worker,
    before a verdict on a missing file) and `available` is what the last look found."""

    def __init__(self, root: Path, *, has_work: Callable[[], bool]) -> None:
        self.root, self.has_work = root, has_work
        self.armed = Identity.of(root)
        self.problem: str | None = None
        """Why the hot folder counts as gone, or None while it is there."""
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.problem is None

    def check(self) -> bool:
        """Whether the hot folder is there right now (also updates `problem`)."""
        with self._lock:
            self.problem = self._missing() if self.problem is None else self._still_missing()
            return self.problem is None

    def _look(self) -> Identity | str:
        """The hot folder's identity now, or why it cannot be read."""
        try:
            return Identity.of(self.root)
        except OSError as exc:
            return f"cannot read the hot folder: {exc.strerror or exc}"

    def _missing(self) -> str | None:
        now = self._look()
        if isinstance(now, str):
            return now
        if (now.device, now.inode) != (self.armed.device, self.armed.inode):
            return "the hot folder is another folder now (its volume was unmounted or it was replaced)"
        return self._empty_with_work()

    def _still_missing(self) -> str | None:
        """While gone: back once readable, mounted again if it was a mount, and not empty."""
        now = self._look()
        if isinstance(now, str):
            return now
        if self.armed.mount_point and not now.mount_point:
            return "the hot folder's volume is not mounted"
        if (problem := self._empty_with_work()) is not None:
            return problem
        self.armed = now  # what came back is the hot folder from now on
        return None

    def _empty_with_work(self) -> str | None:
        try:
            with os.scandir(self.root) as entries:
                empty = next(entries, None) is None
        except OSError as exc:
            return f"cannot list the hot folder: {exc.strerror or exc}"
        return "the hot folder is empty while the queue has work for it" if empty and self.has_work() else None
