"""The `cutout` command line: parse, build the settings once, call the module that does the work.

This is the one place that reads the process's surroundings (platform, home, uid, the
interpreter, the Hugging Face cache): `current_context()` collects them and every handler
gets them passed down, so tests run any command "on macOS" with a fake download seam.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeAlias

import structlog
from platformdirs import user_state_dir

from daemon import __version__
from daemon.errors import ConfigError, CutoutError, QueueDamaged
from daemon.fetch import (
    PIN_FILE_NAME,
    Downloader,
    LoadPlan,
    ModelStore,
    fetch_model,
    hub_download,
    is_hub_model,
    plan_load,
)
from daemon.logs import configure_logging
from daemon.outputs import Folders
from daemon.pipeline.model import DEVICE_NAMES, LoadedModel, ModelSpec, choose_device, load_model, parse_model_spec
from daemon import service
from daemon.service import DEFAULT_LABEL, AgentSpec, AgentStatus, Host, ServiceChange
from daemon.settings import cpu_threads, image_options, in_flight, load_settings, Settings

log = structlog.get_logger("cutout")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True, kw_only=True)
class Context:
    """What the entry point read from the process, for the handlers."""

    host: Host
    hf_home: Path  # what the service gets as HF_HOME
    hf_cache: Path  # the hub cache this process loads from (HF_HUB_CACHE, default HF_HOME/hub)
    default_state: Path  # folders.state when the config names none
    downloader: Downloader
    must_act_status: int = QueueDamaged.exit_status
    """`cutout watch`'s exit status when a person must act (a damaged queue); see MUST_ACT_ENV."""


MUST_ACT_ENV = "CUTOUT_MUST_ACT_STATUS"
"""The LaunchAgent sets it to 0: launchd's KeepAlive restarts after every non-zero status and
cannot be told to leave one alone, so "stay down" has to look like a clean stop there."""


def _must_act_status(environ: Mapping[str, str]) -> int:
    text = environ.get(MUST_ACT_ENV)
    if text is None:
        return QueueDamaged.exit_status
    if not text.isdigit() or int(text) > 255:
        raise ConfigError(f"{MUST_ACT_ENV}={text!r} is not an exit status (0 to 255): fix or unset it")
    return int(text)


def current_context() -> Context:
    from huggingface_hub import constants

    return Context(
        host=Host(
            system=platform.system(), machine=platform.machine(), home=Path.home(),
            uid=os.getuid(), python=Path(os.path.abspath(sys.executable)),
        ),
        hf_home=Path(constants.HF_HOME), hf_cache=Path(constants.HF_HUB_CACHE),
        default_state=Path(user_state_dir("cutout")), downloader=hub_download,
        must_act_status=_must_act_status(os.environ),
    )


# --- The parser -------------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML settings file (see config/default.yaml)")
    parser.add_argument("--model", help="hf:<repo or folder>, birefnet, or a TorchScript file")
    parser.add_argument("--device", choices=DEVICE_NAMES, help="auto = mps, then cuda, then cpu")


FOLDER_FLAGS = ("input", "output", "quarantine", "archive", "state")


def _folder_flags(parser: argparse.ArgumentParser) -> None:
    for name in FOLDER_FLAGS:
        parser.add_argument(f"--{name}", type=Path, help=f"folders.{name} (overrides the config file)")


def _label(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label", default=DEFAULT_LABEL, help=f"service name (default {DEFAULT_LABEL})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cutout", description="Hot-folder background remover (BiRefNet).")
    parser.add_argument("--version", action="version", version=f"cutout {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_process(commands)
    _add_watch(commands)
    _add_status(commands)
    _add_retry(commands)
    _add_doctor(commands)
    _add_model(commands)
    _add_service(commands)
    _add_queue(commands)
    return parser


Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_process(commands: Commands) -> None:
    process = commands.add_parser("process", help="cut out every image of a folder once")
    process.add_argument("input", type=Path, help="folder of images (walked recursively)")
    process.add_argument("output", type=Path, help="folder for the RGBA PNGs (same relative paths)")
    _common(process)
    process.add_argument("--state", type=Path, help="folders.state: where the model pin is kept")
    process.set_defaults(handler=cmd_process)


def _add_watch(commands: Commands) -> None:
    watch = commands.add_parser("watch", help="run the hot-folder daemon in the foreground")
    _common(watch)
    _folder_flags(watch)
    watch.add_argument(
        "--log-file", type=Path,
        help="logging.file: JSON log rotated by size; when stdout is not a terminal it replaces stdout",
    )
    watch.set_defaults(handler=cmd_watch)


def _add_status(commands: Commands) -> None:
    status = commands.add_parser("status", help="queue counts, what is running, recent failures")
    status.add_argument("--config", type=Path, help="YAML settings file")
    _folder_flags(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)


def _add_retry(commands: Commands) -> None:
    retry = commands.add_parser("retry", help="send quarantined files back through the queue")
    retry.add_argument("path", nargs="?", type=Path, help="a quarantined file (or its original path)")
    retry.add_argument("--all", action="store_true", help="every quarantined file")
    retry.add_argument("--config", type=Path, help="YAML settings file")
    _folder_flags(retry)
    retry.set_defaults(handler=cmd_retry)


def _add_doctor(commands: Commands) -> None:
    doctor = commands.add_parser(
        "doctor", help="check versions, device, model, folders, privacy and the service; say how to fix problems"
    )
    _common(doctor)
    _folder_flags(doctor)
    _label(doctor)
    doctor.set_defaults(handler=cmd_doctor)


def _add_model(commands: Commands) -> None:
    model = commands.add_parser("model", help="model tools").add_subparsers(dest="model_command", required=True)
    export = model.add_parser("export", help="trace the model to a TorchScript file (the seed's get_model.py)")
    export.add_argument("--out", type=Path, required=True, help="TorchScript file to write")
    export.add_argument("--input-res", type=int, default=None, help="trace size (default: pipeline.target_size)")
    _common(export)
    export.add_argument("--state", type=Path, help="folders.state: where the model pin is kept")
    export.set_defaults(handler=cmd_model_export)

    fetch = model.add_parser("fetch", help="download the model once and pin its exact revision (then offline)")
    fetch.add_argument("--config", type=Path, help="YAML settings file")
    fetch.add_argument("--model", help="hf:<repo> (default: model.name)")
    fetch.add_argument("--revision", help="branch, tag or commit to pin (default: model.revision, else main)")
    fetch.add_argument("--state", type=Path, help="folders.state: where the pin is written")
    fetch.set_defaults(handler=cmd_model_fetch)


def _add_queue(commands: Commands) -> None:
    queue = commands.add_parser("queue", help="the job queue database").add_subparsers(
        dest="queue_command", required=True
    )
    rebuild = queue.add_parser(
        "rebuild", help="move a damaged queue aside and rebuild it from the output and quarantine folders"
    )
    rebuild.add_argument("--config", type=Path, help="YAML settings file")
    _folder_flags(rebuild)
    rebuild.set_defaults(handler=cmd_queue_rebuild)


def _add_service(commands: Commands) -> None:
    service = commands.add_parser(
        "service", help="run `cutout watch` at login: launchd on macOS, systemd --user on Linux"
    ).add_subparsers(dest="service_command", required=True)
    install = service.add_parser("install", help="install (or replace) and start the service")
    install.add_argument("--config", type=Path, help="YAML settings file the service runs with (required)")
    _service_flags(install, dry_run=True)
    install.set_defaults(handler=cmd_service_install)
    uninstall = service.add_parser("uninstall", help="stop the service and remove it")
    _service_flags(uninstall, dry_run=True)
    uninstall.set_defaults(handler=cmd_service_uninstall)
    status = service.add_parser("status", help="installed? loaded? running? last exit status")
    _service_flags(status, dry_run=False)
    status.set_defaults(handler=cmd_service_status)


def _service_flags(parser: argparse.ArgumentParser, *, dry_run: bool) -> None:
    _label(parser)
    parser.add_argument(
        "--systemd", action="store_true",
        help="the systemd user unit instead of launchd (on Linux install needs it; uninstall and status use it anyway)",
    )
    if dry_run:
        parser.add_argument("--dry-run", action="store_true", help="print the file and the commands, change nothing")


# --- Settings, folders, the model --------------------------------------------------------------
def settings_from(args: argparse.Namespace) -> Settings:
    """The one place flags, the config file and defaults meet."""
    overrides = {
        "model.name": getattr(args, "model", None),
        "model.device": getattr(args, "device", None),
        "model.revision": getattr(args, "revision", None),
        "logging.file": getattr(args, "log_file", None),
    }
    overrides.update({f"folders.{name}": getattr(args, name, None) for name in FOLDER_FLAGS})
    return load_settings(getattr(args, "config", None), overrides=overrides)


def folders_from(settings: Settings, ctx: Context) -> Folders:
    return Folders.from_settings(settings.folders, default_state=ctx.default_state)


def state_dir(settings: Settings, ctx: Context) -> Path:
    """The state folder even when no hot folder is configured (`process`, `model fetch`)."""
    return Path(os.path.abspath((settings.folders.state or ctx.default_state).expanduser()))


def store_for(settings: Settings, ctx: Context, *, cache: Path | None = None) -> ModelStore:
    return ModelStore(pin_file=state_dir(settings, ctx) / PIN_FILE_NAME, cache=cache or ctx.hf_cache)


def open_model(settings: Settings, *, ctx: Context, device: str | None = None, progress: bool = False) -> LoadedModel:
    """Load the configured model; a hub model on its pinned revision, offline (fetched first if never pinned)."""
    spec = parse_model_spec(settings.model.name)
    plan = _load_plan(spec, settings=settings, ctx=ctx, progress=progress)
    return load_model(
        spec,
        device=choose_device(device or settings.model.device),
        revision=plan.revision,
        offline=plan.offline,
        size=settings.pipeline.target_size,
    )


def _load_plan(spec: ModelSpec, *, settings: Settings, ctx: Context, progress: bool) -> LoadPlan:
    store = store_for(settings, ctx)
    model = settings.model
    plan = plan_load(spec, revision=model.revision, offline=model.offline, store=store)
    if not plan.needs_fetch:
        return plan
    # First use of a hub model: download and pin it now, exactly as `cutout model fetch`
    # would; every later start then loads that commit offline.
    pin = fetch_model(spec, revision=model.revision, store=store, downloader=ctx.downloader, progress=progress)
    log.info("model_pinned", model=str(spec), revision=pin.revision, pin_file=str(store.pin_file))
    return plan_load(spec, revision=model.revision, offline=model.offline, store=store)


# --- Handlers ----------------------------------------------------------------------------------
def cmd_process(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.batch import check_process_folders, print_summary, run_batch

    if not args.input.is_dir():
        print(f"cutout process: input folder {args.input} does not exist", file=sys.stderr)
        return EXIT_USAGE
    # Before the model loads: a refusal should not wait for it.
    check_process_folders(args.input, args.output, state=settings.folders.state)
    loaded = open_model(settings, ctx=ctx, progress=sys.stderr.isatty())
    report = run_batch(
        args.input,
        args.output,
        model=loaded.model,
        params=settings.pipeline,
        options=image_options(settings),
        in_flight=in_flight(settings, cores=os.cpu_count()),
        cpu_threads=cpu_threads(settings, cores=os.cpu_count()),
        progress=sys.stderr.isatty(),
    )
    print_summary(report, input_dir=args.input, out=sys.stdout)
    return EXIT_FAILED if report.failed else EXIT_OK


def cmd_watch(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.outputs import validate_folders
    from daemon.rebuild import prepare_queue
    from daemon.runner import STATE_FILES, Daemon, daemon_pid, install_signal_handlers
    from daemon.nativelog import capture_native_stderr

    folders = folders_from(settings, ctx)
    validate_folders(folders, policy=settings.originals, state_files=STATE_FILES)
    if (pid := daemon_pid(folders.state)) is not None:
        raise ConfigError(f"a daemon (pid {pid}) is already running on {folders.state}")
    # Before the model loads: a damaged queue is refused at once, an empty or missing one rebuilt.
    prepare_queue(folders)
    loaded = open_model(settings, ctx=ctx, progress=sys.stderr.isatty())
    log.info("model_loaded", model=str(loaded.spec), origin=loaded.origin, device=str(loaded.device.device),
             device_reason=loaded.device.reason)
    daemon = Daemon(settings=settings, folders=folders, model=loaded.model)
    install_signal_handlers(daemon)
    with capture_native_stderr():  # OpenCV and libjpeg write to fd 2 directly: make their lines log events
        code = daemon.run()
    return ctx.must_act_status if code == QueueDamaged.exit_status else code


def cmd_status(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.status import collect_status, print_status

    folders = _configured_folders(settings, ctx)  # none configured: the state folder alone will do
    quarantine = folders.quarantine if folders else None
    report = collect_status(folders.state if folders else state_dir(settings, ctx), quarantine=quarantine)
    if args.json:
        print(report.to_json())
    else:
        print_status(report, out=sys.stdout)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.status import retry

    if args.all == (args.path is not None):
        raise ConfigError("give either a quarantined file or --all")
    outcomes = retry(folders_from(settings, ctx), target=args.path, every=args.all)
    for line in outcomes:
        print(line)
    if not outcomes:
        print("nothing in quarantine")
    return EXIT_FAILED if any(line.startswith("skipped") for line in outcomes) else EXIT_OK


def cmd_queue_rebuild(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.rebuild import rebuild_queue

    report = rebuild_queue(folders_from(settings, ctx))
    for line in report.lines():
        print(line)
    config = shlex.quote(os.path.abspath(args.config)) if args.config else "F"
    print(f"start the daemon again: cutout watch --config {config} "
          f"(the service: cutout service install --config {config})")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.doctor import DoctorInputs, report, run_checks

    inputs = DoctorInputs(
        settings=settings, host=ctx.host, store=store_for(settings, ctx), folders=_configured_folders(settings, ctx),
        config=args.config, label=args.label,
    )
    return report(run_checks(inputs), out=sys.stdout)


def _configured_folders(settings: Settings, ctx: Context) -> Folders | None:
    if settings.folders.input is None or settings.folders.output is None:
        return None
    return folders_from(settings, ctx)


def cmd_model_export(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.pipeline.model import export_torchscript

    loaded = open_model(settings, ctx=ctx, device="cpu", progress=sys.stderr.isatty())
    size = args.input_res or settings.pipeline.target_size
    out = export_torchscript(loaded.model.module, out=args.out, input_res=size)
    print(f"wrote {out} (TorchScript, traced at {size}x{size}; use it with --model {out})")
    return EXIT_OK


def cmd_model_fetch(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    spec = parse_model_spec(settings.model.name)
    store = store_for(settings, ctx)
    before = store.pin(spec) if is_hub_model(spec) else None
    revision = settings.model.revision
    print(f"fetching {spec} @ {revision or 'default branch'} into {store.cache}", file=sys.stderr)
    pin = fetch_model(spec, revision=revision, store=store, downloader=ctx.downloader, progress=sys.stderr.isatty())
    changed = "" if before is None or before.revision == pin.revision else f" (was {before.revision})"
    print(f"pinned {spec} at {pin.revision}{changed}: {len(pin.files)} files, pin in {store.pin_file}")
    print("cutout now loads this revision offline; it changes only when you run: cutout model fetch --revision R")
    return EXIT_OK


# --- Service handlers ------------------------------------------------------------------------------
def cmd_service_install(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    spec = checked_agent_spec(args, settings=settings, ctx=ctx)
    host = ctx.host
    if _uses_launchd(args, host=host):
        change = service.install(spec=spec, home=host.home, uid=host.uid, launchctl=service.Launchctl(),
                                 dry_run=args.dry_run)
    elif args.systemd:
        change = service.install_systemd(spec=spec, home=host.home, systemctl=service.Systemctl(), dry_run=args.dry_run)
    else:
        return _show_systemd_unit(spec, home=host.home)
    _print_change(change)
    _print_installed(spec, settings=settings, ctx=ctx, launchd=_uses_launchd(args, host=host))
    return EXIT_OK


def cmd_service_uninstall(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    host, label = ctx.host, service.check_label(args.label)
    if _uses_launchd(args, host=host):
        change = service.uninstall(label=label, home=host.home, uid=host.uid, launchctl=service.Launchctl(),
                                   dry_run=args.dry_run)
    else:
        change = service.uninstall_systemd(label=label, home=host.home, systemctl=service.Systemctl(),
                                           dry_run=args.dry_run)
    _print_change(change)
    return EXIT_OK


def cmd_service_status(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    host, label = ctx.host, service.check_label(args.label)
    launchd = _uses_launchd(args, host=host)
    found = service.service_status(host=host, label=label, systemd=not launchd)
    manager = f"launchd, gui/{host.uid}" if launchd else "systemd --user"
    file = (service.agent_plist_path if launchd else service.systemd_unit_path)(label=label, home=host.home)
    print(f"{label} ({manager})")
    for line in [f"file: {file}", *_status_lines(found), f"logs: {service.default_log_dir(host=host, label=label)}"]:
        print(f"  {line}")
    return EXIT_OK if found.pid is not None else EXIT_FAILED


def _status_lines(found: AgentStatus) -> list[str]:
    running = f"{found.state or 'unknown'}" + (f" (pid {found.pid})" if found.pid is not None else "")
    return [
        f"installed: {'yes' if found.installed else 'no'}",
        f"loaded: {'yes' if found.loaded else 'no'}",
        f"state: {running if found.loaded else 'not loaded'}",
        f"last exit status: {'none' if found.last_exit_status is None else found.last_exit_status}",
    ]


def _uses_launchd(args: argparse.Namespace, *, host: Host) -> bool:
    return host.is_macos and not args.systemd


def checked_agent_spec(args: argparse.Namespace, *, settings: Settings, ctx: Context) -> AgentSpec:
    """The service's spec, only for a config the daemon will accept: a broken one is never installed."""
    if args.config is None:
        raise ConfigError("give the settings file the service runs with: --config F (see config/default.yaml)")
    installs = not args.dry_run and (args.systemd or _uses_launchd(args, host=ctx.host))
    _check_folders(folders_from(settings, ctx), settings=settings, dry_run=not installs)
    choose_device(settings.model.device)  # e.g. `mps` on a machine without it
    _refuse_unfetched_model(settings, ctx=ctx, config=args.config)
    return agent_spec(settings, ctx=ctx, config=args.config, label=args.label)


def _check_folders(folders: Folders, *, settings: Settings, dry_run: bool) -> None:
    from daemon.doctor import check_folders
    from daemon.outputs import check_folder_rules, check_state_files, used_folders, validate_folders
    from daemon.runner import STATE_FILES

    if not dry_run:
        validate_folders(folders, policy=settings.originals, state_files=STATE_FILES)  # the daemon's own check
        return
    # The same refusals without creating any folder: a dry run changes nothing.
    check_folder_rules(used_folders(folders, policy=settings.originals))
    failed = next((c for c in check_folders(folders, policy=settings.originals) if not c.ok), None)
    if failed is not None:
        raise ConfigError(f"{failed.name}: {failed.detail}")
    check_state_files(folders.state, names=STATE_FILES)


def agent_spec(settings: Settings, *, ctx: Context, config: Path, label: str) -> AgentSpec:
    made = service.default_spec(
        config=config, label=label, home=ctx.host.home, python=ctx.host.python, hf_home=ctx.hf_home,
        log_dir=service.default_log_dir(host=ctx.host, label=label),
        offline=True,  # a hub model must be pinned and cached (checked), a local one needs no network
    )
    return replace(made, log_file=settings.logging.file or made.log_file)


def _refuse_unfetched_model(settings: Settings, *, ctx: Context, config: Path) -> None:
    spec = parse_model_spec(settings.model.name)
    if not is_hub_model(spec):
        if spec.kind == "torchscript" and not Path(spec.source).is_file():
            raise ConfigError(f"model.name: model file {spec.source} does not exist")
        return
    # The service gets HF_HOME only, so it reads HF_HOME/hub: check the pin against that cache.
    store = store_for(settings, ctx, cache=ctx.hf_home / "hub")
    plan = plan_load(spec, revision=settings.model.revision, offline=True, store=store)
    if plan.pin is None:
        raise ConfigError(
            f"model {spec} has not been fetched: run `cutout model fetch --config {config}` first "
            "(the service runs offline, on the exact revision fetched)"
        )


def _show_systemd_unit(spec: AgentSpec, *, home: Path) -> int:
    print(
        "launchd is macOS-only, so nothing was installed. The equivalent systemd user unit is below;\n"
        "install it with: cutout service install --systemd --config F",
        file=sys.stderr,
    )
    print(f"# {service.systemd_unit_path(label=spec.label, home=home)}")
    print(service.render_systemd_unit(spec), end="")
    return EXIT_FAILED


def _print_change(change: ServiceChange) -> None:
    if change.dry_run and change.content is not None:
        print(change.content, end="" if change.content.endswith("\n") else "\n")
    for line in change.lines():
        print(line)


def _print_installed(spec: AgentSpec, *, settings: Settings, ctx: Context, launchd: bool) -> None:
    from daemon.doctor import check_privacy, service_paths

    logging = settings.logging
    print(f"log: {spec.log_file} (JSON lines, rotated at {logging.max_bytes} bytes, {logging.backups} kept); "
          f"start-up errors: {spec.log_dir / 'stderr.log'}")
    if not launchd:
        return
    paths = service_paths(host=ctx.host, config=spec.config, folders=folders_from(settings, ctx),
                          policy=settings.originals)
    privacy = check_privacy(paths, host=ctx.host, label=spec.label)
    if privacy.status == "warn":
        print(f"warning: {privacy.detail}\n  fix: {privacy.fix}")


# --- The entry point ---------------------------------------------------------------------------------
Handler = Callable[[argparse.Namespace, Settings, Context], int]


def rebuild_command(args: argparse.Namespace) -> str:
    """`cutout queue rebuild` with the same config and folder flags as this command, ready to paste."""
    words = ["cutout", "queue", "rebuild"]
    if (config := getattr(args, "config", None)) is not None:
        words += ["--config", os.path.abspath(config)]
    for name in FOLDER_FLAGS:
        if (value := getattr(args, name, None)) is not None:
            words += [f"--{name}", os.path.abspath(value)]
    return shlex.join(words) if len(words) > 3 else "cutout queue rebuild --config F"


def _command_name(args: argparse.Namespace) -> str:
    sub = next((s for group in ("service", "model", "queue") if (s := getattr(args, f"{group}_command", None))), None)
    return f"{args.command} {sub}" if sub else str(args.command)


def _configure_logging(args: argparse.Namespace, settings: Settings) -> None:
    stream = sys.stdout if args.command == "watch" else sys.stderr
    # With a log file and no terminal (launchd, systemd), the rotated file replaces stdout:
    # launchd appends stdout to a file forever.
    console = settings.logging.file is None or stream.isatty()
    configure_logging(settings.logging, stream=stream, console=console)


def main(argv: Sequence[str] | None = None, *, context: Context | None = None) -> int:
    args = build_parser().parse_args(argv)
    ctx = context
    try:
        settings = settings_from(args)
        _configure_logging(args, settings)
        ctx = ctx or current_context()
        handler: Handler = args.handler
        return handler(args, settings, ctx)
    except QueueDamaged as exc:
        print(f"cutout {_command_name(args)}: {exc.explain(command=rebuild_command(args))}", file=sys.stderr)
        # Only `watch` runs under a service manager; the others tell a person with the real status.
        return ctx.must_act_status if ctx is not None and args.command == "watch" else exc.exit_status
    except CutoutError as exc:
        print(f"cutout {_command_name(args)}: {exc}", file=sys.stderr)
        return EXIT_USAGE
