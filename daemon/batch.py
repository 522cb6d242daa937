"""`cutout process IN OUT`: one pass over a folder, like the seed's run.py.

Failures never stop the batch; the originals are never touched. The summary
says what failed, why, and that the file is still where it was.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TextIO

import structlog
from tqdm import tqdm

from daemon.errors import JobError
from daemon.layout import iter_inputs, plan_outputs
from daemon.pipeline import ImageOptions, MatteModel, PipelineParams, process_image
from daemon.pipeline.pipeline import DEFAULTS

log = structlog.get_logger("cutout.process")


@dataclass(frozen=True)
class Failure:
    path: PurePosixPath
    reason: str
    message: str


@dataclass
class BatchReport:
    done: list[PurePosixPath] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return len(self.done) + len(self.failed)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """The quarantine reason code and message of any exception a job raised."""
    if isinstance(exc, JobError):
        return exc.reason, str(exc)
    return "internal_error", f"{type(exc).__name__}: {exc}"


def run_batch(
    input_dir: Path,
    output_dir: Path,
    *,
    model: MatteModel,
    params: PipelineParams,
    progress: bool,
    options: ImageOptions = DEFAULTS,
    clock: Callable[[], float] = time.perf_counter,
) -> BatchReport:
    """Process every input under `input_dir` into `output_dir`; never stops on a bad file."""
    plan = plan_outputs(iter_inputs(input_dir))
    report = BatchReport()
    start = clock()
    for rel in tqdm(sorted(plan), unit="img", disable=not progress, dynamic_ncols=True):
        _process_one(rel, plan[rel], input_dir=input_dir, output_dir=output_dir, model=model, params=params,
                     options=options, report=report)
    report.seconds = clock() - start
    return report


def _process_one(
    rel: PurePosixPath,
    out_rel: PurePosixPath,
    *,
    input_dir: Path,
    output_dir: Path,
    model: MatteModel,
    params: PipelineParams,
    options: ImageOptions,
    report: BatchReport,
) -> None:
    try:
        result = process_image(input_dir / rel, model=model, params=params, options=options, output=output_dir / out_rel)
    except Exception as exc:  # one bad file is reported, never fatal to the batch
        reason, message = describe_failure(exc)
        report.failed.append(Failure(rel, reason, message))
        log.warning("image_failed", path=str(rel), reason=reason, message=message, traceback=_trace(exc))
        return
    report.done.append(rel)
    log.info("image_done", path=str(rel), output=str(out_rel), timings=_rounded(result.timings),
             notes=list(result.cutout.notes))


def _trace(exc: BaseException) -> str | None:
    """Tracebacks only for the unexpected: a JobError's message says it all."""
    return None if isinstance(exc, JobError) else "".join(traceback.format_exception(exc))


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {stage: round(seconds, 4) for stage, seconds in timings.items()}


def print_summary(report: BatchReport, *, input_dir: Path, out: TextIO) -> None:
    per_image = report.seconds / report.total if report.total else 0.0
    print(f"done: {len(report.done)}  failed: {len(report.failed)}  ({per_image:.2f} s per image)", file=out)
    for failure in report.failed:
        where = input_dir / failure.path
        print(f"  FAILED {failure.path}: {failure.reason}: {failure.message} (left in place: {where})", file=out)
