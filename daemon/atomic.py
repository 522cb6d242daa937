"""Durable, all-or-nothing file writes.

A reader (a person, Finder, a catalogue app) must never see a partial PNG at its
final name, even after `kill -9` or power loss: the bytes go to a temp file in the
destination folder, are flushed to the disk, and only then take the final name
with `os.replace`, which is atomic within one filesystem.

Modes: what the daemon writes for people (cutouts, `.error.json`) follows the
user's umask, as any other program's files would; what it keeps for itself (the
state folder) is private to the user.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    from fcntl import F_FULLFSYNC as _F_FULLFSYNC  # type: ignore[attr-defined]  # macOS only
except ImportError:
    _F_FULLFSYNC = None


def _read_umask() -> int:
    """The process's umask. Reading it means setting it, so this runs once, at import, while
    the program is still single-threaded: a thread creating a file in between would get the
    temporary mask."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK
"""Mode of the files written for people: what `touch` or a copy in Finder would give (0644 by
default). mkstemp's temp files are 0600, and a cutout or error file must not stay that way."""
PRIVATE_DIR_MODE = 0o700
"""The state folder: the queue, the lock and the model pin are nobody else's business."""

TEMP_PREFIX = ".cutout-"
TEMP_SUFFIX = ".tmp"
"""Temp names start with a dot (ignored by the watcher, hidden in Finder) and end in .tmp."""
STALE_TEMP_SECONDS = 3600.0
"""A temp file this old is abandoned whoever wrote it: a write takes seconds, and a writer
frozen this long has lost its claim (its rename is fenced by the store)."""
HOST_TAG = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
_WRITER = re.compile(r"\.cutout-(\d+)@([A-Za-z0-9-]+)-")


def temp_prefix() -> str:
    """`.cutout-<pid>@<host>-`: each temp name says who writes it, so that a sweep removes only
    what a dead writer left (several daemons of a fleet share one output folder)."""
    return f"{TEMP_PREFIX}{os.getpid()}@{HOST_TAG}-"


def sync_file(fd: int) -> None:
    """Flush to stable storage: on macOS plain fsync leaves data in the drive cache."""
    if _F_FULLFSYNC is not None:
        import fcntl

        try:
            fcntl.fcntl(fd, _F_FULLFSYNC)
            return
        except OSError:  # some filesystems (SMB, exFAT) refuse F_FULLFSYNC; fsync still helps
            pass
    os.fsync(fd)


def sync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not supported on this filesystem; the rename itself is still atomic
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = FILE_MODE, durable: bool = True) -> None:
    """Write `data` to `path` so that `path` holds either the old or the new bytes, never a mix.

    `mode` defaults to the umask's; a caller whose reader demands a fixed mode (launchd
    refuses a group-writable plist) passes it. `durable=False` skips the flushes, for a
    file that must never be seen half-written but need not survive a power cut."""
    with staged(path, data, mode=mode, durable=durable) as temp:
        os.replace(temp, path)
    if durable:
        sync_dir(path.parent)


@contextmanager
def staged(path: Path, data: bytes, *, mode: int = FILE_MODE, durable: bool = True) -> Iterator[Path]:
    """`data` complete on the disk under a temp name beside `path`, for the block to rename into
    place when it decides to (the daemon: only if its claim on the job still holds). Whatever
    is left at the temp name when the block ends is removed."""
    fd, temp = tempfile.mkstemp(prefix=temp_prefix(), suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                sync_file(handle.fileno())
        os.chmod(temp, mode)
        yield Path(temp)
    finally:
        Path(temp).unlink(missing_ok=True)


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def sweep_temp_files(root: Path, *, now: float | None = None) -> int:
    """Remove the temp files that killed writers left behind (never a final name, never the
    file a live writer is still writing, on this machine or another)."""
    removed, now = 0, time.time() if now is None else now
    for folder, _, names in os.walk(root):
        for name in names:
            if is_temp_name(name) and _abandoned(Path(folder) / name, now=now):
                (Path(folder) / name).unlink(missing_ok=True)
                removed += 1
    return removed


def _abandoned(path: Path, *, now: float) -> bool:
    """Untagged (an earlier version's), or its writer on this machine is gone, or too old."""
    writer = _WRITER.match(path.name)
    if writer is None:
        return True
    try:
        if now - path.lstat().st_mtime > STALE_TEMP_SECONDS:
            return True
    except FileNotFoundError:
        return False  # its writer just renamed or removed it
    return writer[2] == HOST_TAG and not process_alive(int(writer[1]))


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def make_private_dir(path: Path) -> None:
    """Create `path` (and missing parents) with the last folder 0700; an existing folder is left as it is."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)


def access_problem(path: Path, *, folder: bool = False) -> str | None:
    """Why this user cannot read and write `path` (and enter it, for a `folder`), with the
    command that fixes it; None when it can. `path` must exist."""
    if os.access(path, os.R_OK | os.W_OK | (os.X_OK if folder else 0)):
        return None
    info = path.stat()
    me, mode = _user_name(os.geteuid()), f"{stat.S_IMODE(info.st_mode):04o}"
    if info.st_uid != os.geteuid():
        recursive = "-R " if folder else ""
        return (
            f"{path} belongs to {_user_name(info.st_uid)} (mode {mode}) and this program runs as {me}, "
            f"so it cannot write {'in ' if folder else ''}it (was cutout once run with sudo?): "
            f"fix it with: sudo chown {recursive}{me} '{path}'"
        )
    bits = "u+rwx" if folder else "u+rw"
    needed = (stat.S_IRWXU if folder else stat.S_IRUSR | stat.S_IWUSR)
    if info.st_mode & needed != needed:
        return f"{path} has mode {mode}, which keeps its owner {me} from writing it: fix it with: chmod {bits} '{path}'"
    # The owner may write, yet cannot: an immutable flag or a read-only volume.
    unlock = "chflags nouchg" if sys.platform == "darwin" else "chattr -i"
    return (
        f"{path} is locked (an immutable flag, or a read-only volume) and cannot be written: "
        f"fix it with: {unlock} '{path}' (or, on a read-only volume, choose another folder)"
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without an account (e.g. files from another machine)
        return f"uid {uid}"
