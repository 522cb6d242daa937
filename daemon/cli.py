"""The `cutout` command line: parse, build the settings once, call the module that does the work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from daemon import __version__
import structlog
from platformdirs import user_state_dir

from daemon.errors import ConfigError, CutoutError
from daemon.logs import configure_logging
from daemon.pipeline.model import DEVICE_NAMES, LoadedModel, choose_device, load_model, parse_model_spec
from daemon.outputs import Folders
from daemon.settings import Settings, load_settings

log = structlog.get_logger("cutout")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML settings file (see config/default.yaml)")
    parser.add_argument("--model", help="hf:<repo or folder>, birefnet, or a TorchScript file")
    parser.add_argument("--device", choices=DEVICE_NAMES, help="auto = mps, then cuda, then cpu")


FOLDER_FLAGS = ("input", "output", "quarantine", "archive", "state")


def _folder_flags(parser: argparse.ArgumentParser) -> None:
    for name in FOLDER_FLAGS:
        parser.add_argument(f"--{name}", type=Path, help=f"folders.{name} (overrides the config file)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cutout", description="Hot-folder background remover (BiRefNet).")
    parser.add_argument("--version", action="version", version=f"cutout {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    process = commands.add_parser("process", help="cut out every image of a folder once")
    process.add_argument("input", type=Path, help="folder of images (walked recursively)")
    process.add_argument("output", type=Path, help="folder for the RGBA PNGs (same relative paths)")
    _common(process)
    process.set_defaults(handler=cmd_process)

    watch = commands.add_parser("watch", help="run the hot-folder daemon in the foreground")
    _common(watch)
    _folder_flags(watch)
    watch.set_defaults(handler=cmd_watch)

    status = commands.add_parser("status", help="queue counts, what is running, recent failures")
    status.add_argument("--config", type=Path, help="YAML settings file")
    _folder_flags(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)

    retry = commands.add_parser("retry", help="send quarantined files back through the queue")
    retry.add_argument("path", nargs="?", type=Path, help="a quarantined file (or its original path)")
    retry.add_argument("--all", action="store_true", help="every quarantined file")
    retry.add_argument("--config", type=Path, help="YAML settings file")
    _folder_flags(retry)
    retry.set_defaults(handler=cmd_retry)

    doctor = commands.add_parser("doctor", help="check versions, device and model; say how to fix problems")
    _common(doctor)
    doctor.set_defaults(handler=cmd_doctor)

    model = commands.add_parser("model", help="model tools").add_subparsers(dest="model_command", required=True)
    export = model.add_parser("export", help="trace the model to a TorchScript file (the seed's get_model.py)")
    export.add_argument("--out", type=Path, required=True, help="TorchScript file to write")
    export.add_argument("--input-res", type=int, default=None, help="trace size (default: pipeline.target_size)")
    _common(export)
    export.set_defaults(handler=cmd_model_export)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The one place flags, the config file and defaults meet."""
    overrides = {"model.name": getattr(args, "model", None), "model.device": getattr(args, "device", None)}
    overrides.update({f"folders.{name}": getattr(args, name, None) for name in FOLDER_FLAGS})
    return load_settings(args.config, overrides=overrides)


def open_model(settings: Settings) -> LoadedModel:
    model = settings.model
    return load_model(
        parse_model_spec(model.name),
        device=choose_device(model.device),
        revision=model.revision,
        offline=model.offline,
        size=settings.pipeline.target_size,
    )


def cmd_process(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.batch import print_summary, run_batch

    if not args.input.is_dir():
        print(f"cutout process: input folder {args.input} does not exist", file=sys.stderr)
        return EXIT_USAGE
    loaded = open_model(settings)
    report = run_batch(
        args.input, args.output, model=loaded.model, params=settings.pipeline, progress=sys.stderr.isatty()
    )
    print_summary(report, input_dir=args.input, out=sys.stdout)
    return EXIT_FAILED if report.failed else EXIT_OK


def folders_from(settings: Settings) -> Folders:
    return Folders.from_settings(settings.folders, default_state=Path(user_state_dir("cutout")))


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.outputs import validate_folders
    from daemon.runner import Daemon, daemon_pid, install_signal_handlers

    folders = folders_from(settings)
    validate_folders(folders, policy=settings.originals)
    if (pid := daemon_pid(folders.state)) is not None:
        raise ConfigError(f"a daemon (pid {pid}) is already running on {folders.state}")
    loaded = open_model(settings)
    log.info("model_loaded", model=str(loaded.spec), origin=loaded.origin, device=str(loaded.device.device),
             device_reason=loaded.device.reason)
    daemon = Daemon(settings=settings, folders=folders, model=loaded.model)
    install_signal_handlers(daemon)
    return daemon.run()


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.status import collect_status, print_status

    report = collect_status(folders_from(settings))
    if args.json:
        print(report.to_json())
    else:
        print_status(report, out=sys.stdout)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.status import retry

    if args.all == (args.path is not None):
        raise ConfigError("give either a quarantined file or --all")
    sent = retry(folders_from(settings), target=args.path, every=args.all)
    for path in sent:
        print(f"queued again: {path}")
    if not sent:
        print("nothing in quarantine")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.doctor import report, run_checks

    return report(run_checks(settings), out=sys.stdout)


def cmd_model_export(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.pipeline.model import export_torchscript

    loaded = load_model(
        parse_model_spec(settings.model.name),
        device=choose_device("cpu"),
        revision=settings.model.revision,
        offline=settings.model.offline,
    )
    size = args.input_res or settings.pipeline.target_size
    out = export_torchscript(loaded.model.module, out=args.out, input_res=size)
    print(f"wrote {out} (TorchScript, traced at {size}x{size}; use it with --model {out})")
    return EXIT_OK


Handler = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        configure_logging(settings.logging, stream=sys.stdout if args.command == "watch" else sys.stderr)
        handler: Handler = args.handler
        return handler(args, settings)
    except CutoutError as exc:
        print(f"cutout {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
