"""`cutout process IN OUT`: one pass over a folder, like the seed's run.py.

Failures never stop the batch; the originals are never touched. The summary
says what failed, why, and that the file is still where it was.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal, TextIO

import structlog
from tqdm import tqdm

from daemon.atomic import sweep_temp_files, write_atomic
from daemon.errors import ConfigError, JobError, from_os_error
from daemon.folders.layout import iter_inputs
from daemon.folders.outputs import check_folder_rules
from daemon.folders.routing import SEED_ROUTING, Routing, contents, plan_files
from daemon.pipeline.constants import DOUBTFUL, ImageOptions, PipelineParams, doubt_reasons
from daemon.pipeline.doubt import Doubt
from daemon.pipeline.matte import MatteModel
from daemon.pipeline.pipeline import Cutout, Prepared
from daemon.pipeline.pipeline import DEFAULTS
from daemon.pipeline.recipe import OutputFile
from daemon.work.stages import Stages, Task

log = structlog.get_logger("cutout.process")


@dataclass(frozen=True)
class Failure:
    path: PurePosixPath
    reason: str
    message: str


Skip = Literal["existing", "never"]
"""Which files a batch leaves alone: those whose outputs all exist (`--skip-existing`: resume an
interrupted batch), or none (`--force`). Without either flag `cutout process` refuses to write
over outputs that are there (`refuse_overwrite`): a rerun is always a decision."""


@dataclass
class BatchReport:
    done: list[PurePosixPath] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    skipped: list[PurePosixPath] = field(default_factory=list)
    doubtful: dict[PurePosixPath, Doubt] = field(default_factory=dict)
    """Done files whose cut-out's doubt is over the threshold: worth a look before they go out."""
    review_dir: Path | None = None
    """Where the doubtful cut-outs were written instead of the output folder (`--review-folder`)."""
    seconds: float = 0.0
    interrupted: int = 0
    """Files not done because the run was interrupted (Ctrl-C)."""

    @property
    def total(self) -> int:
        return len(self.done) + len(self.failed)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """The quarantine reason code and message of any exception a job raised."""
    if isinstance(exc, JobError):
        return exc.reason, str(exc)
    return "internal_error", f"{type(exc).__name__}: {exc}"


def check_process_folders(input_dir: Path, output_dir: Path, *, state: Path | None, review: Path | None = None) -> None:
    """The rule of `cutout watch` for the folders a batch uses: input, output and, when set, the
    review and state folders must be apart. `process DIR DIR` would overwrite PNG originals with
    their cutouts; `process DIR DIR/cutouts` would cut out its own outputs on the next run."""
    named = {"input": input_dir, "output": output_dir} | ({"state": state} if state is not None else {})
    named |= {"review": review} if review is not None else {}
    check_folder_rules(named, labels={"input": "the input folder", "output": "the output folder",
                                      "review": "--review-folder"})


def run_batch(
    input_dir: Path,
    output_dir: Path,
    *,
    model: MatteModel,
    params: PipelineParams,
    progress: bool,
    options: ImageOptions = DEFAULTS,
    in_flight: int = 4,
    cpu_threads: int = 2,
    clock: Callable[[], float] = time.perf_counter,
    routing: Routing = SEED_ROUTING,
    skip: Skip = "never",
    review_dir: Path | None = None,
    doubtful_above: float = DOUBTFUL,
    flip_pass: bool = False,
) -> BatchReport:
    """Process every input under `input_dir` into `output_dir`; never stops on a bad file.
    `review_dir`: a cut-out whose doubt is over `doubtful_above` goes there instead, at the same
    relative path, for a person to look at before it goes out.

    The images go through the same overlapped stages as the daemon's (decode ahead,
    encode behind the model), so a batch is limited by the slower of model and CPU.
    """
    check_process_folders(input_dir, output_dir, state=None, review=review_dir)
    for folder in (output_dir, review_dir):
        if folder is not None and folder.is_dir():
            sweep_temp_files(folder)  # what a killed run was writing: never a finished output
    plan = plan_files(iter_inputs(input_dir), routing=routing)
    places = [output_dir, *([review_dir] if review_dir is not None else [])]
    report = BatchReport(review_dir=review_dir, skipped=[] if skip == "never" else [
        rel for rel, files in plan.items()
        if any(all((place / f.path).is_file() for f in files) for place in places)])
    for rel in report.skipped:
        del plan[rel]
    start = clock()
    with tqdm(total=len(plan), unit="img", disable=not progress, dynamic_ncols=True) as bar:
        recorder = _Recorder(output_dir=output_dir, plan=plan, report=report, bar=bar, doubtful_above=doubtful_above)
        stages: Stages[PurePosixPath] = Stages(
            model=model, params=params, options=options, in_flight=in_flight, cpu_threads=cpu_threads,
            claim=_claims(iter(sorted(plan)), input_dir=input_dir), on_done=recorder.done, on_failed=recorder.failed,
            recipes=routing.recipes_of, flip_pass=flip_pass,
        )
        try:
            _drive(stages)
        except KeyboardInterrupt:  # Ctrl-C: what was in flight finished (Stages.close), the rest waits
            report.interrupted = len(plan) - report.total
    report.done.sort()
    report.failed.sort(key=lambda failure: failure.path)
    report.seconds = clock() - start
    return report


def refuse_overwrite(input_dir: Path, output_dir: Path, *, routing: Routing, review_dir: Path | None = None) -> None:
    """Before the model loads: outputs this batch would write that are already there (in the
    output folder, or the review folder) stop it, with the two ways on (outputs are written
    atomically, so one that is there is whole)."""
    plan = plan_files(iter_inputs(input_dir), routing=routing)
    places = [output_dir, *([review_dir] if review_dir is not None else [])]
    there = [(place, file.path) for files in plan.values() for file in files for place in places
             if (place / file.path).exists()]
    if there:
        raise ConfigError(
            f"{len(there)} of this batch's output files are already in {there[0][0]} (first: {there[0][1]}): "
            "--force writes them again, --skip-existing keeps them and does only the files that have none"
        )


def _claims(todo: Iterator[PurePosixPath], *, input_dir: Path) -> Callable[[], tuple[PurePosixPath, Path] | None]:
    """The batch's next file each time a slot frees, None once all are claimed."""

    def claim() -> tuple[PurePosixPath, Path] | None:
        rel = next(todo, None)
        return None if rel is None else (rel, input_dir / rel)

    return claim


def _drive(stages: Stages[PurePosixPath]) -> None:
    """Claim as slots free up; run the model; wait until every image is through."""
    try:
        while True:
            stages.top_up()
            if not stages.infer_next():
                if stages.drained:
                    return
                stages.wake.wait(0.05)
                stages.wake.clear()
    finally:
        stages.close()


@dataclass
class _Recorder:
    """What `run_batch` does with each finished image (called on pool threads)."""

    output_dir: Path
    plan: dict[PurePosixPath, list[OutputFile]]
    report: BatchReport
    bar: tqdm
    doubtful_above: float = DOUBTFUL
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self, task: Task[PurePosixPath], prepared: Prepared, cutout: Cutout) -> None:
        files = contents(self.plan[task.key], cutout.files)
        judged = cutout.doubt.rounded() if cutout.doubt else None
        doubtful = judged is not None and judged.score > self.doubtful_above
        root = self.report.review_dir if doubtful and self.report.review_dir else self.output_dir
        other = self.output_dir if root != self.output_dir else self.report.review_dir
        with task.timer.stage("save"):
            for rel, data in files:
                _write(root / rel, data)
                if other is not None:  # a rerun: this file's earlier verdict, in the other folder, goes
                    (other / rel).unlink(missing_ok=True)
        with self.lock:
            self.report.done.append(task.key)
            if doubtful and judged is not None:
                self.report.doubtful[task.key] = judged
            self.bar.update()
        log.info("image_done", path=str(task.key), output=[str(root / rel) for rel, _ in files],
                 timings=_rounded(task.timer.seconds), notes=list(cutout.notes),
                 doubt=None if judged is None else judged.score)

    def failed(self, task: Task[PurePosixPath], exc: BaseException) -> None:
        reason, message = describe_failure(exc)
        with self.lock:
            self.report.failed.append(Failure(task.key, reason, message))
            self.bar.update()
        log.warning("image_failed", path=str(task.key), reason=reason, message=message, traceback=_trace(exc))


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    except OSError as exc:  # as `cutout watch` reports it: disk_full, permission_denied, ...
        raise from_os_error(exc, doing=f"writing {path}") from exc


def _trace(exc: BaseException) -> str | None:
    """Tracebacks only for the unexpected: a JobError's message says it all."""
    return None if isinstance(exc, JobError) else "".join(traceback.format_exception(exc))


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {stage: round(seconds, 4) for stage, seconds in timings.items()}


def print_summary(report: BatchReport, *, input_dir: Path, out: TextIO) -> None:
    per_image = report.seconds / report.total if report.total else 0.0
    skipped = f"  skipped: {len(report.skipped)} (outputs already there)" if report.skipped else ""
    print(f"done: {len(report.done)}  failed: {len(report.failed)}{skipped}  ({per_image:.2f} s per image)", file=out)
    for failure in report.failed:
        where = input_dir / failure.path
        print(f"  FAILED {failure.path}: {failure.reason}: {failure.message} (left in place: {where})", file=out)
    fate = f"in {report.review_dir}, not delivered" if report.review_dir else "worth a look"
    for path, judged in sorted(report.doubtful.items()):
        print(f"  DOUBTFUL {path}: doubt {judged.score:.2f} ({doubt_reasons(judged.parts)}): {fate}", file=out)
    if report.interrupted:
        print(f"interrupted: {report.interrupted} file{'s' if report.interrupted != 1 else ''} not done; every "
              "file written is whole. To do the rest, run the same command again with --skip-existing", file=out)
