"""Durable, all-or-nothing file writes.

A reader (a person, Finder, a catalogue app) must never see a partial PNG at its
final name, even after `kill -9` or power loss: the bytes go to a temp file in the
destination folder, are flushed to the disk, and only then take the final name
with `os.replace`, which is atomic within one filesystem.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

try:
    from fcntl import F_FULLFSYNC as _F_FULLFSYNC  # type: ignore[attr-defined]  # macOS only
except ImportError:
    _F_FULLFSYNC = None

TEMP_PREFIX = ".cutout-"
TEMP_SUFFIX = ".tmp"
"""Temp names start with a dot (ignored by the watcher, hidden in Finder) and end in .tmp."""


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


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` holds either the old or the new bytes, never a mix."""
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            sync_file(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)
