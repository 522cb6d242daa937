"""The stage pipeline around the one inference thread.

    claim ─▶ [CPU pool] read, decode, preprocess ─▶ [this thread] model ─▶ [CPU pool] postprocess,
             composite, encode, atomic write, record

The thread that calls `run_once()` owns the model. Decoding of the next images
and encoding of the previous ones run on a thread pool meanwhile (OpenCV and
numpy release the GIL), with at most `in_flight` images claimed at once so
memory stays flat. Every job ends in exactly one of: done, retry later, or
quarantine; an exception never leaves this module.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import structlog

from daemon.errors import Crashed, JobError, PermanentError, RetriesExhausted, TransientError, Vanished
from daemon.outputs import (
    ErrorReport,
    Folders,
    apply_originals_policy,
    forget_error_file,
    quarantine_file,
    write_output,
)
from daemon.pipeline import ImageOptions, MatteModel, PipelineParams, Prepared, StageTimer, finish, prepare
from daemon.pipeline.pipeline import DEFAULTS
from daemon.pipeline.preprocess import FloatArray
from daemon.queue import Fingerprint, Job, JobQueue
from daemon.settings import OriginalsPolicy, QueueSettings

log = structlog.get_logger("cutout.worker")


@dataclass(frozen=True)
class _Claimed:
    job: Job
    fingerprint: Fingerprint | None
    prepared: Future[Prepared]
    timer: StageTimer


def backoff(*, retries: int, settings: QueueSettings) -> float:
    """Exponential: base, 2 x base, 4 x base, ... capped at the maximum."""
    return float(min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** max(0, retries - 1)))


class Worker:
    """Moves jobs from the queue through the pipeline; call `run_once()` in a loop."""

    def __init__(
        self,
        *,
        model: MatteModel,
        params: PipelineParams,
        folders: Folders,
        queue: JobQueue,
        queue_settings: QueueSettings,
        policy: OriginalsPolicy,
        in_flight: int,
        cpu_threads: int,
        options: ImageOptions = DEFAULTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.model, self.params, self.folders, self.queue = model, params, folders, queue
        self.options = options
        self.queue_settings, self.policy, self.clock = queue_settings, policy, clock
        self.in_flight = in_flight
        self.wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=cpu_threads, thread_name_prefix="cutout-cpu")
        self._slots = threading.BoundedSemaphore(in_flight)
        self._ready: deque[_Claimed] = deque()
        self.completed = 0

    # --- the loop body ----------------------------------------------------------------
    def run_once(self, *, idle_wait: float = 0.5) -> None:
        """Top up the prefetch, then run the model on the oldest prepared image."""
        self._top_up()
        if not self._ready:
            self.wake.wait(self._idle_wait(idle_wait))
            self.wake.clear()
            return
        claimed = self._ready.popleft()
        try:
            prepared = claimed.prepared.result()
            with claimed.timer.stage("inference"):
                matte = self.model.predict(prepared.batch)
        except BaseException as exc:
            self._settle_failure(claimed, exc)
            return
        self._pool.submit(self._finish, claimed, prepared, matte)

    def _idle_wait(self, idle_wait: float) -> float:
        retry_in = self.queue.next_retry_in()
        return idle_wait if retry_in is None else min(idle_wait, max(0.01, retry_in))

    def _top_up(self) -> None:
        while self._slots.acquire(blocking=False):
            job = self.queue.claim()
            if job is None:
                self._slots.release()
                return
            if self._gave_up(job):
                continue
            self._ready.append(self._start(job))

    def _start(self, job: Job) -> _Claimed:
        timer = StageTimer()
        fingerprint = _fingerprint(self.folders, job)
        future = self._pool.submit(
            prepare, self.folders.input / job.source, params=self.params, timer=timer, options=self.options
        )
        return _Claimed(job, fingerprint, future, timer)

    def _gave_up(self, job: Job) -> bool:
        """A file whose earlier starts never finished max_attempts times is not run again."""
        died = job.unfinished_starts - 1
        if died < self.queue_settings.max_attempts:
            return False
        error = Crashed(f"the daemon stopped {died} times while processing this file (crash, kill or power loss)")
        self._quarantine(job, error)
        self._slots.release()
        return True

    # --- after the model --------------------------------------------------------------
    def _finish(self, claimed: _Claimed, prepared: Prepared, matte: FloatArray) -> None:
        try:
            cutout = finish(prepared, matte, params=self.params, timer=claimed.timer)
            with claimed.timer.stage("save"):
                written = write_output(self.folders, claimed.job.output, cutout.png)
            self._record_done(claimed, prepared.sha256)
        except BaseException as exc:
            self._settle_failure(claimed, exc)
            return
        self._log(claimed, "done", output=str(written), size=f"{cutout.width}x{cutout.height}", notes=list(cutout.notes))
        self._release()

    def _record_done(self, claimed: _Claimed, sha256: str) -> None:
        job = claimed.job
        fingerprint = claimed.fingerprint or Fingerprint(job.size, job.mtime_ns)
        self.queue.mark_done(job, content_hash=sha256, fingerprint=fingerprint)
        forget_error_file(self.folders, job.quarantine)
        try:
            apply_originals_policy(self.folders, job.source, policy=self.policy)
        except JobError as exc:  # the cutout is safe; the original simply stays where it is
            log.warning("originals_policy_failed", path=str(job.source), policy=self.policy, error=str(exc))

    # --- failures ---------------------------------------------------------------------
    def _settle_failure(self, claimed: _Claimed, exc: BaseException) -> None:
        """Every failure becomes exactly one of: quarantine, retry, or (vanished) a note."""
        try:
            self._route_failure(claimed, exc)
        except Exception:  # recording the failure failed (disk, database): the next start retries
            log.exception("failure_not_recorded", path=str(claimed.job.source))
        finally:
            self._release()

    def _route_failure(self, claimed: _Claimed, exc: BaseException) -> None:
        job = claimed.job
        if isinstance(exc, Vanished):
            self.queue.mark_failed(job, reason=exc.reason, message=str(exc), quarantine=None)
            self._log(claimed, "vanished", reason=exc.reason)
        elif isinstance(exc, PermanentError):
            where = self._quarantine(job, exc)
            self._log(claimed, "quarantined", reason=exc.reason, message=str(exc), now_at=where)
        elif isinstance(exc, TransientError):
            self._retry(claimed, exc, counts=False)
        elif job.unfinished_starts >= self.queue_settings.max_attempts:
            log.error("job_error", path=str(job.source), traceback="".join(traceback.format_exception(exc)))
            error = RetriesExhausted(f"failed {job.unfinished_starts} times: {type(exc).__name__}: {exc}")
            where = self._quarantine(job, error)
            self._log(claimed, "quarantined", reason=error.reason, message=str(error), now_at=where)
        else:
            log.error("job_error", path=str(job.source), traceback="".join(traceback.format_exception(exc)))
            self._retry(claimed, exc, counts=True)

    def _retry(self, claimed: _Claimed, exc: BaseException, *, counts: bool) -> None:
        job = claimed.job
        reason = exc.reason if isinstance(exc, JobError) else "internal_error"
        retries = job.attempts if counts else job.finished_attempts + 1
        delay = backoff(retries=retries, settings=self.queue_settings)
        self.queue.mark_retry(job, reason=reason, message=str(exc), delay=delay, counts=counts)
        self._log(claimed, "retry", reason=reason, message=str(exc), retry_in=round(delay, 1))

    def _quarantine(self, job: Job, error: JobError) -> str:
        report = ErrorReport(
            file=job.source.as_posix(),
            reason=error.reason,
            message=str(error),
            attempts=job.attempts,
            first_seen=job.first_seen,
            last_attempt=self.clock(),
        )
        moved = quarantine_file(self.folders, job.source, report, previous=job.quarantine)
        self.queue.mark_failed(job, reason=error.reason, message=str(error), quarantine=moved)
        return str(self.folders.quarantine / moved) if moved else "nowhere (file was gone)"

    # --- bookkeeping ------------------------------------------------------------------
    def _release(self) -> None:
        self.completed += 1
        self._slots.release()
        self.wake.set()

    def _log(self, claimed: _Claimed, outcome: str, **fields: object) -> None:
        """The one event per job: what happened, and where the time went."""
        job, now = claimed.job, self.clock()
        log.info(
            "job",
            path=job.source.as_posix(),
            outcome=outcome,
            attempt=job.attempts,
            timings={stage: round(seconds, 4) for stage, seconds in claimed.timer.seconds.items()},
            queue_wait=round((job.started_at or now) - job.queued_at, 3),
            total=round(now - (job.started_at or now), 3),
            **fields,
        )

    def close(self) -> None:
        """Put prefetched jobs back, let the ones past the model finish, stop the pool."""
        while self._ready:
            claimed = self._ready.popleft()
            claimed.prepared.cancel()
            self.queue.release(claimed.job)
            self._slots.release()
        self._pool.shutdown(wait=True, cancel_futures=False)


def _fingerprint(folders: Folders, job: Job) -> Fingerprint | None:
    try:
        return Fingerprint.of(folders.input / job.source)
    except OSError:
        return None
