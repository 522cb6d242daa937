"""Running launchctl / systemctl: the one side effect besides writing files.

Both are found on PATH at each call, never at construction, so a dry run works where the
tool is missing and tests put fake executables first on PATH: that is the seam.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence

from daemon.errors import ServiceError

_TIMEOUT_S = 120.0
"""`launchctl bootout` waits for the job to exit, up to ExitTimeOut (60 s); `systemctl restart` likewise."""


class CommandFailedError(ServiceError):
    """A launchctl/systemctl command ran and exited non-zero."""

    def __init__(self, *, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = stderr.strip() or "(no stderr)"
        super().__init__(
            f"`{shlex.join(argv)}` failed with exit code {returncode}: {detail}"
        )


class Tool:
    """One executable found on PATH, run with captured output; `prefix` goes before every argument list."""

    def __init__(
        self, *, name: str, missing_hint: str, prefix: Sequence[str] = ()
    ) -> None:
        self._name = name
        self._missing_hint = missing_hint
        self._prefix = tuple(prefix)

    def run(self, args: Sequence[str]) -> str:
        """Run the tool with args; its stdout, or CommandFailedError on a non-zero exit."""
        argv = [self._executable(), *self._prefix, *args]
        result = _spawn(argv)
        if result.returncode != 0:
            raise CommandFailedError(
                argv=[self._name, *self._prefix, *args],
                returncode=result.returncode,
                stderr=result.stderr,
            )
        return result.stdout

    def run_all(self, steps: Sequence[Sequence[str]]) -> None:
        for args in steps:
            self.run(args)

    def display(self, args: Sequence[str]) -> str:
        """The command as a person would type it (what dry runs and reports show)."""
        return shlex.join([self._name, *self._prefix, *args])

    def ensure_available(self) -> None:
        """Raise ServiceError now if the tool is missing, before anything is written."""
        self._executable()

    def _executable(self) -> str:
        found = shutil.which(self._name)
        if found is None:
            raise ServiceError(f"{self._name} not found on PATH: {self._missing_hint}")
        return found


def _spawn(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(
            f"`{shlex.join(argv)}` did not finish in {exc.timeout:.0f} s"
        ) from exc
    except OSError as exc:
        raise ServiceError(f"cannot run `{shlex.join(argv)}`: {exc}") from exc


def leading_int(value: str | None) -> int | None:
    """The number a tool's status field starts with: "78: EX_CONFIG" -> 78; "(never exited)" -> None."""
    match = re.match(r"-?\d+", value or "")
    return int(match.group(0)) if match else None
