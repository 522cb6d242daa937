"""The daemon's life in-process: setup, the loop, teardown, signals, a volume that leaves.

A real queue, real files, the real watchdog observer and the real threads, with the numpy
model of `daemon.testing` and a settle window of a few hundredths of a second. What only
a separate process can show (kill -9, real signals, the lock held by another process)
stays in the end-to-end tests.
"""

from __future__ import annotations

import faulthandler
import signal
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath as P
from typing import Any

import pytest
from structlog.testing import capture_logs
from watchdog.observers.api import BaseObserver

from daemon.errors import ModelLoadError
from daemon.folders.outputs import Folders
from daemon.settings import Settings, load_settings
from daemon.store.jobs import Fingerprint
from daemon.store.sqlite import JobQueue
from daemon.store.statedir import QUEUE_FILE, acquire_lock
from daemon.testing import BrightModel, wait_until
from daemon.watch.runner import EXIT_LOOP_FAILED, EXIT_SECOND_SIGNAL, Daemon, install_signal_handlers
from daemon.watch.settle import start_observer
from tests.conftest import subject_image, write_image

SMALL = (60, 80, (20, 15, 60, 45))


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    made = Folders(input=tmp_path / "in", output=tmp_path / "out", quarantine=tmp_path / "q",
                   archive=tmp_path / "archive", state=tmp_path / "state")
    for folder in (made.input, made.output, made.quarantine):  # as `cutout watch` makes them before the daemon
        folder.mkdir()
    return made


def settings_for(folders: Folders, **overrides: object) -> Settings:
    return load_settings(overrides={
        "folders.input": folders.input, "folders.output": folders.output, "folders.quarantine": folders.quarantine,
        "folders.archive": folders.archive, "folders.state": folders.state, "watch.settle_seconds": 0.05,
        "pipeline.target_size": 64, **overrides,
    })


def drop(folders: Folders, *names: str) -> None:
    for name in names:
        write_image(folders.input / name, subject_image(*SMALL[:2], SMALL[2]))


def outputs(folders: Folders) -> list[str]:
    return sorted(p.relative_to(folders.output).as_posix() for p in folders.output.rglob("*.png"))


class Running:
    """`daemon.run()` on a thread, as `cutout watch` runs it on the main one."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon, self.result, self.error = daemon, [0], [None]
        self.thread = threading.Thread(target=self._run, name="test-main")

    def _run(self) -> None:
        try:
            self.result[0] = self.daemon.run()
        except BaseException as exc:
            self.error[0] = exc

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.request_stop()
        self.thread.join(timeout=30)

    def signal(self, signum: int) -> None:
        self.daemon.signals.handle(signum, None)  # what the OS calls; the main loop acts on it

    def finished(self, *, timeout: float = 30) -> int:
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "the daemon did not stop"
        if self.error[0] is not None:
            raise self.error[0]
        return self.result[0]


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with capture_logs() as captured:
        yield captured


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def test_files_dropped_while_running_become_cutouts_and_sigterm_stops_cleanly(
    folders: Folders, logs: list[dict[str, Any]]
) -> None:
    with Running(Daemon(settings=settings_for(folders), folders=folders, model=BrightModel())) as running:
        wait_until(lambda: bool(events(logs, "daemon_started")), what="start-up")
        drop(folders, "a.png", "shoot/b.png")
        wait_until(lambda: outputs(folders) == ["a.png", "shoot/b.png"], what="both cutouts")
        running.signal(signal.SIGTERM)
        assert running.finished() == 0
    assert events(logs, "stopping")[0]["signal"] == "SIGTERM"
    assert events(logs, "daemon_stopped")[0]["done"] == 2
    acquire_lock(folders.state).close()  # the lock was given back


def test_a_second_signal_exits_at_once_even_while_the_model_is_busy(
    folders: Folders, logs: list[dict[str, Any]]
) -> None:
    busy, release = threading.Event(), threading.Event()

    class SlowModel(BrightModel):
        def predict(self, batch: Any) -> Any:
            if self.calls:  # the warm-up runs at once; the first image holds the model
                busy.set()
                release.wait(30)
            return super().predict(batch)

    exits: list[int] = []
    daemon = Daemon(settings=settings_for(folders), folders=folders, model=SlowModel(), exit_now=exits.append)
    with Running(daemon) as running:
        drop(folders, "a.png")
        wait_until(busy.is_set, what="the model at work")
        running.signal(signal.SIGTERM)
        running.signal(signal.SIGINT)
        wait_until(lambda: bool(exits), what="the exit")
        release.set()
        running.finished()
    assert exits == [EXIT_SECOND_SIGNAL] and events(logs, "exiting_now")[0]["signal"] == "SIGINT"


class FailingObserver:
    """An observer factory that fails like inotify does when its watch limit is reached."""

    def __call__(self, **kwargs: Any) -> BaseObserver:
        raise OSError(28, "inotify watch limit reached")


def test_a_setup_that_fails_part_way_releases_what_it_had_acquired(folders: Folders) -> None:
    before, crash_handler = threading.active_count(), faulthandler.is_enabled()
    daemon = Daemon(settings=settings_for(folders), folders=folders, model=BrightModel(),
                    observer_factory=FailingObserver())
    with pytest.raises(OSError, match="inotify watch limit"):
        daemon.run()
    assert threading.active_count() == before  # the worker's pools are shut down
    assert faulthandler.is_enabled() == crash_handler  # the crash report was disarmed, as it was before
    assert (folders.state / "crash-report.txt").read_text() == ""
    with pytest.raises(Exception, match="closed"):
        daemon.queue.counts()  # the queue was closed
    acquire_lock(folders.state).close()


def test_a_model_that_cannot_run_at_the_configured_size_fails_start_up_clearly(folders: Folders) -> None:
    class WrongSize(BrightModel):
        def predict(self, batch: Any) -> Any:
            raise RuntimeError("expected a 1088x1088 input")

    with pytest.raises(ModelLoadError, match="does not run on a 64x64 input"):
        Daemon(settings=settings_for(folders), folders=folders, model=WrongSize()).run()


def test_a_bug_in_the_inference_loop_stops_the_daemon_with_a_failure_status_for_launchd(
    folders: Folders, logs: list[dict[str, Any]]
) -> None:
    daemon = Daemon(settings=settings_for(folders), folders=folders, model=BrightModel())
    daemon.setup()
    try:
        daemon.worker.run_once = _raise_bug  # type: ignore[method-assign]
        daemon._inference_loop()
    finally:
        daemon.teardown()
    assert daemon.exit_code == EXIT_LOOP_FAILED and events(logs, "worker_loop_failed")


def _raise_bug(**kwargs: object) -> None:
    raise ZeroDivisionError("a bug, not a bad file")


def test_a_hot_folder_that_goes_away_pauses_the_daemon_and_its_return_rearms_the_observer(
    folders: Folders, tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    gate = threading.Event()

    class GatedModel(BrightModel):
        def predict(self, batch: Any) -> Any:
            if self.calls:
                gate.wait(30)
            return super().predict(batch)

    made: list[BaseObserver] = []

    def observer_factory(**kwargs: Any) -> BaseObserver:
        made.append(start_observer(**kwargs))
        return made[-1]

    drop(folders, *(f"{index}.png" for index in range(6)))
    daemon = Daemon(settings=settings_for(folders, **{"worker.in_flight": 1}), folders=folders, model=GatedModel(),
                    observer_factory=observer_factory)
    with Running(daemon) as running:
        wait_until(lambda: bool(events(logs, "reconciled")), what="the first scan")
        away = tmp_path / "unmounted"
        folders.input.rename(away)  # the share drops
        wait_until(lambda: bool(events(logs, "hot_folder_unavailable")), what="the pause")
        assert daemon.queue.counts()["failed"] == 0
        away.rename(folders.input)  # and comes back
        wait_until(lambda: bool(events(logs, "hot_folder_back")), what="the return")
        gate.set()
        wait_until(lambda: len(outputs(folders)) == 6, what="every cutout")
        running.signal(signal.SIGTERM)
        assert running.finished() == 0
    assert len(made) == 2 and events(logs, "daemon_stopped")[0]["done"] == 6


def test_an_original_left_behind_by_a_crash_after_its_cutout_is_archived_at_start(folders: Folders) -> None:
    drop(folders, "a.png")
    (folders.output / "a.png").write_bytes(b"its cutout")
    folders.state.mkdir()
    queue = JobQueue(folders.state / QUEUE_FILE)
    fingerprint = Fingerprint.of(folders.input / "a.png")
    queue.offer(P("a.png"), fingerprint)
    job = queue.claim()
    assert job is not None
    queue.finish(job, content_hash="h", fingerprint=fingerprint, publish=lambda: None)  # then the process died
    queue.close()
    daemon = Daemon(settings=settings_for(folders, originals="archive"), folders=folders, model=BrightModel())
    daemon.setup()
    daemon.teardown()
    assert not (folders.input / "a.png").exists() and (folders.archive / "a.png").exists()


def test_a_crash_report_charges_the_job_that_ran_alone_and_is_logged(
    folders: Folders, logs: list[dict[str, Any]]
) -> None:
    folders.state.mkdir()
    queue = JobQueue(folders.state / QUEUE_FILE)
    queue.offer(P("a.png"), Fingerprint(size=1, mtime_ns=1))
    job = queue.claim()
    assert job is not None
    queue.mark_stage(job, "decode")
    queue.close()
    (folders.state / "crash-report.txt").write_text("Fatal Python error: Segmentation fault\n  File \"x.py\"")
    daemon = Daemon(settings=settings_for(folders), folders=folders, model=BrightModel())
    daemon.setup()
    try:
        again = daemon.queue.get(job.source)
        assert again is not None and (again.crashes, again.kills, again.suspect) == (1, 0, True)
    finally:
        daemon.teardown()
    assert "Segmentation fault" in events(logs, "previous_process_crashed")[0]["report"]
    assert (folders.state / "crash-report.txt").read_text() == ""  # armed again, and a clean stop leaves it empty


def test_the_signal_handlers_only_record_the_signal_for_the_main_loop(folders: Folders) -> None:
    daemon = Daemon(settings=settings_for(folders), folders=folders, model=BrightModel())
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        install_signal_handlers(daemon)
        handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        assert handlers == (daemon.signals.handle, daemon.signals.handle)
        # Called as the OS calls it. Not raised for real: a signal sent to the test runner's own
        # process crashed a pytest-xdist worker now and then (3 of ~12 runs); a real SIGTERM to a
        # real daemon is test_daemon_e2e's.
        daemon.signals.handle(signal.SIGTERM, None)
        assert not daemon.stop.is_set()  # nothing acted yet: the handler only recorded it
        daemon.answer_signals()
        assert daemon.stop.is_set()
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGINT, saved[1])
