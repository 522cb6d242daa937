"""`cutout watch`: the daemon's life, from start-up checks to a clean exit.

    main thread  holds the state folder's lock and answers signals, nothing else
    life thread  setup()       open the queue, recover jobs a dead process left
                               running, warm the model, start the observer
                 run_once()    (owns the model) one image through inference, until stopped
                 teardown()    always, even after a setup() that failed part-way:
                               put unstarted jobs back, finish the rest, close
    watch thread settle files, rescan every few minutes, pause while the hot
                 folder's volume is gone and resume when it is back

Signal handlers only record the signal (`Signals`). The main thread reads it: the
first SIGTERM/SIGINT asks for a graceful stop, a second exits at once, whatever the
life thread is doing (a minute-long CPU inference, a slow teardown). That loses
nothing either: the queue is on disk and outputs are written atomically.

`Daemon` takes its clocks and its observer factory, so tests run setup, run_once,
teardown and the signal paths in-process with a fake clock (`daemon.testing`).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from types import FrameType

import numpy as np
import structlog

from daemon.atomic import sweep_temp_files
from daemon.companions.alongside import alongside
from daemon.errors import JobError, ModelLoadError, QueueDamaged, QueueError, from_sqlite_error, is_queue_damage
from daemon.folders.claims import Claimant, FolderClaims
from daemon.folders.outputs import Folders, apply_originals_policy
from daemon.folders.volume import Volume
from daemon.pipeline.matte import MatteModel
from daemon.settings import Settings, cpu_threads, image_options, in_flight, public_settings, routing, with_model
from daemon.store.configured import open_store, worker_id
from daemon.store.crashreport import CRASH_REPORT_FILE, CrashReport
from daemon.store.jobs import Fingerprint, Job, Recovery
from daemon.store.session import SessionRecord
from daemon.store.statedir import QUEUE_FILE, acquire_lock
from daemon.watch.settle import Settler, reconcile, start_observer
from daemon.watch.tick import FolderWatch, Identity, ObserverFactory
from daemon.watch.guard import EXIT_RESTART, MemoryGuard
from daemon.work.shelf import Loader, ModelShelf
from daemon.work.worker import Worker

log = structlog.get_logger("cutout.daemon")

EXIT_LOOP_FAILED = 1
EXIT_SECOND_SIGNAL = 130
SIGNAL_POLL_SECONDS = 0.2
"""How often the main thread looks for a signal: the handler itself only records it."""


# --- The daemon ------------------------------------------------------------------
@dataclass
class Daemon:
    settings: Settings
    folders: Folders
    model: MatteModel
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    observer_factory: ObserverFactory = start_observer
    scan: Callable[..., int] = reconcile
    """The hot folder's rescan (`watch.reconcile`): a test passes a slow one."""
    signals: Signals = field(default_factory=lambda: Signals())
    exit_now: Callable[[int], object] = os._exit
    outage: Outage = field(default_factory=lambda: Outage())
    load_model: Loader | None = None
    """Another model by name, for the files a person chose it for (`cutout review redo --model`)."""
    model_name: str = "unnamed"
    """The model and its revision (`hf:ZhengPeng7/BiRefNet@<commit>`): a fleet runs one."""
    device: str = "unknown"
    exit_code: int = 0
    _held: ExitStack = field(default_factory=ExitStack, init=False, repr=False)
    _failure: BaseException | None = field(default=None, init=False, repr=False)
    _stopping: bool = field(default=False, init=False, repr=False)
    _started: bool = field(default=False, init=False, repr=False)

    def run(self) -> int:
        """Hold the lock; run the daemon's life on its own thread; answer signals until it ends.

        A failure of setup() or teardown() (a damaged queue, a model that cannot run) is
        raised here, in the caller's thread, after teardown() released what was acquired.
        """
        lock = acquire_lock(self.folders.state)
        try:
            life = threading.Thread(target=self._life, name="cutout-inference")
            life.start()
            while life.is_alive():
                life.join(SIGNAL_POLL_SECONDS)
                self.answer_signals()
        finally:
            lock.close()
        if self._failure is not None:
            raise self._failure
        return self.exit_code

    def _life(self) -> None:
        """setup(); while not stopped: run_once(); teardown() in finally."""
        try:
            try:
                self.setup()
                self._inference_loop()
            finally:
                self.teardown()
        except sqlite3.DatabaseError as exc:  # opening, or stopping on a queue found damaged: a message, not a traceback
            self._failure = from_sqlite_error(exc, path=self.folders.state / QUEUE_FILE)
            self._failure.__cause__ = exc
        except BaseException as exc:
            self._failure = exc

    def _inference_loop(self) -> None:
        try:
            while not self.stop.is_set():
                self._run_once_or_wait_for_the_store()
                self._restart_if_due()
        except Exception as exc:  # a bug in the loop itself: stop, and let launchd restart us
            if not self._stop_if_queue_damaged(exc):
                log.exception("worker_loop_failed")
                self.exit_code = EXIT_LOOP_FAILED
            self.stop.set()

    def _run_once_or_wait_for_the_store(self) -> None:
        """One turn; while the store is unreachable (a database restart, a network cut), wait
        with backoff and try again: what was in flight is redone, nothing is quarantined."""
        try:
            self.worker.run_once()
        except QueueError as exc:
            if is_queue_damage(exc):
                raise
            self.outage.failed(exc)
            self.stop.wait(self.outage.delay)
        else:
            self.outage.ok()

    def _restart_if_due(self) -> None:
        """The memory guard: too large, or its share of images done: stop cleanly, to start afresh."""
        why = self.guard.due(done=self.worker.done)
        if why is not None and not self.stop.is_set():
            log.warning("restarting", why=why, action="finishing what is in flight, then starting afresh; "
                                                      "the queue is untouched and no job is charged")
            self.exit_code = EXIT_RESTART
            self.request_stop()

    def answer_signals(self) -> None:
        """On the main thread: the first signal asks for a graceful stop, a second exits now."""
        for signum in self.signals.take():
            name = signal.Signals(signum).name
            if self._stopping:
                log.warning("exiting_now", signal=name, exit_code=EXIT_SECOND_SIGNAL)
                self.exit_now(EXIT_SECOND_SIGNAL)
                return
            log.info("stopping", signal=name)
            self._stopping = True
            self.request_stop()

    def request_stop(self) -> None:
        self.stop.set()
        if hasattr(self, "worker"):
            self.worker.wake.set()

    def _stop_if_queue_damaged(self, exc: BaseException) -> bool:
        """sqlite found damage while running: stop for good (QueueDamaged.exit_status). Retrying
        would leave files unprocessed while the daemon looks alive, and a restart would only be
        refused by the start-up check: a person must run `cutout queue rebuild`."""
        if not is_queue_damage(exc):
            return False
        log.error("queue_damaged", error=str(from_sqlite_error(exc, path=self.folders.state / QUEUE_FILE)))
        self.exit_code = QueueDamaged.exit_status
        self.stop.set()
        return True

    def setup(self) -> None:
        """Acquire in order, each with its release on `self._held`: teardown() unwinds them."""
        self.session = SessionRecord(self.folders.state)
        self.telemetry = self._held.enter_context(alongside(
            settings=self.settings, folders=self.folders, session=self.session, model=self.model_name,
            device=self.device, clock=self.clock,
        ))  # the session record, telemetry, dashboard, alerts
        self.queue = open_store(self.settings.queue, state=self.folders.state, clock=self.clock)
        self.queue.name_outputs(routing(self.settings).name_deriver)
        self._held.callback(self.queue.close)
        self._held.callback(self._log_stopped)  # last before the queue closes: it reads the counts
        self.queue.bind_input(self.folders.input)
        self.queue.check_model(self.model_name)
        # Before anything touches the folders (the temp-file sweep, recovery): they are this daemon's, or its fleet's.
        self.claims = self._held.enter_context(FolderClaims(
            self.folders.claimed(),
            claimant=Claimant.this_process(what="cutout watch", state=self.folders.state, fleet=self.queue.fleet_id()),
            clock=self.clock,
        ))
        self.queue.remember_folders({"quarantine": self.folders.quarantine, "output": self.folders.output,
                                     **({"review": self.folders.review} if self.folders.review else {})})
        recovered = self._recover()
        self.volume = Volume(self.folders.input, has_work=self.queue.has_work)
        swept = sum(sweep_temp_files(f) for f in self.folders.written())
        self._warm_up()
        self._finish_originals()
        self.worker = self._worker()
        self.guard = MemoryGuard(ceiling_mb=self.settings.worker.memory_ceiling_mb,
                                 after_images=self.settings.worker.restart_after_images, clock=self.monotonic)
        self.guard.start()
        self._held.callback(self.worker.close)
        self.settler = self._settler()
        self.watch = self._folder_watch()
        self.watch.start()
        self._held.callback(self.watch.close)
        self._watch_thread = threading.Thread(target=self._watch_loop, name="cutout-watch", daemon=True)
        self._watch_thread.start()
        self._held.callback(self._watch_thread.join, 5)
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="cutout-heartbeat", daemon=True)
        heartbeat.start()
        self._held.callback(heartbeat.join, 5)
        self._started = True
        log.info("daemon_started", recovered_running_jobs=asdict(recovered), stale_temp_files=swept,
                 **self._describe())

    def _recover(self) -> Recovery:
        """Jobs a dead process left running, judged by how it died; then arm the crash report."""
        self._crash_report = CrashReport(self.folders.state / CRASH_REPORT_FILE)
        report = self._crash_report.previous()
        if report:
            log.error("previous_process_crashed", report=report)
        recovered = self.queue.recover(crashed=bool(report))
        self._crash_report.arm()
        self._held.callback(self._crash_report.disarm)
        return recovered

    def _folder_watch(self) -> FolderWatch:
        me = Identity(worker=worker_id(self.folders.state), model=self.model_name, device=self.device,
                      started_at=self.clock())
        return FolderWatch(
            settings=self.settings, folders=self.folders, queue=self.queue, worker=self.worker, settler=self.settler,
            volume=self.volume, session=self.session, observer_factory=self.observer_factory, identity=me, clock=self.clock,
            monotonic=self.monotonic, store_problem=lambda: self.outage.problem, scan=self.scan,
            finish_originals=None if self.settings.originals == "keep" else self._finish_found,
        )

    def _warm_up(self) -> None:
        """One inference on a blank image: the model is warm, and a model that cannot run at
        this size fails start-up clearly instead of quarantining every file as model_error."""
        size = self.settings.pipeline.target_size
        try:
            self.model.predict(np.zeros((1, 3, size, size), np.float32))
        except Exception as exc:
            raise ModelLoadError(f"the model does not run on a {size}x{size} input (pipeline.target_size): {exc}") from exc

    def _finish_originals(self) -> None:
        """A crash between "done" and archiving/deleting the original leaves it behind: finish that.

        Only for unchanged originals whose cutout is still there; a failure is logged, never fatal.
        """
        if self.settings.originals == "keep":
            return
        self._finish_these(self.queue.jobs(state="done", limit=10_000_000))

    def _finish_found(self, sources: list[PurePosixPath]) -> None:
        """What a rescan found done and unchanged: its originals policy, on every rescan, not
        only at the next start (the check after the job may have missed a hot folder away)."""
        self._finish_these(job for source in sources if (job := self.queue.get(source)) is not None)

    def _finish_these(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            path = self.folders.input / job.source
            unchanged = Fingerprint.read(path) == Fingerprint(job.size, job.mtime_ns)
            # Not a job in review: its original stays until a person approves the cut-out.
            if job.state == "done" and unchanged and (self.folders.output / job.output).exists():
                self._apply_policy(job.source)

    def _apply_policy(self, source: PurePosixPath) -> None:
        try:
            apply_originals_policy(self.folders, source, policy=self.settings.originals)
        except JobError as exc:
            log.warning("originals_policy_failed", path=source.as_posix(), error=str(exc))

    def _worker(self) -> Worker:
        return Worker(
            model=self.model,
            params=self.settings.pipeline,
            folders=self.folders,
            queue=self.queue,
            queue_settings=self.settings.queue,
            policy=self.settings.originals,
            in_flight=in_flight(self.settings, cores=os.cpu_count()),
            cpu_threads=cpu_threads(self.settings, cores=os.cpu_count()),
            options=image_options(self.settings),
            clock=self.clock,
            settle_seconds=self.settings.watch.settle_seconds,
            follow_symlinks=self.settings.watch.follow_symlinks,
            volume=self.volume,
            routing=routing(self.settings),
            on_record=self.telemetry.observe,
            review_above=self.settings.review.threshold,
            flip_pass=self.settings.review.flip_pass,
            models=ModelShelf(model=self.model, params=self.settings.pipeline, load=self.load_model,
                              params_of=lambda name: with_model(self.settings, name).pipeline),
        )

    def _settler(self) -> Settler:
        return Settler(
            root=self.folders.input,
            queue=self.queue,
            settle_seconds=self.settings.watch.settle_seconds,
            incomplete_timeout=self.settings.watch.incomplete_timeout_seconds,
            clock=self.monotonic,
            on_queued=self.worker.wake.set,
            on_rejected=self.worker.reject,
            follow_symlinks=self.settings.watch.follow_symlinks,
        )

    def _describe(self) -> dict[str, object]:
        folders = {name: str(getattr(self.folders, name)) for name in ("input", "output", "quarantine", "archive", "state")}
        cores = os.cpu_count()
        return {
            "folders": folders,
            "settings": public_settings(self.settings),  # without the dashboard's token, the webhook's URL
            "in_flight": in_flight(self.settings, cores=cores),
            "cpu_threads": cpu_threads(self.settings, cores=cores),
        }

    # --- the watch thread -----------------------------------------------------------
    def _watch_loop(self) -> None:
        """The folder watch's ticks until stopped; a failed tick is retried at the next."""
        tick = min(0.2, self.settings.watch.settle_seconds / 4)
        while not self.stop.is_set():
            try:
                self.claims.refresh()
                self.watch.tick()
            except QueueError as exc:  # the store is away: the inference loop says so and waits
                self._stop_if_queue_damaged(exc)
            except Exception as exc:  # the daemon keeps running
                if not self._stop_if_queue_damaged(exc):
                    log.exception("watch_error")
            self.stop.wait(tick)

    def _heartbeat_loop(self) -> None:
        """Every third of a lease, whatever the watch thread is doing (a long rescan of a NAS)."""
        every = self.settings.queue.lease_seconds / 3
        while True:
            try:
                self.watch.beat()
            except QueueError as exc:  # the store is away: the inference loop says so and waits
                self._stop_if_queue_damaged(exc)
            except Exception:  # the daemon keeps running; the next beat tries again
                log.exception("heartbeat_error")
            if self.stop.wait(every):
                return

    def teardown(self) -> None:
        """Release, in reverse order, whatever setup() acquired (all of it, or as far as it got)."""
        self.stop.set()
        self._held.close()

    def _log_stopped(self) -> None:
        if self._started:
            log.info("daemon_stopped", exit_code=self.exit_code, **self.queue.counts())


# --- The store going away ------------------------------------------------------------
class Outage:
    """The job store unreachable: said once when it starts and once when it ends, with a
    backoff between tries (0.5 s, doubling to 30 s) so that a fleet does not hammer a
    database that is starting up."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self.since: float | None = None
        self.problem: str | None = None
        """For status: since when (wall clock) and why; None while the store answers."""
        self.delay = 0.5

    def failed(self, exc: Exception) -> None:
        if self.since is None:
            self.since = self.monotonic()
            self.problem = f"unreachable since {time.strftime('%Y-%m-%d %H:%M:%S')}: {exc}"
            log.error("store_unreachable", error=str(exc), action="waiting for it; nothing is lost or quarantined")
        else:
            self.delay = min(self.delay * 2, 30.0)

    def ok(self) -> None:
        if self.since is not None:
            log.warning("store_back", after_seconds=round(self.monotonic() - self.since, 1))
        self.since, self.problem, self.delay = None, None, 0.5


# --- Signals ---------------------------------------------------------------------
class Signals:
    """What the signal handler does: record the signal. `Daemon.answer_signals` acts on it."""

    def __init__(self) -> None:
        self._received: list[int] = []

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self._received.append(signum)  # one atomic append: safe whatever the main thread was doing

    def take(self) -> list[int]:
        taken, self._received[:] = self._received[:], []
        return taken


def install_signal_handlers(daemon: Daemon) -> None:
    """SIGTERM and SIGINT go to `daemon.signals` (first: stop gracefully; second: exit now)."""
    signal.signal(signal.SIGTERM, daemon.signals.handle)
    signal.signal(signal.SIGINT, daemon.signals.handle)
