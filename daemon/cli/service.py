"""`cutout service install|uninstall|status`: one function per command, called by the CLI.

The CLI passes what it parsed and what it read from the process; these refuse a config the
daemon would not accept, ask `manager_for` which manager to use (never the platform
themselves), print what happened and return the command's exit status. Not imported by
the package's __init__: doctor, which these use, imports the package.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from daemon.errors import ConfigError
from daemon.folders.outputs import Folders
from daemon.models.fetch import ModelStore, is_hub_model, plan_load
from daemon.service import (
    AgentSpec,
    AgentStatus,
    Host,
    ServiceChange,
    ServiceManager,
    check_label,
    default_log_dir,
    default_spec,
    manager_for,
)
from daemon.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
"""daemon.cli.main's: the service is (or would be) running, or it is not; nothing was done (exit 2,
"refused", as for any command-line mistake)."""


class Surroundings(Protocol):
    """What the CLI read from the process that an install needs (daemon.cli.context.Context has it)."""

    @property
    def host(self) -> Host: ...

    @property
    def hf_home(self) -> Path:
        """What the service gets as HF_HOME."""

    @property
    def default_state(self) -> Path:
        """folders.state when the config names none."""


def install(
    *,
    config: Path | None,
    label: str,
    systemd: bool,
    dry_run: bool,
    settings: Settings,
    ctx: Surroundings,
    store: ModelStore,
) -> int:
    """Install (or replace) and start the service for `config`, a config the daemon accepts.

    `store` is where the service will find its model: the pin, and HF_HOME/hub as the cache.
    """
    if config is None:
        raise ConfigError("give the settings file the service runs with: --config F (see config/default.yaml)")
    manager = manager_for(host=ctx.host, systemd=systemd)
    folders = settings.folders.resolve(default_state=ctx.default_state, review=settings.review.folder)
    _check_config(settings, folders=folders, store=store, config=config, creates=manager.may_install and not dry_run)
    spec = agent_spec(settings, ctx=ctx, config=config, label=label)
    if not manager.may_install:
        return _show_unit(manager, spec=spec)
    _print_change(manager.install(spec=spec, dry_run=dry_run))
    _print_installed(spec, settings=settings, folders=folders, host=ctx.host, privacy=manager.macos_privacy)
    return EXIT_OK


def uninstall(*, label: str, systemd: bool, dry_run: bool, host: Host) -> int:
    """Stop the service and remove its file."""
    manager = manager_for(host=host, systemd=systemd)
    _print_change(manager.uninstall(label=check_label(label), dry_run=dry_run))
    return EXIT_OK


def status(*, label: str, systemd: bool, host: Host) -> int:
    """Print installed, loaded, running, last exit status; 0 only when it runs."""
    label = check_label(label)
    manager = manager_for(host=host, systemd=systemd)
    found = manager.status(label=label)
    print(f"{label} ({manager.domain})")
    file, logs = manager.unit_path(label=label), default_log_dir(host=host, label=label)
    for line in [f"file: {file}", *_status_lines(found), f"logs: {logs}"]:
        print(f"  {line}")
    return EXIT_OK if found.pid is not None else EXIT_FAILED


def agent_spec(settings: Settings, *, ctx: Surroundings, config: Path, label: str) -> AgentSpec:
    """What `service install` installs for this config: this interpreter, offline, the configured log."""
    made = default_spec(
        config=config, label=label, home=ctx.host.home, python=ctx.host.python, hf_home=ctx.hf_home,
        log_dir=default_log_dir(host=ctx.host, label=label), macos=ctx.host.is_macos,
        offline=True,  # a hub model must be pinned and cached (checked), a local one needs no network
    )
    return replace(made, log_file=settings.logging.file or made.log_file)


# --- refusing a config the daemon would not accept: a broken one is never installed ----------
def _check_config(settings: Settings, *, folders: Folders, store: ModelStore, config: Path, creates: bool) -> None:
    _check_folders(folders, settings=settings, creates=creates)
    from daemon.pipeline.model import choose_device  # torch: only when a command needs it

    choose_device(settings.model.device)  # e.g. `mps` on a machine without it
    _refuse_unfetched_model(settings, store=store, config=config)


def _check_folders(folders: Folders, *, settings: Settings, creates: bool) -> None:
    from daemon.cli.doctor import check_folders
    from daemon.folders.outputs import check_folder_rules, check_state_files, used_folders, validate_folders
    from daemon.store.statedir import STATE_FILES

    if creates:
        validate_folders(folders, policy=settings.originals, state_files=STATE_FILES)  # the daemon's own check
        return
    # The same refusals without creating any folder: a dry run (or only showing the unit) changes nothing.
    check_folder_rules(used_folders(folders, policy=settings.originals))
    failed = next((c for c in check_folders(folders, policy=settings.originals) if not c.ok), None)
    if failed is not None:
        raise ConfigError(f"{failed.name}: {failed.detail}")
    check_state_files(folders.state, names=STATE_FILES)


def _refuse_unfetched_model(settings: Settings, *, store: ModelStore, config: Path) -> None:
    spec = settings.model.spec
    if not is_hub_model(spec):
        if spec.kind == "torchscript" and not Path(spec.source).is_file():
            raise ConfigError(f"model.name: model file {spec.source} does not exist")
        return
    plan = plan_load(settings.model, store=store, offline=True)
    if plan.pin is None:
        raise ConfigError(
            f"model {spec} has not been fetched: run `cutout model fetch --config {config}` first "
            "(the service runs offline, on the exact revision fetched)"
        )


# --- printing ----------------------------------------------------------------------------------
def _show_unit(manager: ServiceManager, *, spec: AgentSpec) -> int:
    print(
        "launchd is macOS-only, so nothing was installed. The equivalent systemd user unit is below;\n"
        "install it with: cutout service install --systemd --config F",
        file=sys.stderr,
    )
    print(f"# {manager.unit_path(label=spec.label)}")
    print(manager.render(spec=spec), end="")
    return EXIT_REFUSED


def _print_change(change: ServiceChange) -> None:
    if change.dry_run and change.content is not None:
        print(change.content, end="" if change.content.endswith("\n") else "\n")
    for line in change.lines():
        print(line)


def _print_installed(spec: AgentSpec, *, settings: Settings, folders: Folders, host: Host, privacy: bool) -> None:
    from daemon.cli.doctor import check_privacy, service_paths

    logging = settings.logging
    print(f"log: {spec.log_file} (JSON lines, rotated at {logging.max_bytes} bytes, {logging.backups} kept); "
          f"start-up errors: {spec.log_dir / 'stderr.log'}")
    if not privacy:
        return
    paths = service_paths(host=host, config=spec.config, folders=folders, policy=settings.originals)
    found = check_privacy(paths, host=host, label=spec.label)
    if found.status == "warn":
        print(f"warning: {found.detail}\n  fix: {found.fix}")


def _status_lines(found: AgentStatus) -> list[str]:
    running = f"{found.state or 'unknown'}" + (f" (pid {found.pid})" if found.pid is not None else "")
    return [
        f"installed: {'yes' if found.installed else 'no'}",
        f"loaded: {'yes' if found.loaded else 'no'}",
        f"state: {running if found.loaded else 'not loaded'}",
        f"last exit status: {'none' if found.last_exit_status is None else found.last_exit_status}",
    ]
