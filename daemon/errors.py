"""Every error this program raises on purpose, in one tree.

    CutoutError                      root: catch this to catch all of ours
    ├── ConfigError                  invalid settings or folders; start-up refuses
    ├── ModelLoadError               the model cannot be found, loaded or placed on the device
    ├── ServiceError                 launchd / systemd could not do what was asked
    └── JobError                     one input failed; `.reason` is its quarantine code
        ├── PermanentError           the file itself is the problem: quarantine at once
        │   ├── NoForeground         no_foreground
        │   ├── Undecodable          undecodable
        │   ├── Truncated            truncated
        │   ├── TooLarge             too_large
        │   ├── Unsupported          unsupported
        │   ├── ModelError           model_error
        │   ├── Crashed              crashed (the process died on it max_attempts times)
        │   ├── RetriesExhausted     internal_error (an unexpected error, max_attempts times)
        │   └── Vanished             vanished (removed before it was processed; nothing to move)
        └── TransientError           io_error: the machine is the problem, retry with backoff
            ├── DeviceError          device_error
            ├── DiskFull             disk_full
            ├── PermissionDenied     permission_denied
            ├── OutputMissing        output_missing
            └── FileChanged          file_changed (still being written: a verdict on it would be wrong)

Foreign exceptions (OpenCV, torch, OSError) are translated into this tree where
they happen, with `raise ... from exc`, so the worker decides quarantine or
retry from the class alone.
"""

from __future__ import annotations

import errno
from typing import ClassVar


class CutoutError(Exception):
    """Root of every error this program raises on purpose."""


class ConfigError(CutoutError):
    """The settings, the command line or the folders are not usable."""


class ModelLoadError(CutoutError):
    """The model could not be found, loaded or moved to its device."""


class ServiceError(CutoutError):
    """launchctl or systemctl failed, or the service manager is missing."""


class JobError(CutoutError):
    """One input failed. Subclasses name the quarantine reason code."""

    reason: ClassVar[str] = "error"
    transient: ClassVar[bool] = False


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


class FileChanged(TransientError):
    reason = "file_changed"


_OS_ERRORS: dict[int, type[TransientError]] = {
    errno.ENOSPC: DiskFull,
    errno.EDQUOT: DiskFull,
    errno.EACCES: PermissionDenied,
    errno.EPERM: PermissionDenied,
    errno.EROFS: PermissionDenied,
    errno.ENOENT: OutputMissing,
}


def from_os_error(exc: OSError, *, doing: str) -> TransientError:
    """Translate an OSError raised while writing into the retryable error it means."""
    kind = _OS_ERRORS.get(exc.errno or 0, TransientError)
    error = kind(f"{doing}: {exc.strerror or exc}")
    error.__cause__ = exc
    return error
