"""One daemon (or one fleet) per hot folder and output folder, claimed on the folders themselves.

The state folder's lock keeps two daemons off one queue; it cannot see a second daemon started
with another state folder on the same hot and output folders, which would process every file
twice and write over the first one's cut-outs. So each folder gets a claim file,
`.cutout-claim.json` (hidden: the watcher, the rebuild and Finder pass it by):

    {"what": "cutout watch", "host": "studio-mini", "pid": 4242, "state": "/Users/me/.cutout",
     "fleet": null, "since": 1796528739.2}

- **Taken atomically**: written under a temp name, then hard-linked to the claim's name (which
  fails if it exists, on local disks and NFS alike; `O_EXCL` where links are not supported).
- **Shared by a fleet**: daemons on one PostgreSQL store carry its id (`fleet`) and share the
  claim; none removes it on exit (the others go on), it goes stale when none refreshes it.
- **Refreshed** (its mtime) every REFRESH_SECONDS while held, **released** (removed) on exit.
- **Stale**: its process is gone (same host, the pid checked), or nobody refreshed it for
  STALE_SECONDS (another host, where a pid means nothing). A stale claim is moved aside and
  taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from daemon.atomic import FILE_MODE, process_alive
from daemon.errors import ConfigError

CLAIM_FILE = ".cutout-claim.json"
REFRESH_SECONDS = 30.0
STALE_SECONDS = 120.0
"""Four missed refreshes: a claim from another machine this old is a dead daemon's."""


@dataclass(frozen=True, kw_only=True)
class Claimant:
    """Who holds (or wants) a folder."""

    what: str  # "cutout watch", "cutout process"
    host: str
    pid: int
    state: str | None
    fleet: str | None  # the PostgreSQL store's id: the daemons of one fleet share their folders
    since: float

    @classmethod
    def this_process(cls, *, what: str, state: Path | None = None, fleet: str | None = None) -> Claimant:
        return cls(what=what, host=socket.gethostname(), pid=os.getpid(), state=str(state) if state else None,
                   fleet=fleet, since=time.time())

    def shares_with(self, other: Claimant) -> bool:
        """This process itself, or a daemon of the same fleet."""
        same_process = (self.host, self.pid) == (other.host, other.pid)
        return same_process or (self.fleet is not None and self.fleet == other.fleet)

    def describe(self) -> str:
        started = datetime.fromtimestamp(self.since).strftime("%Y-%m-%d %H:%M")
        where = f", state folder {self.state}" if self.state else ""
        fleet = f", fleet {self.fleet[:8]}" if self.fleet else ""
        return f"{self.what} (pid {self.pid} on {self.host}{where}{fleet}, since {started})"


class FolderClaims:
    """The claims of one process on its folders: all taken, or none."""

    def __init__(self, folders: dict[str, Path], *, claimant: Claimant, clock: Callable[[], float] = time.time) -> None:
        self.folders, self.claimant, self.clock = folders, claimant, clock
        self._mine: list[Path] = []  # claim files this process created (removed on release)
        self._held: list[Path] = []  # every claim file it holds, shared ones too (refreshed)
        self._refreshed = 0.0

    def __enter__(self) -> FolderClaims:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            for name, folder in self.folders.items():
                if folder.is_dir():
                    self._take(name, folder / CLAIM_FILE)
        except BaseException:
            self.release()
            raise
        self._refreshed = self.clock()

    def check(self) -> None:
        """Refuse now, changing nothing, when a live claimant this one cannot share with holds a
        folder (before a model loads for seconds only to be refused)."""
        for name, folder in self.folders.items():
            path = folder / CLAIM_FILE
            holder = _read(path)
            if holder is not None and not self.claimant.shares_with(holder) and not _stale(path, holder, now=self.clock()):
                raise ConfigError(_refusal(name, folder, holder))

    def refresh(self) -> None:
        """Touch the claims when due: a claim nobody refreshes goes stale (a dead host's)."""
        if self.clock() - self._refreshed < REFRESH_SECONDS:
            return
        self._refreshed = self.clock()
        for path in self._held:
            try:
                os.utime(path)
            except OSError:
                pass  # a NAS gone for a moment: the next refresh tries again

    def release(self) -> None:
        for path in self._mine:
            if _read(path) == self.claimant:  # never another's that took over a claim thought stale
                path.unlink(missing_ok=True)
        self._mine, self._held = [], []

    def _take(self, name: str, path: Path) -> None:
        for _ in range(3):  # a stale claim broken by two at once: one of them wins the next round
            if _create(path, self.claimant):
                self._mine.append(path)
                self._held.append(path)
                return
            holder = _read(path)
            if holder is not None and self.claimant.shares_with(holder):
                self._held.append(path)
                return
            if holder is not None and not _stale(path, holder, now=self.clock()):
                raise ConfigError(_refusal(name, path.parent, holder))
            _move_aside(path)
        raise ConfigError(f"could not claim the {name} folder {path.parent}: its claim file {path} keeps changing")


def _create(path: Path, claimant: Claimant) -> bool:
    """Write the claim under a temp name and link it into place: False if a claim is there."""
    temp = path.with_name(f"{CLAIM_FILE}.{uuid.uuid4().hex}.tmp")
    temp.write_text(json.dumps(asdict(claimant)), encoding="utf-8")
    os.chmod(temp, FILE_MODE)
    try:
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links (some SMB shares): O_EXCL instead
        return _create_exclusive(path, temp.read_bytes())
    finally:
        temp.unlink(missing_ok=True)


def _create_exclusive(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return True


def _read(path: Path) -> Claimant | None:
    """The claim's holder; None when it is gone or unreadable (a half-written one is stale)."""
    try:
        return Claimant(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _stale(path: Path, holder: Claimant, *, now: float) -> bool:
    if holder.host == socket.gethostname():
        return not process_alive(holder.pid)
    try:
        return now - path.stat().st_mtime > STALE_SECONDS
    except FileNotFoundError:
        return True


def _move_aside(path: Path) -> None:
    """A stale claim out of the way (renamed, then removed: two takers cannot both remove one)."""
    aside = path.with_name(f"{CLAIM_FILE}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another taker moved it first
    aside.unlink(missing_ok=True)


def _refusal(name: str, folder: Path, holder: Claimant) -> str:
    return (
        f"the {name} folder {folder} is already claimed by {holder.describe()}: two daemons on one folder would "
        "process every file twice and write over each other's cut-outs. Stop that one first (cutout service "
        "uninstall, or Ctrl-C where it runs), or give this one other folders; several machines on one folder "
        "share a PostgreSQL job store (queue.store: postgresql)"
    )

