"""launchd (macOS): the LaunchAgent plist, and launchctl to load it into the login session.

The plist is plist data built here (`agent`) and written with plistlib: one description of
the agent, each key next to the reason it is set, and no template to find in the install.
launchd/cutout.plist in the repository is its rendering for an example user, for people who
install by hand; a test keeps the two equal.

launchctl targets: the domain "gui/<uid>" (the user's login session), the job
"gui/<uid>/<label>". Privacy (TCC) applies to what launchd starts: see `grant_target`.
"""

from __future__ import annotations

import plistlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from daemon.errors import ServiceError
from daemon.service.files import make_dirs, remove, write_atomically
from daemon.service.spec import AgentSpec, AgentStatus, ServiceChange, check_spec, environment, program_arguments
from daemon.service.tools import CommandFailedError, Tool, leading_int

MUST_ACT_ENV = "CUTOUT_MUST_ACT_STATUS"
"""daemon.cli.context.MUST_ACT_ENV: `cutout watch`'s exit status when a person must act (see _RESTARTS)."""

_BOOTOUT_ATTEMPTS = 5
_BOOTOUT_PAUSE_S = 0.5

# Restart after a non-zero exit (fatal error, hot folder gone) or a crash signal, but not after
# a clean stop (exit 0 on SIGTERM). The KeepAlive conditions are ORed; SuccessfulExit=false
# already covers a signal death, Crashed=true says so explicitly. launchd.plist(5) cannot exempt
# one exit status (SuccessfulExit is zero or not zero), so when a person must act before a restart
# can help (a damaged queue, exit 78 elsewhere) the daemon exits 0 here, told so by MUST_ACT_ENV,
# after writing why to stderr.log: it stays down instead of failing every 10 s forever.
# (KeepAlive {Crashed: true} alone would stop restarts after ordinary error exits too, and a hot
# folder on a drive mounted after login must be retried.)
_RESTARTS = {
    "KeepAlive": {"SuccessfulExit": False, "Crashed": True},
    # launchd's default, set so a crash loop (e.g. a missing hot folder) is at most one spawn,
    # one model load and one log entry every 10 s.
    "ThrottleInterval": 10,
    # SIGTERM to SIGKILL. The default is "system-defined" on current macOS; 60 s lets the daemon
    # finish the image in flight (a slow CPU inference included), commit its state and exit 0.
    # launchd kills the whole process group, workers included.
    "ExitTimeOut": 60,
}

_PRIORITY = {
    # Standard (the default) throttles CPU and I/O only lightly, so inference runs at close to
    # full speed. Background would throttle it heavily and stretch every cutout; Interactive is
    # for processes whose UI depends on it (launchd.plist(5)) and would compete on equal terms
    # with the capture app the user is working in.
    "ProcessType": "Standard",
    # Our disk I/O (one photo read, one PNG written, a few SQLite commits) is a small share of
    # each image's CPU/GPU-bound time. The hot folder is shared with the tethering/capture app:
    # its writes of new shots must never queue behind ours.
    "LowPriorityIO": True,
    # Nice is deliberately not set (0): ProcessType already leaves the user's apps ahead of us,
    # and a second CPU penalty would slow decode, resize and PNG encode of every image exactly
    # when the capture app is busy, i.e. when photos arrive.
}


def plist_path(*, label: str, home: Path) -> Path:
    return home / "Library" / "LaunchAgents" / f"{label}.plist"


def render_plist(spec: AgentSpec) -> bytes:
    """The LaunchAgent plist (XML) for spec: what install writes, byte for byte."""
    check_spec(spec)
    return plistlib.dumps(agent(spec), fmt=plistlib.FMT_XML, sort_keys=False)


def agent(spec: AgentSpec) -> dict[str, object]:
    """The agent as plist data, keys in the order the file shows them."""
    return {
        "Label": spec.label,
        # The venv's python as launchd will exec it, symlink not resolved: only that path puts
        # the venv's site-packages on sys.path. The daemon writes its JSON log to the rotated
        # --log-file, and then not to stdout, which launchd appends to forever.
        "ProgramArguments": program_arguments(spec),
        "RunAtLoad": True,
        **_RESTARTS,
        **_PRIORITY,
        **_files(spec),
        # launchd gives jobs a bare PATH and none of the login shell's variables.
        "EnvironmentVariables": environment(spec, extra={MUST_ACT_ENV: "0"}),
    }


def _files(spec: AgentSpec) -> dict[str, str]:
    # launchd appends to these forever and never rotates them: they catch only what escapes the
    # daemon's own log (start-up tracebacks).
    return {
        "WorkingDirectory": str(spec.working_dir),
        "StandardOutPath": f"{spec.log_dir}/stdout.log",
        "StandardErrorPath": f"{spec.log_dir}/stderr.log",
    }


class Launchctl(Tool):
    """The `launchctl` executable."""

    def __init__(self) -> None:
        super().__init__(
            name="launchctl",
            missing_hint="launchd services are macOS-only (on Linux use the systemd user unit)",
        )

    def bootout(self, *, target: str) -> None:
        self.run(["bootout", target])

    def print(self, *, target: str) -> str:
        return self.run(["print", target])

    def is_loaded(self, *, target: str) -> bool:
        try:
            self.print(target=target)
        except CommandFailedError:
            return False
        return True


@dataclass(frozen=True, kw_only=True)
class LaunchdManager:
    """The LaunchAgents of one user: ~/Library/LaunchAgents/<label>.plist, loaded into gui/<uid>."""

    home: Path
    uid: int
    launchctl: Launchctl = field(default_factory=Launchctl, compare=False, repr=False)
    name: ClassVar[str] = "launchd"
    may_install: ClassVar[bool] = True
    macos_privacy: ClassVar[bool] = True

    @property
    def domain(self) -> str:
        return f"launchd, {_domain(uid=self.uid)}"

    def unit_path(self, *, label: str) -> Path:
        return plist_path(label=label, home=self.home)

    def render(self, *, spec: AgentSpec) -> str:
        return render_plist(spec).decode()

    def install(self, *, spec: AgentSpec, dry_run: bool = False) -> ServiceChange:
        """Write the LaunchAgent and (re)start it; running it again replaces the loaded job."""
        plist = self.unit_path(label=spec.label)
        content = render_plist(spec).decode()
        if dry_run:
            return self._planned_install(label=spec.label, plist=plist, content=content)
        self.launchctl.ensure_available()
        make_dirs(spec.log_dir, spec.working_dir)
        write_atomically(path=plist, data=content.encode())
        ran = self._stop_if_loaded(target=self._target(spec.label))
        for args in self._start_steps(label=spec.label, plist=plist):
            self.launchctl.run(args)
            ran.append(self.launchctl.display(args))
        return ServiceChange(path=plist, content=content, commands=tuple(ran), dry_run=False)

    def uninstall(self, *, label: str, dry_run: bool = False) -> ServiceChange:
        """Stop and unload the agent if loaded, then remove its plist."""
        plist = self.unit_path(label=label)
        target = self._target(label)
        if dry_run:
            commands = (f"{self.launchctl.display(['bootout', target])}  # only if loaded",)
            return ServiceChange(path=plist, content=None, commands=commands, dry_run=True)
        ran = self._stop_if_loaded(target=target)
        remove(plist)
        return ServiceChange(path=plist, content=None, commands=tuple(ran), dry_run=False)

    def status(self, *, label: str) -> AgentStatus:
        """What `launchctl print` says of the job; not loaded when it knows none."""
        installed = self.unit_path(label=label).is_file()
        try:
            text = self.launchctl.print(target=self._target(label))
        except CommandFailedError:
            return AgentStatus(
                installed=installed, loaded=False, state=None, pid=None, last_exit_status=None
            )
        return _status_from_print(text, installed=installed)

    def _target(self, label: str) -> str:
        return f"{_domain(uid=self.uid)}/{label}"

    def _start_steps(self, *, label: str, plist: Path) -> list[list[str]]:
        # enable clears a `launchctl disable` left by the user; bootstrap with RunAtLoad starts the
        # job; kickstart without -k only starts it if it is not already running (e.g. throttled),
        # so the fresh process is not killed in the middle of loading its model.
        target = self._target(label)
        return [["enable", target], ["bootstrap", _domain(uid=self.uid), str(plist)], ["kickstart", target]]

    def _planned_install(self, *, label: str, plist: Path, content: str) -> ServiceChange:
        bootout = self.launchctl.display(["bootout", self._target(label)])
        starts = [self.launchctl.display(a) for a in self._start_steps(label=label, plist=plist)]
        commands = (f"{bootout}  # only if already loaded", *starts)
        return ServiceChange(path=plist, content=content, commands=commands, dry_run=True)

    def _stop_if_loaded(self, *, target: str) -> list[str]:
        if not self.launchctl.is_loaded(target=target):
            return []
        _bootout_until_gone(launchctl=self.launchctl, target=target)
        return [self.launchctl.display(["bootout", target])]


def _domain(*, uid: int) -> str:
    return f"gui/{uid}"


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


def _status_from_print(text: str, *, installed: bool) -> AgentStatus:
    fields = _top_level_fields(text)
    last_exit = fields.get("last exit code", fields.get("last exit status"))
    return AgentStatus(
        installed=installed,
        loaded=True,
        state=fields.get("state"),
        pid=leading_int(fields.get("pid")),
        last_exit_status=leading_int(last_exit),
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
