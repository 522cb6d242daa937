"""systemd (Linux): a user unit with the LaunchAgent's behaviour, and `systemctl --user`.

The unit is a text template: a unit file is lines of text with its own quoting, and the
template shows the file as it will read, comments included.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from daemon.errors import QueueDamaged, ServiceError
from daemon.service.files import make_dirs, remove, write_atomically
from daemon.service.spec import AgentSpec, AgentStatus, ServiceChange, check_spec, environment, program_arguments
from daemon.service.tools import Tool, leading_int

_UNIT = """\
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

_SHOW_PROPERTIES = ("LoadState", "ActiveState", "SubState", "MainPID", "ExecMainStatus")


def unit_path(*, label: str, home: Path) -> Path:
    return home / ".config" / "systemd" / "user" / f"{label}.service"


def render_unit(spec: AgentSpec) -> str:
    """A systemd user unit with the same behaviour as the LaunchAgent."""
    check_spec(spec)
    variables = (f"Environment={_env_quote(key=k, value=v)}" for k, v in environment(spec).items())
    return _UNIT.format(
        label=spec.label,
        exec_start=" ".join(_exec_quote(arg) for arg in program_arguments(spec)),
        working_dir=_specifier_escape(str(spec.working_dir)),
        environment="\n".join(variables),
        must_act=QueueDamaged.exit_status,
    )


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


class Systemctl(Tool):
    """`systemctl --user`."""

    def __init__(self) -> None:
        super().__init__(
            name="systemctl",
            missing_hint="systemd user units need Linux with systemd (on macOS use launchd)",
            prefix=["--user"],
        )


@dataclass(frozen=True, kw_only=True)
class SystemdManager:
    """The user units of one user: ~/.config/systemd/user/<label>.service.

    `requested`: asked for by name (--systemd). Only then may `cutout service install`
    install it; otherwise (Linux, where launchd is missing) it shows the unit.
    """

    home: Path
    requested: bool
    systemctl: Systemctl = field(default_factory=Systemctl, compare=False, repr=False)
    name: ClassVar[str] = "systemd"
    domain: ClassVar[str] = "systemd --user"
    macos_privacy: ClassVar[bool] = False

    @property
    def may_install(self) -> bool:
        return self.requested

    def unit_path(self, *, label: str) -> Path:
        return unit_path(label=label, home=self.home)

    def render(self, *, spec: AgentSpec) -> str:
        return render_unit(spec)

    def install(self, *, spec: AgentSpec, dry_run: bool = False) -> ServiceChange:
        """Write the user unit, enable it at login and (re)start it."""
        unit = self.unit_path(label=spec.label)
        content = render_unit(spec)
        steps = _start_steps(spec.label)
        if not dry_run:
            self.systemctl.ensure_available()
            make_dirs(spec.log_dir, spec.working_dir)
            before = unit.read_bytes() if unit.is_file() else None
            write_atomically(path=unit, data=content.encode())
            try:
                self.systemctl.run_all(steps)
            except ServiceError:  # no user bus (a plain ssh session), a refused unit: nothing left behind
                self._put_back(unit, before)
                raise
        commands = tuple(self.systemctl.display(args) for args in steps)
        return ServiceChange(path=unit, content=content, commands=commands, dry_run=dry_run)

    def _put_back(self, unit: Path, before: bytes | None) -> None:
        """The unit file as it was before a failed install (none, or the previous one)."""
        if before is None:
            remove(unit)
        else:
            write_atomically(path=unit, data=before)
        with suppress(ServiceError):
            self.systemctl.run(["daemon-reload"])

    def uninstall(self, *, label: str, dry_run: bool = False) -> ServiceChange:
        """Stop and disable the unit if its file exists, remove the file, reload systemd."""
        unit = self.unit_path(label=label)
        stop = [["disable", "--now", _unit_name(label)]] if unit.exists() else []
        steps = [*stop, ["daemon-reload"]]
        if not dry_run:
            try:
                self.systemctl.run_all(stop)
            finally:  # the file goes even when systemctl cannot be reached: it would start at next login
                remove(unit)
                with suppress(ServiceError):
                    self.systemctl.run(["daemon-reload"])
        commands = tuple(self.systemctl.display(args) for args in steps)
        return ServiceChange(path=unit, content=None, commands=commands, dry_run=dry_run)

    def status(self, *, label: str) -> AgentStatus:
        """The unit as `systemctl --user show` reports it (key=value: a stable interface, unlike status)."""
        text = self.systemctl.run(["show", _unit_name(label), f"--property={','.join(_SHOW_PROPERTIES)}"])
        fields = _key_values(text)
        pid = leading_int(fields.get("MainPID")) or None  # 0 = no main process
        return AgentStatus(
            installed=self.unit_path(label=label).is_file(),
            loaded=fields.get("LoadState") == "loaded",
            state=fields.get("SubState") or None,
            pid=pid,
            # ExecMainStatus is 0 while a process runs: only an exited one has a status.
            last_exit_status=None if pid else leading_int(fields.get("ExecMainStatus")),
        )


def _unit_name(label: str) -> str:
    return f"{label}.service"


def _start_steps(label: str) -> list[list[str]]:
    # restart rather than `enable --now`: --now leaves an already running unit on its old
    # definition, restart starts a stopped unit and replaces a running one.
    unit = _unit_name(label)
    return [["daemon-reload"], ["enable", unit], ["restart", unit]]


def _key_values(text: str) -> dict[str, str]:
    pairs = (line.partition("=") for line in text.splitlines())
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}
