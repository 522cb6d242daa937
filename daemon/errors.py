"""Every error this program raises on purpose, in one tree.

    CutoutError                      root: catch this to catch all of ours          exit status
    ├── ConfigError                  invalid settings or folders; start-up refuses  2
    ├── ModelLoadError               the model cannot be found, loaded or placed    3
    │                                on the device
    ├── ServiceError                 launchd / systemd could not do what was asked  4
    ├── QueueError                   the queue database cannot be opened (locked,   5
    │   │                            I/O, permissions): a restart may help
    │   └── QueueDamaged             it is damaged: a person must run               78
    │       │                        `cutout queue rebuild` (no restart)
    │       └── StoreIncomplete      PostgreSQL: tables gone under a current        78
    │                                schema record: `cutout queue init`
    └── JobError                     one input failed; `.reason` is its quarantine  1
                                     code
        ├── PermanentError           the file itself is the problem: quarantine at once
        │   ├── NoForeground         no_foreground
        │   ├── Undecodable          undecodable
        │   ├── Truncated            truncated
        │   ├── TooLarge             too_large
        │   ├── Unsupported          unsupported
        │   ├── ModelError           model_error
        │   ├── Crashed              crashed (the process died on it max_attempts times)
        │   ├── RetriesExhausted     internal_error (an unexpected error, max_attempts times)
        │   ├── Vanished             vanished (removed before it was processed; nothing to move)
        │   ├── InvalidName          invalid_name (not valid UTF-8: cannot be stored or named safely)
        │   ├── NameTooLong          name_too_long (its output or error report would exceed the name limit)
        │   ├── PathBlocked          output_blocked (a folder, link or non-file entry where its output must go;
        │   │                        after the usual attempts)
        │   ├── NameTaken            name_taken (a file of its recipes is named like another input's, or a folder)
        │   └── Rejected             rejected (a person rejected its doubtful cut-out: `cutout review reject`)
        └── TransientError           io_error: the machine is the problem, retry with backoff
            ├── DeviceError          device_error
            ├── DiskFull             disk_full
            ├── PermissionDenied     permission_denied
            ├── OutputMissing        output_missing
            ├── VolumeUnavailable    volume_unavailable (the hot folder's volume went away: wait for it)
            ├── FileChanged          file_changed (still being written: a verdict on it would be wrong)
            └── StoreUnavailable     store_unavailable (the job store was unreachable as the job ended)

Foreign exceptions (OpenCV, torch, OSError) are translated into this tree where
they happen, with `raise ... from exc`, so the worker decides quarantine or
retry from the class alone. A command that stops on one of the others exits with its
class's `exit_status` (docs/reasons.md's table): a service manager restarts on all but 78.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import ClassVar


class CutoutError(Exception):
    """Root of every error this program raises on purpose."""

    exit_status: ClassVar[int] = 2


class ConfigError(CutoutError):
    """The settings, the command line or the folders are not usable."""


class ModelLoadError(CutoutError):
    """The model could not be found, loaded or moved to its device."""

    exit_status: ClassVar[int] = 3


class ServiceError(CutoutError):
    """launchctl or systemctl failed, or the service manager is missing."""

    exit_status: ClassVar[int] = 4


class QueueError(CutoutError):
    """sqlite could not open or read the queue database; every sqlite error on opening becomes one of these."""

    exit_status: ClassVar[int] = 5


class QueueDamaged(QueueError):
    """The queue database cannot be trusted (sqlite's check failed, or it is not a database).

    Not a ConfigError: nothing in the settings is wrong. `exit_status` is EX_CONFIG from
    sysexits(3), "a person must act": service managers are told not to restart on it,
    since every restart would find the same damage.
    """

    exit_status: ClassVar[int] = 78
    remedy: ClassVar[str] = "rebuild"
    """The `cutout queue` command that mends it."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(path, problem)
        self.path, self.problem = path, problem

    def __str__(self) -> str:
        return self.explain(command=f"cutout queue {self.remedy} --config F")

    def explain(self, *, command: str) -> str:
        """The message, naming the exact command to run (the entry point knows the config file)."""
        return (
            f"the queue database {self.path} {self.problem}: refusing to use it. Run: {command} "
            "(it moves the file aside and rebuilds the queue from the output and quarantine folders: "
            "nothing is redone, nothing is lost)"
        )


class StoreIncomplete(QueueDamaged):
    """The PostgreSQL job store's schema record is current, but some of its tables are gone
    (dropped by hand, a partial restore): every daemon would fail on them."""

    remedy: ClassVar[str] = "init"

    def __init__(self, where: str, missing: list[str]) -> None:
        super().__init__(Path(where), f"lacks {', '.join(missing)}")
        self.where, self.missing = where, missing

    def explain(self, *, command: str) -> str:
        return (
            f"the PostgreSQL job store {self.where} says its schema is current, but {', '.join(self.missing)} "
            f"{'is' if len(self.missing) == 1 else 'are'} missing (dropped, or a partial restore): refusing to use it. "
            f"Run: {command} (it creates what is missing; what the dropped tables held is forgotten, so files "
            "whose jobs were lost are processed again)"
        )


class JobError(CutoutError):
    """One input failed. Subclasses name the quarantine reason code."""

    reason: ClassVar[str] = "error"
    transient: ClassVar[bool] = False
    retried_first: ClassVar[bool] = False
    """A permanent error tried again `queue.max_attempts` times (counted) before quarantine."""
    exit_status: ClassVar[int] = 1  # `cutout process`: some file failed


class PermanentError(JobError):
    """The input itself is at fault; retrying cannot help."""


class NoForeground(PermanentError):
    reason = "no_foreground"


class Undecodable(PermanentError):
    reason = "undecodable"


class Truncated(PermanentError):
    reason = "truncated"


class TooLarge(PermanentError):
    reason = "too_large"


class Unsupported(PermanentError):
    reason = "unsupported"


class ModelError(PermanentError):
    reason = "model_error"


class Crashed(PermanentError):
    reason = "crashed"


class RetriesExhausted(PermanentError):
    reason = "internal_error"


class Vanished(PermanentError):
    reason = "vanished"


class InvalidName(PermanentError):
    reason = "invalid_name"


class NameTooLong(PermanentError):
    reason = "name_too_long"


class PathBlocked(PermanentError):
    """Where one of its files (or their folders) must go there is a folder, a link, or another
    non-file entry. Tried again with the usual attempts (someone may move it), then quarantined."""

    reason = "output_blocked"
    retried_first = True


class NameTaken(PermanentError):
    """One of the files its recipes write would take a name that is not its own: another input's
    cut-out, or a folder or other non-file entry in the output folder."""

    reason = "name_taken"


class Rejected(PermanentError):
    """A person looked at its doubtful cut-out and rejected it (`cutout review reject`, the
    dashboard's Reject): the original goes to quarantine with the cut-out beside it."""

    reason = "rejected"


class TransientError(JobError):
    """The machine is at fault (device, disk, permissions); retry later."""

    reason = "io_error"
    transient = True


class DeviceError(TransientError):
    reason = "device_error"


class DiskFull(TransientError):
    reason = "disk_full"


class PermissionDenied(TransientError):
    reason = "permission_denied"


class OutputMissing(TransientError):
    reason = "output_missing"


class VolumeUnavailable(TransientError):
    reason = "volume_unavailable"


class FileChanged(TransientError):
    reason = "file_changed"


class StoreUnavailable(TransientError):
    """The job store could not be reached while the job ended (a database restart, a network
    cut): the work is redone when it is back; the file is not at fault."""

    reason = "store_unavailable"


_OS_ERRORS: dict[int, type[TransientError]] = {
    errno.ENOSPC: DiskFull,
    errno.EDQUOT: DiskFull,
    errno.EACCES: PermissionDenied,
    errno.EPERM: PermissionDenied,
    errno.EROFS: PermissionDenied,
    errno.ENOENT: OutputMissing,
}


def from_os_error(exc: OSError, *, doing: str) -> JobError:
    """Translate an OSError raised while writing into the error it means: retryable, except a
    name the file system cannot hold, which no retry will ever fix."""
    kind: type[JobError] = NameTooLong if exc.errno == errno.ENAMETOOLONG else _OS_ERRORS.get(exc.errno or 0, TransientError)
    error = kind(f"{doing}: {exc.strerror or exc}")
    error.__cause__ = exc
    return error


_SQLITE_DAMAGE = frozenset({11, 26})
"""SQLITE_CORRUPT ("database disk image is malformed") and SQLITE_NOTADB ("file is not a
database"): the file's bytes are wrong, and no restart changes that."""


def reason_codes() -> list[str]:
    """Every quarantine reason code, from the tree itself (what `cutout retry --reason` takes)."""
    found, todo = set(), list(JobError.__subclasses__())
    while todo:
        cls = todo.pop()
        found.add(cls.reason)
        todo.extend(cls.__subclasses__())
    return sorted(found - {JobError.reason})


def is_queue_damage(exc: BaseException) -> bool:
    """Whether an exception says the queue file itself is damaged: sqlite's own error, or ours."""
    if isinstance(exc, QueueDamaged):
        return True
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # extended codes keep the primary one in the low byte
    return isinstance(exc, sqlite3.DatabaseError) and code in _SQLITE_DAMAGE


def from_sqlite_error(exc: BaseException, *, path: Path) -> QueueError:
    """Translate an sqlite3 error on the queue file: damage, or a failure a restart may fix."""
    if isinstance(exc, QueueError):
        return exc  # translated already
    error: QueueError
    if is_queue_damage(exc):
        error = QueueDamaged(path, f"is damaged (sqlite: {exc})")
    else:
        error = QueueError(
            f"cannot use the queue database {path}: {exc}: check the state folder's disk, free space and "
            "permissions (cutout doctor --config F)"
        )
    error.__cause__ = exc
    return error
