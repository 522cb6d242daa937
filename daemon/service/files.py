"""Writing and removing the agent's file, and making the folders the service needs at start."""

from __future__ import annotations

from pathlib import Path

from daemon.atomic import write_atomic
from daemon.errors import ServiceError

_MODE = 0o644
"""launchd refuses a group-writable plist, whatever the umask."""


def make_dirs(*paths: Path) -> None:
    """launchd cannot open StandardOutPath, and neither manager can chdir, into a missing folder."""
    try:
        for path in paths:
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceError(f"cannot create {exc.filename}: {exc.strerror}") from exc


def write_atomically(*, path: Path, data: bytes) -> None:
    """launchd/systemd must never read a half-written file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, mode=_MODE)
    except OSError as exc:
        raise ServiceError(f"cannot write {path}: {exc}") from exc


def remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise ServiceError(f"cannot remove {path}: {exc}") from exc
