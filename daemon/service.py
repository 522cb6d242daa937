"""Install the daemon as a per-user service: a launchd LaunchAgent (macOS) or a systemd user unit.

Rendering is pure. The only side effects are writing the agent/unit file and running
`launchctl` / `systemctl`, both found on PATH: that is the seam tests replace with fakes.

Privacy (TCC) on macOS: a launchd job has no parent app, so the grant for protected folders
(Desktop, Documents, Downloads, iCloud Drive, removable and network volumes) belongs to the
binary launchd starts, resolved: `privacy_grant_target(spec)`, i.e. `os.path.realpath` of the
venv's python. Without it reads fail with EPERM and no dialog; the grant must be renewed when
that path changes (Python upgrade, new venv).
"""

from __future__ import annotations

import importlib
import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

from daemon.atomic import write_atomic
from daemon.errors import QueueDamaged, ServiceError

DEFAULT_LABEL = "com.cutout.daemon"
LOG_FILE_NAME = "cutout.log"
"""The daemon's rotated JSON log in the agent's log folder (stdout.log/stderr.log sit beside it)."""

_TEMPLATE_PACKAGE = "launchd"
_TEMPLATE_NAME = "cutout.plist"
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# launchd hands jobs only /usr/bin:/bin:/usr/sbin:/sbin; add Homebrew's prefixes for tools.
_SYSTEM_PATH = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
# `bootout` waits for the job to exit, up to ExitTimeOut (60 s); `systemctl restart` likewise.
_TOOL_TIMEOUT_S = 120.0
_BOOTOUT_ATTEMPTS = 5
_BOOTOUT_PAUSE_S = 0.5


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
    installed: bool  # the plist exists
    loaded: bool  # launchd knows the job
    state: str | None  # e.g. "running", "not running"
    pid: int | None
    last_exit_status: int | None


# --- spec -------------------------------------------------------------------------------


def default_spec(
    *,
    config: Path,
    label: str = DEFAULT_LABEL,
    offline: bool,
    home: Path,
    python: Path | None = None,
    log_dir: Path | None = None,
    hf_home: Path | None = None,
) -> AgentSpec:
    """The spec for `python` (default: this interpreter); override more with dataclasses.replace."""
    python = python or _current_python()
    log_dir = log_dir or home / "Library" / "Logs" / label
    return AgentSpec(
        label=label,
        python=python,
        config=Path(os.path.abspath(config)),
        log_dir=log_dir,
        # Ours, always present after install and never TCC-protected, unlike a config's folder.
        working_dir=log_dir,
        path_env=f"{python.parent}{os.pathsep}{_SYSTEM_PATH}",
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
    """The real file behind a (venv) interpreter path: TCC grants belong to it, not the symlink."""
    return Path(os.path.realpath(python))


def check_label(label: str) -> str:
    """The label, if it is safe as a file name and a launchd/systemd target."""
    if not _LABEL.fullmatch(label):
        raise ServiceError(
            f"invalid service label {label!r}: use letters, digits, '.', '_', '-'"
        )
    return label


def _check_spec(spec: AgentSpec) -> None:
    check_label(spec.label)
    for name in ("python", "config", "log_dir", "working_dir", "hf_home", "log_file"):
        _check_absolute(name=name, path=getattr(spec, name))
    _check_one_line(name="path_env", value=spec.path_env)


def _check_absolute(*, name: str, path: Path) -> None:
    # launchd and systemd resolve nothing against a shell's cwd: a relative path would
    # silently point somewhere else once the service runs.
    if not path.is_absolute():
        raise ServiceError(f"{name} must be an absolute path, got {str(path)!r}")
    _check_one_line(name=name, value=str(path))


def _check_one_line(*, name: str, value: str) -> None:
    # A newline would inject directives into the systemd unit; control characters are
    # not valid in plist XML either.
    if any(ord(ch) < 0x20 for ch in value):
        raise ServiceError(f"{name} contains a control character: {value!r}")


# --- launchd plist ----------------------------------------------------------------------


def agent_plist_path(*, label: str, home: Path) -> Path:
    return home / "Library" / "LaunchAgents" / f"{label}.plist"


def render_plist(spec: AgentSpec) -> bytes:
    """The LaunchAgent plist (XML) for spec."""
    _check_spec(spec)
    rendered = _substitute(_load_template(), values=_placeholder_values(spec))
    if spec.offline:
        rendered["EnvironmentVariables"]["HF_HUB_OFFLINE"] = "1"
    return plistlib.dumps(rendered, fmt=plistlib.FMT_XML, sort_keys=False)


def _placeholder_values(spec: AgentSpec) -> dict[str, str]:
    return {
        "LABEL": spec.label,
        "PYTHON": str(spec.python),
        "CONFIG": str(spec.config),
        "LOG_DIR": str(spec.log_dir),
        "WORKING_DIR": str(spec.working_dir),
        "PATH": spec.path_env,
        "HF_HOME": str(spec.hf_home),
        "LOG_FILE": str(spec.log_file),
    }


def _substitute(value: Any, *, values: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _substitute(item, values=values) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, values=values) for item in value]
    if isinstance(value, str):
        return _substitute_text(value, values=values)
    return value


def _substitute_text(text: str, *, values: Mapping[str, str]) -> str:
    # One pass with a callback: a value that itself contains "@NAME@" is not expanded again.
    def replace(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise ServiceError(
                f"unknown placeholder {match.group(0)} in the plist template"
            )
        return values[match.group(1)]

    return _PLACEHOLDER.sub(replace, text)


def _load_template() -> dict[str, Any]:
    try:
        template = plistlib.loads(_template_bytes())
    except (plistlib.InvalidFileException, ExpatError, ValueError) as exc:
        raise ServiceError(
            f"the packaged {_TEMPLATE_NAME} is not a valid plist: {exc}"
        ) from exc
    if not isinstance(template, dict):
        raise ServiceError(f"the packaged {_TEMPLATE_NAME} is not a plist dictionary")
    return template


def _template_bytes() -> bytes:
    try:
        return resources.files(_TEMPLATE_PACKAGE).joinpath(_TEMPLATE_NAME).read_bytes()
    except NotADirectoryError:
        # Python 3.11's namespace reader rejects the non-directory sentinel that setuptools'
        # editable finder puts in __path__ (python/importlib_resources#311, fixed in
        # importlib_resources 6.4.3, not in this stdlib): look in the real directories.
        return _template_bytes_from_namespace()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ServiceError(
            f"{_TEMPLATE_PACKAGE}/{_TEMPLATE_NAME} is missing from the install"
        ) from exc


def _template_bytes_from_namespace() -> bytes:
    package = importlib.import_module(_TEMPLATE_PACKAGE)
    for entry in package.__path__:
        candidate = Path(entry) / _TEMPLATE_NAME
        if candidate.is_file():
            return candidate.read_bytes()
    raise ServiceError(
        f"{_TEMPLATE_PACKAGE}/{_TEMPLATE_NAME} is missing from the install"
    )


# --- running launchctl / systemctl ---------------------------------------------------------


class _Tool:
    """One executable found on PATH, run with captured output."""

    def __init__(
        self, *, name: str, missing_hint: str, search_path: str | None
    ) -> None:
        self._name = name
        self._missing_hint = missing_hint
        # None: this process's PATH at the time of each call (shutil.which's default).
        self._search_path = search_path

    def run(self, args: Sequence[str]) -> str:
        """Run the tool with args; its stdout, or CommandFailedError on a non-zero exit."""
        argv = [self._executable(), *args]
        result = self._spawn(argv)
        if result.returncode != 0:
            raise CommandFailedError(
                argv=[self._name, *args],
                returncode=result.returncode,
                stderr=result.stderr,
            )
        return result.stdout

    def display(self, args: Sequence[str]) -> str:
        return shlex.join([self._name, *args])

    def ensure_available(self) -> None:
        """Raise ServiceError now if the tool is missing, before anything is written."""
        self._executable()

    def _executable(self) -> str:
        # Looked up per call, not at construction, so a dry run works where the tool is absent.
        found = shutil.which(self._name, path=self._search_path)
        if found is None:
            raise ServiceError(f"{self._name} not found on PATH: {self._missing_hint}")
        return found

    def _spawn(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                check=False,
                timeout=_TOOL_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(
                f"`{shlex.join(argv)}` did not finish in {exc.timeout:.0f} s"
            ) from exc
        except OSError as exc:
            raise ServiceError(f"cannot run `{shlex.join(argv)}`: {exc}") from exc


class Launchctl(_Tool):
    """The `launchctl` executable. Targets are "gui/<uid>" (domain) or "gui/<uid>/<label>"."""

    def __init__(self, *, search_path: str | None = None) -> None:
        super().__init__(
            name="launchctl",
            missing_hint="launchd services are macOS-only (on Linux use the systemd user unit)",
            search_path=search_path,
        )

    def bootstrap(self, *, domain: str, plist: Path) -> None:
        self.run(["bootstrap", domain, str(plist)])

    def bootout(self, *, target: str) -> None:
        self.run(["bootout", target])

    def kickstart(self, *, target: str, kill: bool = True) -> None:
        self.run(["kickstart", *(["-k"] if kill else []), target])

    def enable(self, *, target: str) -> None:
        self.run(["enable", target])

    def print(self, *, target: str) -> str:
        return self.run(["print", target])

    def is_loaded(self, *, target: str) -> bool:
        try:
            self.print(target=target)
        except CommandFailedError:
            return False
        return True


class Systemctl(_Tool):
    """`systemctl --user`."""

    def __init__(self, *, search_path: str | None = None) -> None:
        super().__init__(
            name="systemctl",
            missing_hint="systemd user units need Linux with systemd (on macOS use launchd)",
            search_path=search_path,
        )

    def run(self, args: Sequence[str]) -> str:
        return super().run(["--user", *args])

    def display(self, args: Sequence[str]) -> str:
        return super().display(["--user", *args])


# --- launchd install / uninstall / status -------------------------------------------------


def _domain(*, uid: int) -> str:
    return f"gui/{uid}"


def _target(*, uid: int, label: str) -> str:
    return f"gui/{uid}/{label}"


def _start_steps(*, uid: int, label: str, plist: Path) -> list[list[str]]:
    # enable clears a `launchctl disable` left by the user; bootstrap with RunAtLoad starts the
    # job; kickstart without -k only starts it if it is not already running (e.g. throttled),
    # so the fresh process is not killed in the middle of loading its model.
    target = _target(uid=uid, label=label)
    return [
        ["enable", target],
        ["bootstrap", _domain(uid=uid), str(plist)],
        ["kickstart", target],
    ]


def install(
    *,
    spec: AgentSpec,
    home: Path,
    uid: int,
    launchctl: Launchctl,
    dry_run: bool = False,
) -> ServiceChange:
    """Write the LaunchAgent and (re)start it; running it again replaces the loaded job."""
    plist = agent_plist_path(label=spec.label, home=home)
    content = render_plist(spec)
    if dry_run:
        return _planned_install(
            spec=spec, plist=plist, content=content, uid=uid, launchctl=launchctl
        )
    launchctl.ensure_available()
    _make_dirs(spec.log_dir, spec.working_dir)
    _write_atomically(path=plist, data=content)
    ran = _stop_if_loaded(
        launchctl=launchctl, target=_target(uid=uid, label=spec.label)
    )
    for args in _start_steps(uid=uid, label=spec.label, plist=plist):
        launchctl.run(args)
        ran.append(launchctl.display(args))
    return ServiceChange(
        path=plist, content=content.decode(), commands=tuple(ran), dry_run=False
    )


def _planned_install(
    *, spec: AgentSpec, plist: Path, content: bytes, uid: int, launchctl: Launchctl
) -> ServiceChange:
    bootout = launchctl.display(["bootout", _target(uid=uid, label=spec.label)])
    starts = [
        launchctl.display(a)
        for a in _start_steps(uid=uid, label=spec.label, plist=plist)
    ]
    commands = (f"{bootout}  # only if already loaded", *starts)
    return ServiceChange(
        path=plist, content=content.decode(), commands=commands, dry_run=True
    )


def uninstall(
    *, label: str, home: Path, uid: int, launchctl: Launchctl, dry_run: bool = False
) -> ServiceChange:
    """Stop and unload the agent if loaded, then remove its plist."""
    plist = agent_plist_path(label=label, home=home)
    target = _target(uid=uid, label=label)
    if dry_run:
        commands = (f"{launchctl.display(['bootout', target])}  # only if loaded",)
        return ServiceChange(path=plist, content=None, commands=commands, dry_run=True)
    ran = _stop_if_loaded(launchctl=launchctl, target=target)
    _remove(plist)
    return ServiceChange(path=plist, content=None, commands=tuple(ran), dry_run=False)


def _stop_if_loaded(*, launchctl: Launchctl, target: str) -> list[str]:
    if not launchctl.is_loaded(target=target):
        return []
    _bootout_until_gone(launchctl=launchctl, target=target)
    return [launchctl.display(["bootout", target])]


def _bootout_until_gone(*, launchctl: Launchctl, target: str) -> None:
    # A job being torn down can still show up (and refuse a new bootstrap) for a moment;
    # `brew services stop` repeats bootout until it is gone, and so do we. A bootout failure
    # only matters if the job is still there afterwards.
    error: CommandFailedError | None = None
    for attempt in range(_BOOTOUT_ATTEMPTS):
        if attempt:
            time.sleep(_BOOTOUT_PAUSE_S)
        try:
            launchctl.bootout(target=target)
        except CommandFailedError as exc:
            error = exc
        if not launchctl.is_loaded(target=target):
            return
    raise ServiceError(
        f"{target} is still loaded after {_BOOTOUT_ATTEMPTS} bootouts: {error}"
    ) from error


def status(*, label: str, home: Path, uid: int, launchctl: Launchctl) -> AgentStatus:
    installed = agent_plist_path(label=label, home=home).is_file()
    try:
        text = launchctl.print(target=_target(uid=uid, label=label))
    except CommandFailedError:
        return AgentStatus(
            installed=installed,
            loaded=False,
            state=None,
            pid=None,
            last_exit_status=None,
        )
    return _status_from_print(text, installed=installed)


def _status_from_print(text: str, *, installed: bool) -> AgentStatus:
    fields = _top_level_fields(text)
    last_exit = fields.get("last exit code", fields.get("last exit status"))
    return AgentStatus(
        installed=installed,
        loaded=True,
        state=fields.get("state"),
        pid=_leading_int(fields.get("pid")),
        last_exit_status=_leading_int(last_exit),
    )


def _top_level_fields(text: str) -> dict[str, str]:
    # `launchctl print` is not a stable interface. Keep "key = value" lines of the service's
    # own block only (depth 1): nested blocks (event triggers, endpoints...) reuse keys
    # such as "state".
    fields: dict[str, str] = {}
    depth = 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("}"):
            depth -= 1
        elif depth == 1 and " = " in stripped and not stripped.endswith("{"):
            key, _, value = stripped.partition(" = ")
            fields.setdefault(key.strip(), value.strip())
        if stripped.endswith("{"):
            depth += 1
    return fields


def _leading_int(value: str | None) -> int | None:
    # "78: EX_CONFIG" -> 78; "(never exited)" -> None.
    match = re.match(r"-?\d+", value or "")
    return int(match.group(0)) if match else None


# --- systemd (Linux) -------------------------------------------------------------------------


_SYSTEMD_UNIT = """\
[Unit]
Description=cutout-daemon hot-folder background remover ({label})
# Keep restarting a crash loop, as launchd does: at most one start per RestartSec.
StartLimitIntervalSec=0

[Service]
Type=exec
ExecStart={exec_start}
WorkingDirectory={working_dir}
{environment}
# Like KeepAlive {{SuccessfulExit: false, Crashed: true}}: not after a clean stop.
Restart=on-failure
RestartSec=10
# {must_act} (EX_CONFIG): a person must act first (a damaged queue: cutout queue rebuild); a
# restart would only fail the same way.
RestartPreventExitStatus={must_act}
# SIGTERM, then 60 s to finish the image in flight before SIGKILL (launchd's ExitTimeOut).
KillSignal=SIGTERM
TimeoutStopSec=60

[Install]
WantedBy=default.target
"""


def systemd_unit_path(*, label: str, home: Path) -> Path:
    return home / ".config" / "systemd" / "user" / f"{label}.service"


def render_systemd_unit(spec: AgentSpec) -> str:
    """A systemd user unit with the same behaviour as the LaunchAgent."""
    _check_spec(spec)
    environment = (
        f"Environment={_env_quote(key=k, value=v)}"
        for k, v in _service_environment(spec).items()
    )
    return _SYSTEMD_UNIT.format(
        label=spec.label,
        exec_start=" ".join(_exec_quote(arg) for arg in _program_arguments(spec)),
        working_dir=_specifier_escape(str(spec.working_dir)),
        environment="\n".join(environment),
        must_act=QueueDamaged.exit_status,
    )


def _program_arguments(spec: AgentSpec) -> list[str]:
    return [
        str(spec.python), "-m", "daemon", "watch",
        "--config", str(spec.config),
        "--log-file", str(spec.log_file),
    ]


def _service_environment(spec: AgentSpec) -> dict[str, str]:
    env = {"PATH": spec.path_env, "HF_HOME": str(spec.hf_home), "PYTHONUNBUFFERED": "1"}
    return env | ({"HF_HUB_OFFLINE": "1"} if spec.offline else {})


def _specifier_escape(value: str) -> str:
    # systemd expands %-specifiers in these settings.
    return value.replace("%", "%%")


def _systemd_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{_specifier_escape(escaped)}"'


def _env_quote(*, key: str, value: str) -> str:
    return _systemd_quote(f"{key}={value}")


def _exec_quote(arg: str) -> str:
    # ExecStart also expands $VARIABLES; "$$" is a literal "$".
    return _systemd_quote(arg).replace("$", "$$")


def _unit_name(label: str) -> str:
    return f"{label}.service"


def _systemd_start_steps(label: str) -> list[list[str]]:
    # restart rather than `enable --now`: --now leaves an already running unit on its old
    # definition, restart starts a stopped unit and replaces a running one.
    unit = _unit_name(label)
    return [["daemon-reload"], ["enable", unit], ["restart", unit]]


def install_systemd(
    *, spec: AgentSpec, home: Path, systemctl: Systemctl, dry_run: bool = False
) -> ServiceChange:
    """Write the user unit, enable it at login and (re)start it."""
    unit = systemd_unit_path(label=spec.label, home=home)
    content = render_systemd_unit(spec)
    steps = _systemd_start_steps(spec.label)
    if not dry_run:
        systemctl.ensure_available()
        _make_dirs(spec.log_dir, spec.working_dir)
        _write_atomically(path=unit, data=content.encode())
        _run_all(tool=systemctl, steps=steps)
    commands = tuple(systemctl.display(args) for args in steps)
    return ServiceChange(path=unit, content=content, commands=commands, dry_run=dry_run)


def uninstall_systemd(
    *, label: str, home: Path, systemctl: Systemctl, dry_run: bool = False
) -> ServiceChange:
    """Stop and disable the unit if its file exists, remove the file, reload systemd."""
    unit = systemd_unit_path(label=label, home=home)
    stop = [["disable", "--now", _unit_name(label)]] if unit.exists() else []
    if not dry_run:
        _run_all(tool=systemctl, steps=stop)
        _remove(unit)
        systemctl.run(["daemon-reload"])
    commands = tuple(systemctl.display(args) for args in [*stop, ["daemon-reload"]])
    return ServiceChange(path=unit, content=None, commands=commands, dry_run=dry_run)


_SHOW_PROPERTIES = ("LoadState", "ActiveState", "SubState", "MainPID", "ExecMainStatus")


def status_systemd(*, label: str, home: Path, systemctl: Systemctl) -> AgentStatus:
    """The unit as `systemctl --user show` reports it (key=value: a stable interface, unlike status)."""
    text = systemctl.run(
        ["show", _unit_name(label), f"--property={','.join(_SHOW_PROPERTIES)}"]
    )
    fields = _key_values(text)
    pid = _leading_int(fields.get("MainPID")) or None  # 0 = no main process
    return AgentStatus(
        installed=systemd_unit_path(label=label, home=home).is_file(),
        loaded=fields.get("LoadState") == "loaded",
        state=fields.get("SubState") or None,
        pid=pid,
        # ExecMainStatus is 0 while a process runs: only an exited one has a status.
        last_exit_status=None if pid else _leading_int(fields.get("ExecMainStatus")),
    )


def service_status(*, host: Host, label: str, systemd: bool) -> AgentStatus:
    """The LaunchAgent's status, or with systemd the user unit's."""
    if systemd:
        return status_systemd(label=label, home=host.home, systemctl=Systemctl())
    return status(label=label, home=host.home, uid=host.uid, launchctl=Launchctl())


def _key_values(text: str) -> dict[str, str]:
    pairs = (line.partition("=") for line in text.splitlines())
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def _run_all(*, tool: _Tool, steps: Sequence[Sequence[str]]) -> None:
    for args in steps:
        tool.run(args)


# --- files -----------------------------------------------------------------------------------


def _make_dirs(*paths: Path) -> None:
    # launchd cannot open StandardOutPath, and neither service can chdir, into a missing dir.
    try:
        for path in paths:
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceError(f"cannot create {exc.filename}: {exc.strerror}") from exc


def _write_atomically(*, path: Path, data: bytes) -> None:
    """launchd/systemd must never read a half-written file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, mode=0o644)  # launchd refuses a group-writable plist, whatever the umask
    except OSError as exc:
        raise ServiceError(f"cannot write {path}: {exc}") from exc


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise ServiceError(f"cannot remove {path}: {exc}") from exc
