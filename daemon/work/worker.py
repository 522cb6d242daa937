"""The daemon's worker: queue jobs through the stages (stages.py), and what each outcome means.

The thread that calls `run_once()` owns the model. Every job ends in exactly
one of: done (atomic write, then recorded), retry later, or quarantine; an
exception never leaves this module.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import structlog

from daemon.errors import (
    Crashed,
    FileChanged,
    JobError,
    NameTaken,
    NameTooLong,
    PermanentError,
    QueueDamaged,
    QueueError,
    RetriesExhausted,
    StoreUnavailable,
    TransientError,
    Truncated,
    Undecodable,
    Unsupported,
    Vanished,
    VolumeUnavailable,
)
from daemon.folders.layout import NAME_MAX, display, name_bytes, storable
from daemon.folders.outputs import (
    ErrorReport,
    Folders,
    apply_originals_policy,
    forget_error_file,
    move_to_quarantine,
    quarantine_target,
    staged_outputs,
)
from daemon.folders.outputs import OriginalsPolicy
from daemon.folders.review import forget_waiting
from daemon.folders.routing import SEED_ROUTING, Routing, contents
from daemon.folders.volume import ALWAYS_THERE, VolumeState
from daemon.pipeline.constants import ImageOptions, PipelineParams
from daemon.pipeline.doubt import Doubt
from daemon.pipeline.matte import MatteModel
from daemon.pipeline.pipeline import Cutout, Prepared, StageTimer
from daemon.pipeline.pipeline import DEFAULTS
from daemon.pipeline.recipe import OutputFile
from daemon.settings import QueueSettings
from daemon.store.jobs import Fingerprint, Job, JobStore
from daemon.work.record import JobRecord
from daemon.work.shelf import ModelShelf
from daemon.work.stages import Stages, Task

log = structlog.get_logger("cutout.worker")

MAX_KILLS_ALONE = 10
"""Outside kills (`kill -9`, a stop timeout, a power cut) that land while a file runs alone
are rarely its fault, so they count far less than crashes; this many still quarantine a
file that gets the process killed every time it runs (the OOM killer), so that the
folder behind it is not blocked forever."""


@dataclass
class _Hold:
    """A job this worker claimed and has not ended, and what the store knows of it."""

    job: Job
    renewed_at: float | None
    """The worker's clock when its lease was last extended (its claim, a heartbeat); None: lost."""
    in_stage: bool | None
    """Whether the store has it inside a stage (None: unknown, a mark the store could not take)."""


@dataclass(frozen=True)
class _Claimed:
    """The queue's job and the file's stat at claim time (recorded with the result)."""

    job: Job
    fingerprint: Fingerprint | None


def backoff(*, retries: int, settings: QueueSettings) -> float:
    """Exponential: base, 2 x base, 4 x base, ... capped at the maximum."""
    return float(min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** max(0, retries - 1)))


class Worker:
    """Moves jobs from the queue through the stages; call `run_once()` in a loop."""

    def __init__(
        self,
        *,
        model: MatteModel,
        params: PipelineParams,
        folders: Folders,
        queue: JobStore,
        queue_settings: QueueSettings,
        policy: OriginalsPolicy,
        in_flight: int,
        cpu_threads: int,
        options: ImageOptions = DEFAULTS,
        clock: Callable[[], float] = time.time,
        settle_seconds: float = 0.0,
        follow_symlinks: bool = False,
        volume: VolumeState = ALWAYS_THERE,
        routing: Routing = SEED_ROUTING,
        on_record: Callable[[JobRecord], object] = lambda record: None,
        review_above: float | None = None,
        models: ModelShelf | None = None,
        flip_pass: bool = False,
    ) -> None:
        self.folders, self.queue, self.routing, self.on_record = folders, queue, routing, on_record
        self.review_above = review_above if folders.review is not None else None
        """A cut-out whose doubt is above this waits in the review folder (None: the step is off)."""
        self.queue_settings, self.policy, self.clock = queue_settings, policy, clock
        self.settle_seconds, self.follow_symlinks, self.volume = settle_seconds, follow_symlinks, volume
        self.wake = threading.Event()
        self._quarantine_lock = threading.Lock()
        self._reserved: set[PurePosixPath] = set()
        """Quarantine names chosen by a move still on its way (see `_reserving`)."""
        self._alone: int | None = None
        """The suspect running alone (its job id): nothing else is claimed until it ends."""
        self._held: dict[int, _Hold] = {}
        """The jobs this worker has claimed and not yet ended, by id: their leases need heartbeats."""
        self._unrecorded: deque[Job] = deque()
        """Jobs whose retry the store could not write: appended by the stage pool, released by run_once."""
        self._held_lock = threading.Lock()
        self.done = 0
        """Images this worker finished (its outputs published) since it started."""
        self.models = models or ModelShelf(model=model, params=params)
        """The daemon's model, and one a person chose for some files (`cutout review redo --model`)."""
        self.stages: Stages[_Claimed] = Stages(
            model=model, params=params, options=options, in_flight=in_flight, cpu_threads=cpu_threads,
            claim=self._claim, on_done=self._done, on_failed=self._failed, on_stage=self._on_stage, wake=self.wake,
            recipes=lambda claimed: routing.recipes_of(claimed.job.source, claimed.job.recipes),
            params_of=lambda claimed: self.models.params_for(claimed.job.model),
            model_of=lambda claimed: self.models.model_for(claimed.job.model), flip_pass=flip_pass,
        )

    # --- the loop body ----------------------------------------------------------------
    def run_once(self, *, idle_wait: float = 0.5) -> None:
        """Top up the prefetch, then run the model on the oldest prepared image."""
        self._record_the_unrecorded()
        self.stages.top_up()
        if not self.stages.infer_next():
            self.wake.wait(self._idle_wait(idle_wait))
            self.wake.clear()

    def _idle_wait(self, idle_wait: float) -> float:
        retry_in = self.queue.next_retry_in()
        return idle_wait if retry_in is None else min(idle_wait, max(0.01, retry_in))

    def _claim(self) -> tuple[_Claimed, Path] | None:
        if self._alone is not None or not self.volume.available:
            return None
        # Claimed inside the decode stage when a thread starts it at once: one write less per job.
        while (job := self.queue.claim(suspect_ok=self.stages.idle, stage=self._first_stage())) is not None:
            claimed, refusal = self._judged_claim(job)
            if refusal is None:
                self._hold(job)
                return claimed, self.folders.input / job.source
            # Quarantined here, under the stages' claim lock: a refusal is rare and quick (a rename
            # and one store write), and handing it to the model thread instead would leave it
            # claimed for up to a forward (seconds to minutes) with its reason unsaid.
            self._failed(Task(claimed, self.folders.input / job.source, StageTimer(), _NOT_RUN, threading.Event()), refusal)
        return None

    def _judged_claim(self, job: Job) -> tuple[_Claimed, JobError | None]:
        """The claimed job, its file's stat, and why it must not run (None: it may). A file that
        cannot even be looked at (EIO) puts the job back, uncounted, before the error goes on: left
        `running`, nothing would take it until its lease ran out."""
        try:
            claimed = _Claimed(job, _fingerprint(self.folders, job, follow=self.follow_symlinks))
            refusal = self._refusal(claimed)
        except Exception:
            self.queue.release(job)
            raise
        if job.suspect:  # inside a stage when the process died: it runs alone, to clear or convict it
            self._alone = job.id
            log.warning("suspect_runs_alone", path=display(job.source), crashes=job.crashes)
        return claimed, refusal

    def _first_stage(self) -> str | None:
        return "decode" if self.stages.decode_starts_now() else None

    def _refusal(self, claimed: _Claimed) -> JobError | None:
        """Why a claimed job must not run at all, or None."""
        job, limit = claimed.job, self.queue_settings.max_attempts
        if job.crashes >= limit:
            return Crashed(
                f"the daemon died {job.crashes} times while processing only this file, each time of a crash"
                " (its traceback is in the log as previous_process_crashed)"
            )
        if job.kills >= MAX_KILLS_ALONE:
            return Crashed(
                f"the daemon died {job.kills} times while processing only this file, each time killed from"
                " outside without a crash report: most likely out of memory"
            )
        longest = max((file.path.name for file in self._files(job)), key=name_bytes)
        if name_bytes(longest) > NAME_MAX:
            return NameTooLong(
                f"its output {longest!r}'s name would be {name_bytes(longest)} bytes, above the file system's limit"
                f" of {NAME_MAX}: shorten the file name and drop it again"
            )
        if not self.follow_symlinks and (self.folders.input / job.source).is_symlink():
            return Unsupported("it is a symbolic link, and watch.follow_symlinks is off")
        return None

    def _files(self, job: Job) -> list[OutputFile]:
        """Every file the job writes: of the recipes a person chose for it, else of its route."""
        return self.routing.files(job.source, claimed=job.output, chosen=job.recipes)

    def _on_stage(self, claimed: _Claimed, stage: str | None) -> None:
        """Tell the store when the job goes into a stage or out of all of them: whether it is in
        one is what crash attribution needs, so going from one stage straight into the next
        writes nothing (the store keeps the name of the stage it went in with)."""
        if self._store_has_it(claimed.job, inside=stage is not None):
            return
        try:
            self.queue.mark_stage(claimed.job, stage)
            self._note_stage(claimed.job, inside=stage is not None)
        except QueueError as exc:  # the store away (its disk full): said, without a traceback
            log.warning("stage_not_recorded", path=display(claimed.job.source), stage=stage, error=str(exc))
        except Exception:  # only crash attribution is lost; the job itself goes on
            log.exception("stage_not_recorded", path=display(claimed.job.source), stage=stage)

    # --- after the model --------------------------------------------------------------
    def _done(self, task: Task[_Claimed], prepared: Prepared, cutout: Cutout) -> None:
        job = task.key.job
        files = contents(self._files(job), cutout.files)
        if len(files) > 1 and (taken := self.queue.name_conflicts(job)):  # never over another input's files
            raise NameTaken(", ".join(f"{name} is the file of {display(holder)}" for name, holder in taken)
                            + ": rename one of the two inputs, or change the recipe")
        # A worker whose claim was lost while it computed (frozen past its lease, say) never
        # stages a file in the output folder: the lease is renewed here to cover the writing,
        # unless it was within the last third of a lease (then two thirds of it are left).
        judged = cutout.doubt.rounded() if cutout.doubt else None
        to_review = self._doubtful(judged)
        root = self.folders.review if to_review and self.folders.review else self.folders.output
        published = self._lease_fresh(job) or self._renewed(job)
        if published:
            with task.timer.stage("save"), staged_outputs(root, files) as publish:
                self._unheld(job)  # ending now: a heartbeat would find it done, which is no lost claim
                published = self.queue.finish(job, content_hash=prepared.sha256, publish=publish,
                                              fingerprint=task.key.fingerprint or _stored(job),
                                              doubt=None if judged is None else judged.score,
                                              doubt_parts=None if judged is None else judged.parts,
                                              review=to_review)
        # From here on the job is over for this worker: nothing below may send it back to on_failed.
        self._end_alone(job)
        if not published:
            self._log(task, "claim_lost", action="dropped: another claim of this job is the current one")
            return
        written = [str(root / rel) for rel, _ in files]
        self.done += 1
        try:
            self._after_done(task.key, names=[rel for rel, _ in files], held=to_review)
        except Exception:
            log.exception("after_done_failed", path=job.source.as_posix())
        also = {"also": written[1:]} if len(written) > 1 else {}
        chosen = {"model": job.model} if job.model else {}
        self._log(task, "review" if to_review else "done", output=written[0], **also, **chosen,
                  size=f"{cutout.width}x{cutout.height}", notes=list(cutout.notes), judged=judged)
        self.wake.set()

    def _doubtful(self, judged: Doubt | None) -> bool:
        """Whether the cut-out waits for a person: the review step is on, and its doubt is over the line."""
        return self.review_above is not None and judged is not None and judged.score > self.review_above

    def _after_done(self, claimed: _Claimed, *, names: list[PurePosixPath], held: bool) -> None:
        """Drop a retried file's old error report; archive or delete the original if unchanged.
        A cut-out held for review keeps its original where it is until it is approved; one that
        was not drops the older cut-outs of this file still waiting in the review folder."""
        job = claimed.job
        forget_error_file(self.folders, job.quarantine)
        if held:
            return
        forget_waiting(self.folders, names)
        if _fingerprint(self.folders, job, follow=self.follow_symlinks) != claimed.fingerprint:
            # Replaced while it was processed: the new content is not done; the watcher requeues it.
            log.info("original_changed_during_processing", path=job.source.as_posix())
            return
        try:
            apply_originals_policy(self.folders, job.source, policy=self.policy)
        except JobError as exc:  # the cutout is safe; the original simply stays where it is
            log.warning("originals_policy_failed", path=str(job.source), policy=self.policy, error=str(exc))

    # --- failures ---------------------------------------------------------------------
    def _failed(self, task: Task[_Claimed], exc: BaseException) -> None:
        """Every failure becomes exactly one of: quarantine, retry, or (vanished) a note."""
        try:
            self._route_failure(task, self._judged(task.key, exc))
        except ClaimLost:  # another worker has the job now: its verdict, not ours
            self._log(task, "claim_lost", action="dropped: another claim of this job is the current one")
        except Exception as error:  # quarantining failed (disk full, database): try again later
            _said_once(error, "failure_not_recorded", path=str(task.key.job.source))
            self._retry_quietly(task, error)
        finally:
            self._end_alone(task.key.job)
        self.wake.set()

    def _end_alone(self, job: Job) -> None:
        """The job is over for this worker: it no longer runs alone, nor needs a lease."""
        if self._alone == job.id:
            self._alone = None
        self._unheld(job)

    def _unheld(self, job: Job) -> None:
        """No more heartbeats for `job`."""
        with self._held_lock:
            self._held.pop(job.id, None)

    def _hold(self, job: Job) -> None:
        with self._held_lock:
            self._held[job.id] = _Hold(job, renewed_at=self.clock(), in_stage=job.stage is not None)

    def _store_has_it(self, job: Job, *, inside: bool) -> bool:
        """Whether the store already has `job` inside a stage (`inside`) or out of all of them."""
        with self._held_lock:
            hold = self._held.get(job.id)
            return hold is not None and hold.in_stage == inside

    def _note_stage(self, job: Job, *, inside: bool) -> None:
        with self._held_lock:
            if (hold := self._held.get(job.id)) is not None:
                hold.in_stage = inside

    def _lease_fresh(self, job: Job) -> bool:
        """Whether `job`'s lease was extended within a third of a lease: it then has two thirds
        left, and cannot have been taken over (another worker takes only an expired lease)."""
        with self._held_lock:
            hold = self._held.get(job.id)
            renewed = None if hold is None else hold.renewed_at
        return renewed is not None and self.clock() - renewed < self.queue_settings.lease_seconds / 3

    def current(self) -> str | None:
        """A file in flight, for status (the oldest claim still held)."""
        with self._held_lock:
            return next((hold.job.source.as_posix() for hold in self._held.values()), None)

    def heartbeat(self) -> list[Job]:
        """Extend the lease of every job in flight; returns those whose claim was lost (another
        worker has them now: their work here will be dropped at the end, fenced by the store)."""
        with self._held_lock:
            held = [hold.job for hold in self._held.values()]
        lost = [job for job in held if not self._renewed(job) and self._still_held(job)]
        for job in lost:
            log.warning("claim_lost", path=job.source.as_posix(), token=job.token,
                        action="another worker has this job now; this worker's result will be dropped")
        return lost

    def _renewed(self, job: Job) -> bool:
        """One job's heartbeat: its lease extended (True), or its claim lost."""
        at, renewed = self.clock(), self.queue.heartbeat(job)
        with self._held_lock:
            if (hold := self._held.get(job.id)) is not None:
                hold.renewed_at = at if renewed else None
        return renewed

    def _still_held(self, job: Job) -> bool:
        """Whether this worker still works on `job`: a job that ended between the listing and
        its heartbeat (done, a moment ago) was not lost."""
        with self._held_lock:
            return job.id in self._held

    def _judged(self, claimed: _Claimed, exc: BaseException) -> BaseException:
        """The error as the file deserves it: no verdict on a file whose volume is gone, or that
        is still being written (changed since its claim, or written within the settle window),
        and none when the store itself was away."""
        if isinstance(exc, QueueError) and not isinstance(exc, QueueDamaged):
            away = StoreUnavailable(str(exc))
            away.__cause__ = exc
            return away
        if isinstance(exc, (JobError, OSError)) and not self.volume.check():
            gone = VolumeUnavailable(f"the hot folder's volume went away ({exc}); waiting for it to return")
            gone.__cause__ = exc
            return gone
        if not isinstance(exc, PermanentError) or isinstance(exc, _NOT_ABOUT_CONTENT):
            return exc
        now = _fingerprint(self.folders, claimed.job, follow=self.follow_symlinks)
        if now is None or (now == claimed.fingerprint and not self._fresh(exc, now)):
            return exc
        changed = FileChanged(f"the file changed while it was processed ({exc.reason}: {exc}); trying again")
        changed.__cause__ = exc
        return changed

    def _fresh(self, exc: PermanentError, fingerprint: Fingerprint) -> bool:
        """Written less than a settle window ago: a writer that paused may not be done."""
        if not isinstance(exc, (Undecodable, Truncated)):
            return False
        age = self.clock() - fingerprint.mtime_ns / 1e9
        return 0 <= age < self.settle_seconds  # a future mtime (clock skew on a NAS) proves nothing

    def _retry_quietly(self, task: Task[_Claimed], error: Exception) -> None:
        try:
            self._retry(task, error, counts=False)
        except Exception as exc:  # the store itself failed (its disk full): the row stays running for now
            _said_once(exc, "retry_not_recorded", path=str(task.key.job.source),
                       action="put back in the queue, uncounted, as soon as the store can write")
            self._unrecorded.append(task.key.job)

    def _record_the_unrecorded(self) -> None:
        """Jobs whose end could not be written go back to pending, uncounted, once the store can
        write again: left `running`, no claim would ever take them until the next start."""
        while self._unrecorded:
            self.queue.release(self._unrecorded[0])  # QueueError: still away, and the loop waits
            log.info("job_requeued", path=display(self._unrecorded.popleft().source), why="the store can write again")

    def _route_failure(self, task: Task[_Claimed], exc: BaseException) -> None:
        job = task.key.job
        if isinstance(exc, Vanished):
            _fenced(self.queue.mark_failed(job, reason=exc.reason, message=str(exc), quarantine=None))
            self._log(task, "vanished", reason=exc.reason)
        elif isinstance(exc, PermanentError) and exc.retried_first and not self._exhausted(job):
            self._retry(task, exc, counts=True)  # someone may move what is in the way: the usual attempts first
        elif isinstance(exc, PermanentError):
            where = self._quarantine(job, exc)
            self._log(task, "quarantined", reason=exc.reason, message=str(exc), now_at=where)
        elif isinstance(exc, TransientError):
            self._retry(task, exc, counts=False)
        elif self._exhausted(job):
            log.error("job_error", path=str(job.source), traceback="".join(traceback.format_exception(exc)))
            error = RetriesExhausted(f"failed {job.unfinished_starts} times: {type(exc).__name__}: {exc}")
            where = self._quarantine(job, error)
            self._log(task, "quarantined", reason=error.reason, message=str(error), now_at=where)
        else:
            log.error("job_error", path=str(job.source), traceback="".join(traceback.format_exception(exc)))
            self._retry(task, exc, counts=True)

    def _exhausted(self, job: Job) -> bool:
        return job.unfinished_starts >= self.queue_settings.max_attempts

    def _retry(self, task: Task[_Claimed], exc: BaseException, *, counts: bool) -> None:
        job = task.key.job
        reason = exc.reason if isinstance(exc, JobError) else "internal_error"
        retries = job.attempts if counts else job.finished_attempts + 1
        delay = backoff(retries=retries, settings=self.queue_settings)
        _fenced(self.queue.mark_retry(job, reason=reason, message=str(exc), delay=delay, counts=counts))
        self._log(task, "retry", reason=reason, message=str(exc), retry_in=round(delay, 1))

    def _quarantine(self, job: Job, error: JobError) -> str:
        """Record where the file goes, then move it: a crash in between leaves it in the hot
        folder with a failed row, which the next scan requeues; it is never lost."""
        if not (self.folders.input / job.source).exists():
            _fenced(self.queue.mark_failed(job, reason=error.reason, message=str(error), quarantine=None))
            return "nowhere (the file was gone)"
        report = ErrorReport(
            file=job.source.as_posix(), reason=error.reason, message=str(error), attempts=job.attempts,
            first_seen=job.first_seen, last_attempt=self.clock(),
        )
        with self._reserving(job.source, previous=job.quarantine) as target:
            _fenced(self.queue.mark_failed(job, reason=error.reason, message=str(error), quarantine=target))
            try:
                move_to_quarantine(self.folders, job.source, target, report)
            except TransientError as exc:  # the file stays in the hot folder: back to the queue
                delay = backoff(retries=job.finished_attempts + 1, settings=self.queue_settings)
                self.queue.mark_retry(job, reason=exc.reason, message=str(exc), delay=delay, counts=False, was="failed")
                raise
        forget_waiting(self.folders, [file.path for file in self._files(job)])
        return str(self.folders.quarantine / target)

    @contextmanager
    def _reserving(self, rel: PurePosixPath, *, previous: PurePosixPath | None) -> Iterator[PurePosixPath]:
        """A free quarantine name, held for this move alone until it is done. The lock covers the
        choice only, never the store's write or the move (a copy across volumes can take long, and
        the watch thread's rejections wait on the same lock)."""
        with self._quarantine_lock:
            target = quarantine_target(self.folders, rel, previous=previous, reserved=self._reserved)
            self._reserved.add(target)
        try:
            yield target
        finally:
            with self._quarantine_lock:
                self._reserved.discard(target)

    def reject(self, rel: PurePosixPath, error: JobError) -> str:
        """A file refused before it became a job (a name that cannot be stored): into quarantine
        under a name that can, with its report, and recorded as failed so status and retry see it.
        Where it now is; raises TransientError (the file stays put) when it cannot be moved."""
        stored, now = storable(rel), self.clock()
        fingerprint = Fingerprint.read(self.folders.input / rel, follow_symlinks=False) or Fingerprint(0, 0)
        report = ErrorReport(
            file=display(rel), reason=error.reason, message=str(error), attempts=0, first_seen=now, last_attempt=now,
        )
        with self._reserving(stored, previous=None) as target:
            try:
                move_to_quarantine(self.folders, rel, target, report)
            except TransientError as exc:
                self.queue.record_rejected(stored, fingerprint, reason=error.reason, quarantine=None,
                                           message=f"{error}; it could not be moved to quarantine: {exc}")
                raise
            self.queue.record_rejected(stored, fingerprint, reason=error.reason, message=str(error), quarantine=target)
        where = str(self.folders.quarantine / target)
        self._record(JobRecord(path=display(rel), outcome="quarantined", attempt=0, timings={}, queue_wait=0.0,
                               total=0.0, reason=error.reason), message=str(error), now_at=where)
        return where

    # --- bookkeeping ------------------------------------------------------------------
    def _log(self, task: Task[_Claimed], outcome: str, *, judged: Doubt | None = None, **fields: object) -> None:
        """The one event per job: what happened, and where the time went.

        Anything but a success is a warning, so `logging.level: warning` hides the routine
        and still shows every failure; a retry of a file still being written is routine."""
        job, now = task.key.job, self.clock()
        reason = fields.pop("reason", None)
        self._record(JobRecord(
            path=job.source.as_posix(), outcome=outcome, attempt=job.attempts,
            timings={stage: round(seconds, 4) for stage, seconds in task.timer.seconds.items()},
            queue_wait=round((job.started_at or now) - job.queued_at, 3), total=round(now - (job.started_at or now), 3),
            reason=None if reason is None else str(reason),
            doubt=None if judged is None else judged.score,
            doubt_parts=None if judged is None else judged.parts,
        ), **fields)

    def _record(self, record: JobRecord, **fields: object) -> None:
        """The one record of a job's end, to the log and to the telemetry alike."""
        routine = record.outcome == "done" or record.reason == FileChanged.reason
        said = {key: value for key, value in asdict(record).items()
                if value is not None or key not in ("reason", "doubt", "doubt_parts")}
        (log.info if routine else log.warning)("job", **said, **fields)
        self.on_record(record)

    def close(self) -> None:
        """Put prefetched jobs back (their start does not count), let the rest finish."""
        for task in self.stages.close():
            self.queue.release(task.key.job)
            self._end_alone(task.key.job)


class ClaimLost(Exception):
    """The store refused a change to a job: this worker's claim on it is no longer the current one."""


def _fenced(accepted: bool) -> None:
    if not accepted:
        raise ClaimLost


_NOT_RUN: Future[Prepared] = Future()
_NOT_ABOUT_CONTENT = (Vanished, Crashed, NameTooLong)
"""Verdicts that do not come from reading the bytes, so a change of the bytes cannot undo them."""


def _stored(job: Job) -> Fingerprint:
    return Fingerprint(job.size, job.mtime_ns)


def _fingerprint(folders: Folders, job: Job, *, follow: bool) -> Fingerprint | None:
    return Fingerprint.read(folders.input / job.source, follow_symlinks=follow)


def _said_once(exc: BaseException, event: str, **fields: object) -> None:
    """The store away (QueueError) is a warning with its message; anything else an error with
    its traceback (a bug to find)."""
    if isinstance(exc, QueueError):
        log.warning(event, error=str(exc), **fields)
    else:
        log.exception(event, **fields)
