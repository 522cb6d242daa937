"""Install the daemon as a per-user service: a launchd LaunchAgent (macOS) or a systemd user unit.

Callers never branch on the platform: `manager_for` is the one place that looks at it, and
everything else goes through the ServiceManager it returns.

    manager = manager_for(host=host, systemd=flag)     launchd on macOS; systemd if asked or elsewhere
    manager.install(spec=AgentSpec, dry_run=...)     -> ServiceChange: the file written, the commands run
    manager.uninstall(label=..., dry_run=...)        -> ServiceChange
    manager.status(label=...)                        -> AgentStatus
    manager.unit_path(label=...), manager.render(spec=...)
    manager.name, .domain                            for messages ("launchd", "launchd, gui/501")
    manager.may_install                              False: only show the file (systemd not asked for)
    manager.macos_privacy                            True: warn about Full Disk Access (launchd)

    spec.py      Host, AgentSpec, ServiceChange, AgentStatus, default_spec, the checks: pure data
    launchd.py   LaunchdManager: the plist (plistlib, from data in code) and launchctl
    systemd.py   SystemdManager: the unit (a text template) and systemctl --user
    tools.py     running launchctl/systemctl found on PATH: the seam tests replace with fakes
    files.py     writing the agent's file atomically, making its folders
    commands.py  `cutout service install|uninstall|status` (imported by the CLI, not here:
                 it uses doctor, which imports this package)

Rendering is pure; the only side effects are writing the agent's file and running
launchctl / systemctl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from daemon.service.spec import (
    DEFAULT_LABEL,
    AgentSpec,
    AgentStatus,
    Host,
    ServiceChange,
    check_label,
    default_log_dir,
    default_spec,
    grant_target,
    privacy_grant_target,
)
from daemon.service.launchd import LaunchdManager
from daemon.service.systemd import SystemdManager

__all__ = [
    "DEFAULT_LABEL",
    "AgentSpec",
    "AgentStatus",
    "Host",
    "ServiceChange",
    "ServiceManager",
    "check_label",
    "default_log_dir",
    "default_spec",
    "grant_target",
    "manager_for",
    "privacy_grant_target",
]


class ServiceManager(Protocol):
    """One user's services under one manager; every method takes the label or the spec."""

    @property
    def name(self) -> str:
        """The manager's name in messages: launchd or systemd."""

    @property
    def domain(self) -> str:
        """Where the service lives, as `service status` shows it: "launchd, gui/501", "systemd --user"."""

    @property
    def may_install(self) -> bool:
        """False for a manager the platform chose that was not asked for: install only shows the file."""

    @property
    def macos_privacy(self) -> bool:
        """True when macOS privacy (TCC) decides what the service may read: a launchd job has no parent app."""

    def unit_path(self, *, label: str) -> Path:
        """The agent's file: the plist or the unit."""

    def render(self, *, spec: AgentSpec) -> str:
        """The agent's file as install writes it."""

    def install(self, *, spec: AgentSpec, dry_run: bool = False) -> ServiceChange:
        """Write the file and (re)start the service; with dry_run, only say what would be done."""

    def uninstall(self, *, label: str, dry_run: bool = False) -> ServiceChange:
        """Stop the service if it runs and remove its file."""

    def status(self, *, label: str) -> AgentStatus:
        """Installed, loaded, running, last exit status."""


def manager_for(*, host: Host, systemd: bool = False) -> ServiceManager:
    """launchd on macOS, systemd when asked for (`--systemd`) or where there is no launchd."""
    if host.is_macos and not systemd:
        return LaunchdManager(home=host.home, uid=host.uid)
    return SystemdManager(home=host.home, requested=systemd)
