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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import structlog
from platformdirs import user_state_dir

from daemon import __version__
from daemon.errors import ConfigError, CutoutError, QueueDamaged
from daemon.fetch import PIN_FILE_NAME, Downloader, ModelStore, fetch_model, hub_download, is_hub_model
from daemon.logs import configure_logging
from daemon.outputs import Folders
from daemon.pipeline.modelspec import DEVICE_NAMES
from daemon.service import DEFAULT_LABEL, Host
from daemon.service import commands as service_commands
from daemon.settings import cpu_threads, image_options, in_flight, load_settings, Settings

if TYPE_CHECKING:
    from daemon.pipeline.model import LoadedModel

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
    """The configured model, from this process's model store (see `daemon.loading`)."""
    from daemon.loading import open_model as open_configured

    return open_configured(settings, store=store_for(settings, ctx), downloader=ctx.downloader, device=device,
                           progress=progress)


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
    from daemon.runner import Daemon, install_signal_handlers
    from daemon.statedir import STATE_FILES, daemon_pid
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
    spec = settings.model.spec
    store = store_for(settings, ctx)
    before = store.pin(spec) if is_hub_model(spec) else None
    revision = settings.model.revision
    print(f"fetching {spec} @ {revision or 'default branch'} into {store.cache}", file=sys.stderr)
    pin = fetch_model(spec, revision=revision, store=store, downloader=ctx.downloader, progress=sys.stderr.isatty())
    changed = "" if before is None or before.revision == pin.revision else f" (was {before.revision})"
    print(f"pinned {spec} at {pin.revision}{changed}: {len(pin.files)} files, pin in {store.pin_file}")
    print("cutout now loads this revision offline; it changes only when you run: cutout model fetch --revision R")
    return EXIT_OK


# --- Service handlers (daemon.service.commands) ---------------------------------------------------
def cmd_service_install(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    store = store_for(settings, ctx, cache=ctx.hf_home / "hub")  # the service gets HF_HOME only
    return service_commands.install(config=args.config, label=args.label, systemd=args.systemd,
                                    dry_run=args.dry_run, settings=settings, ctx=ctx, store=store)


def cmd_service_uninstall(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    return service_commands.uninstall(label=args.label, systemd=args.systemd, dry_run=args.dry_run, host=ctx.host)


def cmd_service_status(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    return service_commands.status(label=args.label, systemd=args.systemd, host=ctx.host)


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
        return exc.exit_status
