"""What every service manager installs: the host facts, the agent's spec and what came of it.

Pure data and checks, shared by launchd.py and systemd.py so both run the same command
with the same environment, and by the callers, which only ever see these types.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from daemon.errors import ConfigError, ServiceError

DEFAULT_LABEL = "com.cutout.daemon"
LOG_FILE_NAME = "cutout.log"
"""The daemon's rotated JSON log in the agent's log folder (stdout.log/stderr.log sit beside it)."""

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
MACOS_PATH = f"/opt/homebrew/bin:{SYSTEM_PATH}"
"""Homebrew's folder on Apple silicon Macs; nowhere on Linux."""
"""launchd hands jobs only /usr/bin:/bin:/usr/sbin:/sbin; Homebrew's prefixes are added for tools."""

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PATH_FIELDS = ("python", "config", "log_dir", "working_dir", "hf_home", "log_file")


@dataclass(frozen=True, kw_only=True)
class Host:
    """What the command-line entry read about this machine and user, passed down, never re-read."""

    system: str  # platform.system(): "Darwin", "Linux", ...
    machine: str  # platform.machine(): "arm64", "x86_64" (also under Rosetta), ...
    home: Path
    uid: int
    python: Path  # sys.executable made absolute, symlinks kept (see _current_python)

    @property
    def is_macos(self) -> bool:
        return self.system == "Darwin"


@dataclass(frozen=True)
class AgentSpec:
    """Everything that differs between installations of the agent (or unit)."""

    label: str
    python: Path
    config: Path
    log_dir: Path
    working_dir: Path
    path_env: str
    hf_home: Path
    offline: bool
    log_file: Path  # the daemon's own size-rotated JSON log (`watch --log-file`)


@dataclass(frozen=True)
class ServiceChange:
    """What an install/uninstall did or, with dry_run, would do."""

    path: Path
    content: str | None  # the file's new text; None when the file is removed
    commands: tuple[str, ...]  # shell-quoted, in order
    dry_run: bool

    def lines(self) -> list[str]:
        action = "write" if self.content is not None else "remove"
        prefix = "would " if self.dry_run else ""
        return [
            f"{prefix}{action} {self.path}",
            *(f"{prefix}run {c}" for c in self.commands),
        ]


@dataclass(frozen=True)
class AgentStatus:
    """What the manager says of one label: the same fields for launchd and systemd."""

    installed: bool  # the agent's file (plist or unit) exists
    loaded: bool  # the service manager knows the job
    state: str | None  # e.g. "running", "not running"
    pid: int | None
    last_exit_status: int | None


# --- the spec ---------------------------------------------------------------------------


def default_spec(
    *,
    config: Path,
    label: str = DEFAULT_LABEL,
    offline: bool,
    home: Path,
    python: Path | None = None,
    log_dir: Path | None = None,
    hf_home: Path | None = None,
    macos: bool = True,
) -> AgentSpec:
    """The spec for `python` (default: this interpreter); override more with dataclasses.replace.
    `macos`: the service's PATH has Homebrew's folder; on Linux it has none."""
    python = python or _current_python()
    log_dir = log_dir or home / "Library" / "Logs" / label
    return AgentSpec(
        label=label,
        python=python,
        config=Path(os.path.abspath(config)),
        log_dir=log_dir,
        # Ours, always present after install and never TCC-protected, unlike a config's folder.
        working_dir=log_dir,
        path_env=f"{python.parent}{os.pathsep}{MACOS_PATH if macos else SYSTEM_PATH}",
        hf_home=hf_home or home / ".cache" / "huggingface",
        offline=offline,
        log_file=log_dir / LOG_FILE_NAME,
    )


def default_log_dir(*, host: Host, label: str) -> Path:
    """~/Library/Logs/<label> on macOS (Console.app shows it); the XDG state folder elsewhere."""
    if host.is_macos:
        return host.home / "Library" / "Logs" / label
    return host.home / ".local" / "state" / label / "log"


def _current_python() -> Path:
    # abspath, not resolve(): a venv's python is a symlink, and only the venv path
    # makes the interpreter pick up the venv's site-packages.
    if not sys.executable:
        raise ServiceError(
            "cannot tell which Python runs this process (sys.executable is empty)"
        )
    return Path(os.path.abspath(sys.executable))


def privacy_grant_target(spec: AgentSpec) -> Path:
    """The binary to give Full Disk Access (or folder access) to in System Settings."""
    return grant_target(spec.python)


def grant_target(python: Path) -> Path:
    """The real file behind a (venv) interpreter path: TCC grants belong to it, not the symlink.

    A launchd job has no parent app, so macOS privacy (TCC) judges the binary launchd
    starts, resolved. Without a grant, reads in protected folders fail with EPERM and no
    dialog; the grant must be renewed when this path changes (Python upgrade, new venv).
    """
    return Path(os.path.realpath(python))


# --- what both managers run -------------------------------------------------------------


def program_arguments(spec: AgentSpec) -> list[str]:
    """`cutout watch` as the service runs it: absolute interpreter, config and log file."""
    return [
        str(spec.python), "-m", "daemon", "watch",
        "--config", str(spec.config),
        "--log-file", str(spec.log_file),
    ]


def environment(
    spec: AgentSpec, *, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The service's variables: neither manager passes on the login shell's.

    `extra` (a manager's own) comes before HF_HUB_OFFLINE, which is set only offline.
    """
    env = {"PATH": spec.path_env, "HF_HOME": str(spec.hf_home), "PYTHONUNBUFFERED": "1"}
    env |= extra or {}
    return env | ({"HF_HUB_OFFLINE": "1"} if spec.offline else {})


# --- checks -----------------------------------------------------------------------------


def check_label(label: str) -> str:
    """The label, if it is safe as a file name and a launchd/systemd target."""
    if not _LABEL.fullmatch(label):
        raise ConfigError(f"invalid service label {label!r}: use letters, digits, '.', '_', '-'")
    return label


def check_spec(spec: AgentSpec) -> None:
    """Refuse a spec that would render into a file pointing somewhere else, or a broken one."""
    check_label(spec.label)
    for name in _PATH_FIELDS:
        _check_absolute(name=name, path=getattr(spec, name))
    _check_one_line(name="path_env", value=spec.path_env)


def _check_absolute(*, name: str, path: Path) -> None:
    # launchd and systemd resolve nothing against a shell's cwd: a relative path would
    # silently point somewhere else once the service runs.
    if not path.is_absolute():
        raise ConfigError(f"{name} must be an absolute path, got {str(path)!r}")
    _check_one_line(name=name, value=str(path))


def _check_one_line(*, name: str, value: str) -> None:
    # A newline would inject directives into the systemd unit; control characters are
    # not valid in plist XML either.
    if any(ord(ch) < 0x20 for ch in value):
        raise ConfigError(f"{name} contains a control character: {value!r}")
