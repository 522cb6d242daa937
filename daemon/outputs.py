"""The folders, and every file operation the daemon makes in them.

Nothing here deletes an original except `originals: delete`, and only after its
cutout is on disk. Failed originals move to the quarantine folder at the same
relative path, with `<name>.error.json` beside them.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from daemon import __version__
from daemon.atomic import TEMP_PREFIX, TEMP_SUFFIX, sync_dir, sync_file, write_atomic
from daemon.errors import ConfigError, from_os_error
from daemon.settings import FolderSettings, OriginalsPolicy

ERROR_SUFFIX = ".error.json"


@dataclass(frozen=True)
class Folders:
    """Absolute, validated folders of one daemon."""

    input: Path
    output: Path
    quarantine: Path
    archive: Path
    state: Path

    @classmethod
    def from_settings(cls, settings: FolderSettings, *, default_state: Path) -> Folders:
        if settings.input is None or settings.output is None:
            missing = "folders.input" if settings.input is None else "folders.output"
            raise ConfigError(f"{missing} is not set: give it in the config file or with --{missing.split('.')[1]}")
        output = _absolute(settings.output)
        return cls(
            input=_absolute(settings.input),
            output=output,
            quarantine=_absolute(settings.quarantine or output.parent / "quarantine"),
            archive=_absolute(settings.archive or output.parent / "archive"),
            state=_absolute(settings.state or default_state),
        )


def _absolute(path: Path) -> Path:
    """Absolute with symlinks resolved: FSEvents reports real paths (/private/tmp, ...)."""
    return Path(os.path.realpath(path.expanduser()))


def _nested(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def validate_folders(folders: Folders, *, policy: OriginalsPolicy) -> None:
    """Refuse what would loop or lose files: nesting, a missing or read-only folder."""
    if not folders.input.is_dir():
        raise ConfigError(f"folders.input: hot folder {folders.input} does not exist (create it first)")
    named = {"output": folders.output, "quarantine": folders.quarantine}
    if policy == "archive":
        named["archive"] = folders.archive
    for name, path in named.items():
        if _nested(path, folders.input):
            raise ConfigError(
                f"folders.{name}: {path} is inside the hot folder {folders.input} (or contains it); "
                "outputs would be picked up as new inputs: choose a folder outside it"
            )
    for name, path in {**named, "input": folders.input, "state": folders.state}.items():
        _ensure_writable(name, path)


def _ensure_writable(name: str, path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"folders.{name}: cannot create {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"folders.{name}: {path} is not writable by this user")


# --- Moves -----------------------------------------------------------------------
def free_name(path: Path) -> Path:
    """`path`, or `name (2).ext`, `name (3).ext`, ... if something is already there."""
    candidate, count = path, 2
    while candidate.exists() or candidate.with_name(candidate.name + ERROR_SUFFIX).exists():
        candidate = path.with_name(f"{path.stem} ({count}){path.suffix}")
        count += 1
    return candidate


def move_file(source: Path, target: Path) -> None:
    """Rename when on one filesystem; else copy to a temp name, flush, rename, then remove the source.

    Either way the target name only ever holds the whole file, and the source goes
    only once the copy is durable.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_across(source, target)
        source.unlink()
    sync_dir(target.parent)


def _copy_across(source: Path, target: Path) -> None:
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    try:
        shutil.copy2(source, temp)
        with open(temp, "rb") as handle:
            sync_file(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ErrorReport:
    """What `<name>.error.json` says about a quarantined file."""

    file: str
    reason: str
    message: str
    attempts: int
    first_seen: float
    last_attempt: float

    def to_json(self, *, quarantined_as: Path) -> bytes:
        body = {
            "file": self.file,
            "quarantined_as": str(quarantined_as),
            "reason": self.reason,
            "message": self.message,
            "attempts": self.attempts,
            "first_seen": _iso(self.first_seen),
            "last_attempt": _iso(self.last_attempt),
            "version": __version__,
        }
        return (json.dumps(body, indent=2) + "\n").encode()


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def error_file(path: Path) -> Path:
    return path.with_name(path.name + ERROR_SUFFIX)


def quarantine_target(folders: Folders, rel: PurePosixPath, *, previous: PurePosixPath | None) -> PurePosixPath:
    """Where a failed original goes, relative to the quarantine folder.

    A retried file that fails again goes back to its previous place (its error file is
    rewritten); anything else never overwrites: `name (2).ext`, ...
    """
    if previous is not None and not (folders.quarantine / previous).exists():
        return previous
    return PurePosixPath(free_name(folders.quarantine / rel).relative_to(folders.quarantine).as_posix())


def move_to_quarantine(folders: Folders, rel: PurePosixPath, target: PurePosixPath, report: ErrorReport) -> None:
    """The original to quarantine/target, then `<target>.error.json` beside it."""
    destination = folders.quarantine / target
    try:
        move_file(folders.input / rel, destination)
        write_atomic(error_file(destination), report.to_json(quarantined_as=destination))
    except OSError as exc:
        raise from_os_error(exc, doing=f"quarantining {rel} to {destination}") from exc


def restore_from_quarantine(folders: Folders, *, quarantined: PurePosixPath, source: PurePosixPath) -> None:
    """`cutout retry`: the original goes back into the hot folder at its old place."""
    target = folders.input / source
    if not (folders.quarantine / quarantined).exists():
        raise ConfigError(f"cannot retry {quarantined}: it is no longer in {folders.quarantine}")
    if target.exists():
        raise ConfigError(f"cannot retry {quarantined}: {target} exists again in the hot folder")
    try:
        move_file(folders.quarantine / quarantined, target)
    except OSError as exc:
        raise ConfigError(f"cannot move {folders.quarantine / quarantined} back to {target}: {exc}") from exc


def write_output(folders: Folders, rel: PurePosixPath, png: bytes) -> Path:
    """The cutout, atomically at its final name (missing subfolders created)."""
    if not folders.output.is_dir():
        raise from_os_error(FileNotFoundError(2, "output folder is missing"), doing=f"writing {folders.output}")
    path = folders.output / rel
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, png)
    except OSError as exc:
        raise from_os_error(exc, doing=f"writing {path}") from exc
    return path


def apply_originals_policy(folders: Folders, rel: PurePosixPath, *, policy: OriginalsPolicy) -> Path | None:
    """After a durable cutout: keep, archive or delete the original; where it now is."""
    source = folders.input / rel
    if policy == "keep" or not source.exists():
        return source if source.exists() else None
    try:
        if policy == "delete":
            source.unlink()
            sync_dir(source.parent)
            return None
        target = free_name(folders.archive / rel)
        move_file(source, target)
        return target
    except OSError as exc:
        raise from_os_error(exc, doing=f"applying originals: {policy} to {source}") from exc


def forget_error_file(folders: Folders, quarantined: PurePosixPath | None) -> None:
    """A retried file succeeded: its old error report goes."""
    if quarantined is not None:
        error_file(folders.quarantine / quarantined).unlink(missing_ok=True)
