"""One handler per `cutout` command: each reads its arguments and calls the module that does the work.

The work modules are imported inside the handlers: `cutout status` must not pay for
torch and OpenCV, which only `process`, `watch`, `doctor` and `model export` use.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from daemon.cli.context import Context, configured_folders, folders_from, open_model, state_dir, store_for
from daemon.errors import ConfigError, QueueDamaged, QueueError
from daemon.models.fetch import fetch_model, is_hub_model, pinned_patch_order
from daemon.settings import (
    Settings, check_model_choice, cpu_threads, image_options, in_flight, routing, with_model,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130
"""Ctrl-C, as a shell reports it (128 + SIGINT)."""


FOLDER_FLAGS = ("input", "output", "quarantine", "archive", "state")


def given_settings(args: argparse.Namespace) -> str:
    """How this command was given its settings (`--config F`, the model and folder flags), absolute
    and quoted, for a command line to paste; `--config F` when it was given none."""
    words = []
    if (config := getattr(args, "config", None)) is not None:
        words += ["--config", os.path.abspath(config)]
    if (model := getattr(args, "model", None)) is not None:
        words += ["--model", model]
    for name in FOLDER_FLAGS:
        if (value := getattr(args, name, None)) is not None:
            words += [f"--{name}", os.path.abspath(value)]
    return shlex.join(words) if words else "--config F"


def cmd_process(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.folders.claims import Claimant, FolderClaims
    from daemon.folders.outputs import ensure_writable
    from daemon.work.batch import check_process_folders, print_summary, refuse_overwrite, run_batch

    if not args.input.is_dir():
        print(f"cutout process: input folder {args.input} does not exist", file=sys.stderr)
        return EXIT_USAGE
    # Before the model loads: a refusal should not wait for it.
    # Only the flag's review folder: the config's review.folder holds the daemon's cut-outs.
    review_dir = args.review_folder
    check_process_folders(args.input, args.output, state=settings.folders.state, review=review_dir)
    rules = routing(settings, only=args.recipe)  # an unknown --recipe, before the model loads
    if not (args.force or args.skip_existing):
        refuse_overwrite(args.input, args.output, routing=rules, review_dir=review_dir)
    ensure_writable(args.output, label="the output folder")  # a read-only one: before, not after, the model runs
    if review_dir is not None:
        ensure_writable(review_dir, label="--review-folder")
    claimed = {"output": args.output, **({"review": review_dir} if review_dir is not None else {})}
    with FolderClaims(claimed, claimant=Claimant.this_process(what="cutout process")):
        loaded = open_model(settings, ctx=ctx, progress=sys.stderr.isatty())
        report = run_batch(
            args.input,
            args.output,
            model=loaded.matte_model,
            params=settings.pipeline,
            options=image_options(settings),
            in_flight=in_flight(settings, cores=os.cpu_count()),
            cpu_threads=cpu_threads(settings, cores=os.cpu_count()),
            progress=sys.stderr.isatty(),
            routing=rules,
            skip="existing" if args.skip_existing else "never",
            review_dir=review_dir,
            doubtful_above=settings.review.threshold,
            flip_pass=settings.review.flip_pass,
        )
    print_summary(report, input_dir=args.input, out=sys.stdout)
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if report.failed else EXIT_OK


def cmd_watch(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    import structlog

    from daemon.cli.nativelog import capture_native_stderr
    from daemon.pipeline.matte import MatteModel
    from daemon.folders.claims import Claimant, FolderClaims
    from daemon.folders.outputs import validate_folders
    from daemon.store.rebuild import prepare_queue
    from daemon.store.statedir import STATE_FILES, daemon_pid
    from daemon.watch.guard import EXIT_RESTART, restart_process
    from daemon.watch.runner import Daemon, install_signal_handlers

    folders = folders_from(settings, ctx)
    validate_folders(folders, policy=settings.originals, state_files=STATE_FILES)
    if (pid := daemon_pid(folders.state)) is not None:
        raise ConfigError(f"a daemon (pid {pid}) is already running on {folders.state}")
    # Before the model loads: another daemon on these folders is refused at once (a fleet's
    # members share them: the store's id decides, once the daemon has opened it).
    if settings.queue.store == "sqlite":
        FolderClaims(folders.claimed(),
                     claimant=Claimant.this_process(what="cutout watch", state=folders.state)).check()
    # Before the model loads: a damaged queue is refused at once, an empty or missing one rebuilt.
    if settings.queue.store == "sqlite":
        prepare_queue(folders, routing=routing(settings))
    loaded = open_model(settings, ctx=ctx, progress=sys.stderr.isatty())
    structlog.get_logger("cutout").info("model_loaded", model=str(loaded.spec), origin=loaded.origin, device=str(loaded.device.device),
                                        device_reason=loaded.device.reason, patch_order=loaded.patch_order,
                                        backend=loaded.backend)

    device = str(loaded.device.device)

    def load_other(name: str) -> MatteModel:  # a model a person chose for some files: on this device
        other = open_model(with_model(settings, name), ctx=ctx, device=device)
        structlog.get_logger("cutout").info("model_loaded", model=str(other.spec), origin=other.origin,
                                            for_files_that_chose_it=True)
        return other.matte_model

    daemon = Daemon(settings=settings, folders=folders, model=loaded.matte_model, device=device,
                    load_model=load_other,
                    model_name=f"{loaded.spec}@{loaded.revision}" if loaded.revision else str(loaded.spec))
    # Only what runs the model is kept: with a runtime backend, the eager module it was exported
    # from and checked against (its weights: 0.2 GB for Swin-T, 0.9 GB for Swin-L) is let go.
    del loaded
    install_signal_handlers(daemon)
    with capture_native_stderr():  # OpenCV and libjpeg write to fd 2 directly: make their lines log events
        code = daemon.run()
    if code == EXIT_RESTART:  # the memory guard: this very command again, afresh
        return restart_process()
    return ctx.must_act_status if code == QueueDamaged.exit_status else code


def cmd_status(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.cli.status import collect_status, print_status

    folders = configured_folders(settings, ctx)  # none configured: the state folder alone will do
    quarantine = folders.quarantine if folders else None
    report = collect_status(folders.state if folders else state_dir(settings, ctx), quarantine=quarantine,
                            queue_settings=settings.queue, doubtful_above=settings.review.threshold)
    if args.json:
        print(report.to_json())
    else:
        print_status(report, out=sys.stdout)
    return QueueError.exit_status if report.store_problem else EXIT_OK


def cmd_retry(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.store.steering import retry

    if args.all == (args.path is not None):
        raise ConfigError("give either a quarantined file or --all")
    if args.reason and not args.all:
        raise ConfigError("--reason goes with --all: every quarantined file of that reason")
    outcomes = retry(folders_from(settings, ctx), target=args.path, every=args.all, queue_settings=settings.queue,
                     routing=routing(settings), reason=args.reason)
    for line in outcomes:
        print(line)
    if not outcomes:
        print("nothing in quarantine" + (f" for the reason {args.reason}" if args.reason else ""))
    return EXIT_FAILED if any(line.startswith("skipped") for line in outcomes) else EXIT_OK


def cmd_reprocess(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.store.steering import reprocess

    if args.all == (args.path is not None):
        raise ConfigError("give either a file or folder of the hot folder, or --all")
    for line in reprocess(folders_from(settings, ctx), target=args.path, queue_settings=settings.queue,
                          routing=routing(settings)):
        print(line)
    return EXIT_OK


def cmd_review_list(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.store.review import waiting

    found = waiting(folders_from(settings, ctx), queue_settings=settings.queue, routing=routing(settings))
    for job, files in found:
        parts = ", ".join(f"{name} {value:.2f}" for name, value in sorted((job.doubt_parts or {}).items(),
                                                                          key=lambda part: -part[1]))
        score = "?   " if job.doubt is None else f"{job.doubt:.2f}"  # unknown: found by a queue rebuild
        print(f"{score}  {files[0]}  (from {job.source.as_posix()}; {parts or 'its parts unknown'})")
    if not found:
        print("nothing waits for review")
    return EXIT_OK


def _review_target(args: argparse.Namespace) -> None:
    if args.all == (args.path is not None):
        raise ConfigError("give either a waiting cut-out (or its original's path) or --all")


def _said(lines: list[str]) -> int:
    for line in lines:
        print(line)
    if not lines:
        print("nothing waits for review")
    return EXIT_FAILED if any(line.startswith("skipped") for line in lines) else EXIT_OK


def cmd_review_approve(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.store.review import approve

    _review_target(args)
    return _said(approve(folders_from(settings, ctx), target=args.path, policy=settings.originals,
                         queue_settings=settings.queue, routing=routing(settings)))


def cmd_review_reject(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.store.review import reject

    _review_target(args)
    return _said(reject(folders_from(settings, ctx), target=args.path, why=args.why, queue_settings=settings.queue,
                        routing=routing(settings)))


def cmd_review_redo(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.store.review import redo

    _review_target(args)
    if args.redo_model is not None:
        check_model_choice(settings, args.redo_model)
    return _said(redo(folders_from(settings, ctx), target=args.path, recipe=args.recipe, model=args.redo_model,
                      queue_settings=settings.queue, routing=routing(settings)))


def cmd_dashboard(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.companions.dashboard.server import serve

    return serve(settings, folders_from(settings, ctx))


def cmd_queue_init(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.store.configured import init_store

    print(init_store(settings.queue, state=state_dir(settings, ctx), change_model=args.change_model))
    return EXIT_OK


def cmd_queue_rebuild(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.store.rebuild import rebuild_queue

    report = rebuild_queue(folders_from(settings, ctx), routing=routing(settings))
    for line in report.lines():
        print(line)
    config = shlex.quote(os.path.abspath(args.config)) if args.config else "F"
    print(f"start the daemon again: cutout watch --config {config} "
          f"(the service: cutout service install --config {config})")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.cli.doctor import DoctorInputs, report, run_checks

    inputs = DoctorInputs(
        settings=settings, host=ctx.host, store=store_for(settings, ctx), folders=configured_folders(settings, ctx),
        config=args.config, label=args.label, given=given_settings(args),
    )
    return report(run_checks(inputs), out=sys.stdout)


def cmd_model_export(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from dataclasses import replace

    from daemon.pipeline.model import export_torchscript

    if args.format != "torchscript":
        return _export_for_backend(args, settings, ctx)
    if args.out is None:
        raise ConfigError("--format torchscript writes a file you name: give --out F")
    # Traced from the plain eager module on the CPU: whatever model.backend (auto included),
    # precision or compile say, no runtime's export is made, no GPU is needed, nothing is compiled.
    eager = replace(settings, model=replace(settings.model, backend="torch", precision="float32", compile=False))
    loaded = open_model(eager, ctx=ctx, device="cpu", progress=sys.stderr.isatty())
    size = args.input_res or settings.pipeline.target_size
    out = export_torchscript(loaded.model.module, out=args.out, input_res=size)
    print(f"wrote {out} (TorchScript, traced at {size}x{size}; use it with --model {out})")
    return EXIT_OK


def _export_for_backend(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    """The export `model.backend` runs, made (or found) now and checked against torch: the daemon's
    first start then has nothing to make."""
    from dataclasses import replace

    from daemon.pipeline.modelspec import Precision
    from daemon.pipeline.runtimes import Backend

    if args.out is not None or args.input_res is not None:
        raise ConfigError(f"--format {args.format} goes into the state folder at pipeline.target_size "
                          "(where the daemon looks for it): leave out --out and --input-res")
    backend: Backend = "onnxruntime" if args.format == "onnx" else "openvino"
    # model.precision: int8 is OpenVINO's quantized export; ONNX is always the float32 one.
    precision: Precision = "int8" if backend == "openvino" and settings.model.precision == "int8" else "float32"
    chosen = replace(settings, model=replace(settings.model, backend=backend, device="cpu", precision=precision,
                                             compile=False))
    loaded = open_model(chosen, ctx=ctx, progress=sys.stderr.isatty())
    quantized = ", INT8" if precision == "int8" else ""
    print(f"{loaded.export} ({args.format}{quantized}, {settings.pipeline.target_size}x{settings.pipeline.target_size}, "
          f"checked against torch): model.backend: {backend} uses it")
    return EXIT_OK


def cmd_model_list(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.pipeline.modelspec import FAMILY, parse_model_spec

    configured, store = str(settings.model.spec), store_for(settings, ctx)
    print(f"{'':2}{'name':<18} {'hub repository':<30} {'backbone':<9} {'size':>5}  {'speed':<28} {'licence':<7} "
          f"{'patches':<12} use")
    for family in FAMILY.values():
        mark = "* " if family.name == configured else "  "
        patches = pinned_patch_order(parse_model_spec(family.name), store=store)
        print(f"{mark}{family.name:<18} {family.repo:<30} {family.backbone:<9} {family.size:>5}  {family.speed:<28} "
              f"{family.licence:<7} {patches:<12} {family.use}")
    print("\n* the configured model. Each runs the built-in BiRefNet on its repository's model.safetensors (no "
          "remote code).\npatches: the decoder's patch order its pinned revision's birefnet.py uses (einops or "
          "legacy; unknown: its own code runs; -: not fetched).\n"
          "Also: hf:<repo or folder> (the repository's own code, pinned) and a TorchScript file path.")
    return EXIT_OK


def cmd_model_fetch(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    spec = settings.model.spec
    store = store_for(settings, ctx)
    before = store.pin(spec) if is_hub_model(spec) else None
    revision = settings.model.revision
    print(f"fetching {spec} @ {revision or 'default branch'} into {store.cache}", file=sys.stderr)
    pin = fetch_model(spec, revision=revision, store=store, downloader=ctx.downloader, progress=sys.stderr.isatty())
    changed = "" if before is None or before.revision == pin.revision else f" (was {before.revision})"
    print(f"pinned {spec} at {pin.revision}{changed}: {len(pin.files)} file{'s' if len(pin.files) != 1 else ''}, pin in {store.pin_file}")
    print("cutout now loads this revision offline; it changes only when you run: cutout model fetch --revision R")
    return EXIT_OK


# --- Service handlers (daemon.cli.service) ---------------------------------------------------
def cmd_service_install(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.cli import service as service_commands

    store = store_for(settings, ctx, cache=ctx.hf_home / "hub")  # the service gets HF_HOME only
    return service_commands.install(config=args.config, label=args.label, systemd=args.systemd,
                                    dry_run=args.dry_run, settings=settings, ctx=ctx, store=store)


def cmd_service_uninstall(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.cli import service as service_commands

    return service_commands.uninstall(label=args.label, systemd=args.systemd, dry_run=args.dry_run, host=ctx.host)


def cmd_service_status(args: argparse.Namespace, settings: Settings, ctx: Context) -> int:
    from daemon.cli import service as service_commands

    return service_commands.status(label=args.label, systemd=args.systemd, host=ctx.host)
