"""The `cutout` command line: parse the arguments, build the settings once, call one handler.

The handlers are in `daemon.cli.commands`, the process's surroundings in `daemon.cli.context`;
this module only parses, dispatches, and turns our errors into a message and their
exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

from daemon import __version__
from daemon.cli import commands as cmd
from daemon.cli.commands import EXIT_INTERRUPTED
from daemon.cli.context import Context, current_context
from daemon.errors import CutoutError, QueueDamaged
from daemon.pipeline.modelspec import DEVICE_NAMES
from daemon.pipeline.runtimes import BACKEND_CHOICES
from daemon.service import DEFAULT_LABEL
from daemon.settings import Settings, load_settings


# --- The parser -------------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML settings file (see config/default.yaml)")
    parser.add_argument("--model", help="hf:<repo or folder>, birefnet, or a TorchScript file")
    parser.add_argument("--device", choices=DEVICE_NAMES, help="auto = mps, then cuda, then cpu")
    parser.add_argument("--backend", choices=BACKEND_CHOICES,
                        help="model.backend: torch, or the model exported to onnxruntime / openvino (CPU; an extra); "
                             "auto: openvino when the model runs on an x86-64 CPU and it is installed, else torch")


def _folder_flags(parser: argparse.ArgumentParser) -> None:
    for name in cmd.FOLDER_FLAGS:
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
    _add_reprocess(commands)
    _add_review(commands)
    _add_doctor(commands)
    _add_model(commands)
    _add_service(commands)
    _add_queue(commands)
    _add_dashboard(commands)
    return parser


Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_process(commands: Commands) -> None:
    process = commands.add_parser("process", help="cut out every image of a folder once")
    process.add_argument("input", type=Path, help="folder of images (walked recursively)")
    process.add_argument("output", type=Path, help="folder for the RGBA PNGs (same relative paths)")
    _common(process)
    process.add_argument("--state", type=Path, help="folders.state: where the model pin is kept")
    process.add_argument("--recipe", help="the config's recipe to apply to every file (default: the config's routes)")
    process.add_argument("--review-folder", type=Path,
                         help="doubtful cut-outs (doubt over review.threshold) go here instead, for a look first")
    redo = process.add_mutually_exclusive_group()
    redo.add_argument("--force", action="store_true", help="write every file's outputs, over those already there")
    redo.add_argument("--skip-existing", action="store_true",
                      help="skip every file whose outputs all exist, however old (resume an interrupted batch)")
    process.set_defaults(handler=cmd.cmd_process)


def _add_watch(commands: Commands) -> None:
    watch = commands.add_parser("watch", help="run the hot-folder daemon in the foreground")
    _common(watch)
    _folder_flags(watch)
    watch.add_argument(
        "--log-file", type=Path,
        help="logging.file: JSON log rotated by size; when stdout is not a terminal it replaces stdout",
    )
    watch.add_argument("--review-folder", type=Path,
                       help="review.folder: doubtful cut-outs wait there for `cutout review` (default: off)")
    watch.add_argument("--role", choices=("auto", "worker"),
                       help="watch.role: auto (watch the folder when this is the fleet's watcher) or worker (only process)")
    watch.set_defaults(handler=cmd.cmd_watch)


def _add_status(commands: Commands) -> None:
    status = commands.add_parser("status", help="queue counts, what is running, recent failures")
    status.add_argument("--config", type=Path, help="YAML settings file")
    _folder_flags(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd.cmd_status, logs=False)


def _add_retry(commands: Commands) -> None:
    retry = commands.add_parser("retry", help="send quarantined files back through the queue")
    _path_or_all(retry, path="a quarantined file (or its original path)", every="every quarantined file")
    retry.add_argument("--reason", help="with --all: only the files quarantined for this reason (e.g. truncated)")
    retry.set_defaults(handler=cmd.cmd_retry, logs=False)


def _add_reprocess(commands: Commands) -> None:
    again = commands.add_parser("reprocess", help="run done files through the daemon again (after a recipe changed)")
    _path_or_all(again, path="a file or folder of the hot folder", every="every done file")
    again.set_defaults(handler=cmd.cmd_reprocess)


def _add_review(commands: Commands) -> None:
    review = commands.add_parser(
        "review", help="the doubtful cut-outs waiting in the review folder: list, approve, reject, redo",
    ).add_subparsers(dest="review_command", required=True)
    listing = review.add_parser("list", help="every cut-out waiting for review, the most doubtful first")
    listing.add_argument("--config", type=Path, help="YAML settings file")
    _folder_flags(listing)
    _review_flags(listing)
    listing.set_defaults(handler=cmd.cmd_review_list, logs=False)
    approve = review.add_parser("approve", help="deliver: into the output folder, then the originals policy")
    _path_or_all(approve, path="a waiting cut-out (or its original's path)", every="every waiting cut-out")
    _review_flags(approve)
    approve.set_defaults(handler=cmd.cmd_review_approve, logs=False)
    reject = review.add_parser("reject", help="the original to quarantine (reason rejected), its cut-out beside it")
    _path_or_all(reject, path="a waiting cut-out (or its original's path)", every="every waiting cut-out")
    reject.add_argument("--reason", dest="why", help="why, in words: kept in the quarantine report")
    _review_flags(reject)
    reject.set_defaults(handler=cmd.cmd_review_reject, logs=False)
    redo = review.add_parser("redo", help="make the cut-out again (scored again; it replaces the waiting one)")
    _path_or_all(redo, path="a waiting cut-out (or its original's path)", every="every waiting cut-out")
    redo.add_argument("--recipe", help="a recipe of the config to make it with, instead of its route's")
    redo.add_argument("--model", dest="redo_model",
                      help="another model to make it with (birefnet-hr, birefnet-matting, ...; as model.name takes it)")
    _review_flags(redo)
    redo.set_defaults(handler=cmd.cmd_review_redo, logs=False)


def _review_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--review-folder", type=Path, help="review.folder (overrides the config file)")


def _path_or_all(parser: argparse.ArgumentParser, *, path: str, every: str) -> None:
    """The files a queue-steering command acts on: one PATH or --all, and where the daemon's folders are."""
    parser.add_argument("path", nargs="?", type=Path, help=path)
    parser.add_argument("--all", action="store_true", help=every)
    parser.add_argument("--config", type=Path, help="YAML settings file")
    _folder_flags(parser)


def _add_doctor(commands: Commands) -> None:
    doctor = commands.add_parser(
        "doctor", help="check versions, device, model, folders, privacy and the service; say how to fix problems"
    )
    _common(doctor)
    _folder_flags(doctor)
    _label(doctor)
    doctor.set_defaults(handler=cmd.cmd_doctor)


def _add_model(commands: Commands) -> None:
    model = commands.add_parser("model", help="model tools").add_subparsers(dest="model_command", required=True)
    export = model.add_parser("export", help="the model as one graph: TorchScript, ONNX or OpenVINO (logits out)")
    export.add_argument("--format", choices=("torchscript", "onnx", "openvino"), default="torchscript",
                        help="torchscript (a file for --model); onnx, openvino: the export model.backend runs, cached "
                             "in the state folder and checked against torch")
    export.add_argument("--out", type=Path, help="TorchScript file to write (--format torchscript)")
    export.add_argument("--input-res", type=int, default=None, help="trace size (default: pipeline.target_size)")
    _common(export)
    export.add_argument("--state", type=Path, help="folders.state: where the model pin is kept")
    export.set_defaults(handler=cmd.cmd_model_export)

    listing = model.add_parser("list", help="the BiRefNet family: names, hub repositories, sizes, speed, licences")
    listing.add_argument("--config", type=Path, help="YAML settings file (marks the configured model)")
    listing.set_defaults(handler=cmd.cmd_model_list)

    fetch = model.add_parser("fetch", help="download the model once and pin its exact revision (then offline)")
    fetch.add_argument("--config", type=Path, help="YAML settings file")
    fetch.add_argument("--model", help="hf:<repo> (default: model.name)")
    fetch.add_argument("--revision", help="branch, tag or commit to pin (default: model.revision, else main)")
    fetch.add_argument("--state", type=Path, help="folders.state: where the pin is written")
    fetch.set_defaults(handler=cmd.cmd_model_fetch)


def _add_queue(commands: Commands) -> None:
    queue = commands.add_parser("queue", help="the job queue database").add_subparsers(
        dest="queue_command", required=True
    )
    init = queue.add_parser("init", help="create or upgrade the job store's tables (PostgreSQL: once per fleet)")
    init.add_argument("--config", type=Path, help="YAML settings file")
    init.add_argument("--state", type=Path, help="folders.state (the SQLite queue's folder)")
    init.add_argument("--change-model", action="store_true",
                      help="PostgreSQL: forget the fleet's model, so the next daemon to start sets it (stop them all first)")
    init.set_defaults(handler=cmd.cmd_queue_init)
    rebuild = queue.add_parser(
        "rebuild", help="move a damaged queue aside and rebuild it from the output and quarantine folders"
    )
    rebuild.add_argument("--config", type=Path, help="YAML settings file")
    _folder_flags(rebuild)
    rebuild.set_defaults(handler=cmd.cmd_queue_rebuild)


def _add_dashboard(commands: Commands) -> None:
    dashboard = commands.add_parser(
        "dashboard", help="serve the web dashboard (queue, cutouts, quarantine, retry, /metrics) until stopped"
    )
    dashboard.add_argument("--config", type=Path, help="YAML settings file (the daemon's)")
    _folder_flags(dashboard)
    dashboard.add_argument("--bind", help="dashboard.bind: 127.0.0.1 (default, this machine only) or 0.0.0.0 (needs the token)")
    dashboard.add_argument("--port", type=int, help="dashboard.port (default 8765)")
    dashboard.set_defaults(handler=cmd.cmd_dashboard)


def _add_service(commands: Commands) -> None:
    service = commands.add_parser(
        "service", help="run `cutout watch` at login: launchd on macOS, systemd --user on Linux"
    ).add_subparsers(dest="service_command", required=True)
    install = service.add_parser("install", help="install (or replace) and start the service")
    install.add_argument("--config", type=Path, help="YAML settings file the service runs with (required)")
    _service_flags(install, dry_run=True)
    install.set_defaults(handler=cmd.cmd_service_install)
    uninstall = service.add_parser("uninstall", help="stop the service and remove it")
    _service_flags(uninstall, dry_run=True)
    uninstall.set_defaults(handler=cmd.cmd_service_uninstall)
    status = service.add_parser("status", help="installed? loaded? running? last exit status")
    _service_flags(status, dry_run=False)
    status.set_defaults(handler=cmd.cmd_service_status)


def _service_flags(parser: argparse.ArgumentParser, *, dry_run: bool) -> None:
    _label(parser)
    parser.add_argument(
        "--systemd", action="store_true",
        help="the systemd user unit instead of launchd (on Linux install needs it; uninstall and status use it anyway)",
    )
    if dry_run:
        parser.add_argument("--dry-run", action="store_true", help="print the file and the commands, change nothing")


# --- Settings --------------------------------------------------------------------------------------
def settings_from(args: argparse.Namespace) -> Settings:
    """The one place flags, the config file and defaults meet."""
    overrides = {
        "model.name": getattr(args, "model", None),
        "model.device": getattr(args, "device", None),
        "model.backend": getattr(args, "backend", None),
        "model.revision": getattr(args, "revision", None),
        "logging.file": getattr(args, "log_file", None),
        "watch.role": getattr(args, "role", None),
        "dashboard.bind": getattr(args, "bind", None),
        "dashboard.port": getattr(args, "port", None),
        "review.folder": getattr(args, "review_folder", None),
    }
    overrides.update({f"folders.{name}": getattr(args, name, None) for name in cmd.FOLDER_FLAGS})
    return load_settings(getattr(args, "config", None), overrides=overrides)


# --- The entry point ---------------------------------------------------------------------------------
Handler = Callable[[argparse.Namespace, Settings, Context], int]


def rebuild_command(args: argparse.Namespace, *, verb: str = "rebuild") -> str:
    """`cutout queue rebuild` (or `verb`) with the same settings as this command, ready to paste."""
    return f"cutout queue {verb} {cmd.given_settings(args)}"


def _command_name(args: argparse.Namespace) -> str:
    sub = next((s for group in ("service", "model", "queue", "review") if (s := getattr(args, f"{group}_command", None))), None)
    return f"{args.command} {sub}" if sub else str(args.command)


def _configure_logging(args: argparse.Namespace, settings: Settings) -> None:
    """Logs for the commands that write them. `status` and `retry` print their answer and log
    nothing: they never import structlog, whose `dev` module loads rich's pretty tracebacks
    (about a third of their start-up; tests/test_architecture.py checks they stay that way)."""
    if not getattr(args, "logs", True):
        return
    from daemon.logs import configure_logging, silence_decoder_warnings

    stream = sys.stdout if args.command == "watch" else sys.stderr
    # With a log file and no terminal (launchd, systemd), the rotated file replaces stdout:
    # launchd appends stdout to a file forever.
    console = settings.logging.file is None or stream.isatty()
    configure_logging(settings.logging, stream=stream, console=console)
    silence_decoder_warnings()


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
        print(f"cutout {_command_name(args)}: {exc.explain(command=rebuild_command(args, verb=exc.remedy))}",
              file=sys.stderr)
        # Only `watch` runs under a service manager; the others tell a person with the real status.
        return ctx.must_act_status if ctx is not None and args.command == "watch" else exc.exit_status
    except CutoutError as exc:
        print(f"cutout {_command_name(args)}: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:  # Ctrl-C before a command could say more (loading the model, say)
        print(f"cutout {_command_name(args)}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
