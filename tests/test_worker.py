"""The worker on real folders and a real queue, with the fast numpy model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from daemon.errors import ModelError
from daemon.folders.outputs import Folders
from daemon.folders.outputs import OriginalsPolicy
from daemon.pipeline import PipelineParams, process_image
from daemon.settings import QueueSettings
from daemon.store.jobs import Fingerprint
from daemon.store.sqlite import JobQueue
from daemon.store.steering import retry
from daemon.testing import BrightModel, FakeClock
from daemon.work.worker import Worker, backoff
from tests.conftest import subject_image, write_image

P = PurePosixPath
BOX = (100, 80, 300, 220)


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    made = Folders(
        input=tmp_path / "in", output=tmp_path / "out", quarantine=tmp_path / "q",
        archive=tmp_path / "archive", state=tmp_path / "state",
    )
    for path in (made.input, made.output, made.quarantine, made.state):
        path.mkdir()
    return made


@pytest.fixture
def queue(folders: Folders, clock: FakeClock) -> JobQueue:
    return JobQueue(folders.state / "queue.sqlite3", clock=clock)


def make_worker(
    folders: Folders, queue: JobQueue, clock: FakeClock, *, model: object | None = None,
    policy: OriginalsPolicy = "keep", in_flight: int = 3,
) -> Worker:
    return Worker(
        model=model or BrightModel(),  # type: ignore[arg-type]
        params=PipelineParams(), folders=folders, queue=queue,
        queue_settings=QueueSettings(max_attempts=3, retry_base_seconds=5, retry_max_seconds=60),
        policy=policy, in_flight=in_flight, cpu_threads=2, clock=clock,
    )


def add(folders: Folders, queue: JobQueue, rel: str, rgb: npt.NDArray[np.uint8] | None = None) -> Path:
    path = write_image(folders.input / rel, subject_image(300, 400, BOX) if rgb is None else rgb)
    queue.offer(P(rel), Fingerprint.of(path))
    return path


def drain(worker: Worker, queue: JobQueue, *, rounds: int = 200) -> None:
    """Run until nothing is ready or in flight (prepared futures finish on the pool)."""
    for _ in range(rounds):
        worker.run_once(idle_wait=0.02)
        counts = queue.counts()
        if counts["running"] == 0 and (counts["pending"] == 0 or queue.next_retry_in()):
            return
    raise AssertionError(f"worker did not drain: {queue.counts()}")


def test_good_files_become_outputs_and_bad_ones_land_in_quarantine_with_a_reason(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    add(folders, queue, "shoot/a.jpg")
    add(folders, queue, "dark.png", np.full((200, 200, 3), 20, np.uint8))
    whole = write_image(folders.input / "cut.jpg", subject_image(300, 400, BOX)).read_bytes()
    (folders.input / "cut.jpg").write_bytes(whole[:1000])
    queue.offer(P("cut.jpg"), Fingerprint.of(folders.input / "cut.jpg"))
    worker = make_worker(folders, queue, clock)
    drain(worker, queue)
    worker.close()
    assert (folders.output / "shoot" / "a.png").exists()
    assert (folders.input / "shoot" / "a.jpg").exists()  # originals: keep
    for name, reason in (("dark.png", "no_foreground"), ("cut.jpg", "truncated")):
        assert not (folders.input / name).exists() and (folders.quarantine / name).exists()
        report = json.loads((folders.quarantine / f"{name}.error.json").read_text())
        assert report["reason"] == reason and report["file"] == name and report["attempts"] == 1
        assert report["version"] and report["first_seen"] and report["last_attempt"] and report["message"]
    assert queue.counts() == {"pending": 0, "running": 0, "done": 1, "failed": 2, "review": 0}


def test_the_pipelined_worker_writes_the_same_bytes_as_process_image(
    folders: Folders, queue: JobQueue, clock: FakeClock, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    for index in range(6):
        rgb = subject_image(240 + 20 * index, 400, (60 + index, 50, 300, 200))
        rgb = np.clip(rgb.astype(np.int16) + rng.integers(-15, 16, rgb.shape), 0, 255).astype(np.uint8)
        add(folders, queue, f"img{index}.png", rgb)
    worker = make_worker(folders, queue, clock, in_flight=3)
    drain(worker, queue)
    worker.close()
    for index in range(6):
        expected = process_image(folders.input / f"img{index}.png", model=BrightModel()).cutout.png
        assert (folders.output / f"img{index}.png").read_bytes() == expected


def test_a_missing_output_folder_is_retried_with_backoff_and_then_succeeds(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    add(folders, queue, "a.jpg")
    folders.output.rmdir()
    worker = make_worker(folders, queue, clock)
    drain(worker, queue)
    job = queue.get(P("a.jpg"))
    assert job is not None and job.state == "pending" and job.reason == "output_missing"
    assert queue.next_retry_in() == 5.0
    folders.output.mkdir()
    clock.now += 5
    drain(worker, queue)
    worker.close()
    assert (folders.output / "a.png").exists() and queue.counts()["done"] == 1


def test_backoff_doubles_and_is_capped() -> None:
    settings = QueueSettings(retry_base_seconds=5, retry_max_seconds=30)
    assert [backoff(retries=n, settings=settings) for n in range(1, 6)] == [5, 10, 20, 30, 30]


class ExplodingModel:
    """A model with a bug: not a JobError, so it is retried, then given up on."""

    calls = 0

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.calls += 1
        raise ZeroDivisionError("bug in the model wrapper")


def test_an_unexpected_error_is_retried_then_quarantined_and_the_worker_keeps_going(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    add(folders, queue, "a.jpg")
    model = ExplodingModel()
    worker = make_worker(folders, queue, clock, model=model)
    for _ in range(3):
        drain(worker, queue)
        clock.now += 100
    worker.close()
    assert model.calls == 3
    report = json.loads((folders.quarantine / "a.jpg.error.json").read_text())
    assert report["reason"] == "internal_error" and "ZeroDivisionError" in report["message"]


def test_a_file_that_killed_the_process_max_attempts_times_is_quarantined_unrun(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    add(folders, queue, "poison.jpg")
    crash_alone(queue, times=3)
    model = BrightModel()
    worker = make_worker(folders, queue, clock, model=model)
    drain(worker, queue)
    worker.close()
    assert model.calls == 0
    report = json.loads((folders.quarantine / "poison.jpg.error.json").read_text())
    assert report["reason"] == "crashed" and "died 3 times" in report["message"] and "a crash" in report["message"]


def test_outside_kills_while_a_file_runs_alone_quarantine_it_only_at_the_higher_kill_limit(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    from daemon.work.worker import MAX_KILLS_ALONE

    add(folders, queue, "innocent.jpg")
    crash_alone(queue, times=MAX_KILLS_ALONE - 1, crashed=False)  # far more than max_attempts (3)
    worker = make_worker(folders, queue, clock)
    drain(worker, queue)
    assert queue.counts()["done"] == 1 and not (folders.quarantine / "innocent.jpg.error.json").exists()
    add(folders, queue, "oom.jpg")
    crash_alone(queue, times=MAX_KILLS_ALONE, crashed=False)
    drain(worker, queue)
    worker.close()
    report = json.loads((folders.quarantine / "oom.jpg.error.json").read_text())
    assert report["reason"] == "crashed" and f"died {MAX_KILLS_ALONE} times" in report["message"]
    assert "out of memory" in report["message"]


@pytest.mark.parametrize("policy", ["archive", "delete"])
def test_originals_are_archived_or_deleted_only_after_the_output_exists(
    folders: Folders, queue: JobQueue, clock: FakeClock, policy: OriginalsPolicy
) -> None:
    add(folders, queue, "sub/a.jpg")
    worker = make_worker(folders, queue, clock, policy=policy)
    drain(worker, queue)
    worker.close()
    assert (folders.output / "sub" / "a.png").exists() and not (folders.input / "sub" / "a.jpg").exists()
    assert (folders.archive / "sub" / "a.jpg").exists() is (policy == "archive")


def test_a_file_removed_before_processing_is_recorded_as_vanished(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    add(folders, queue, "a.jpg").unlink()
    worker = make_worker(folders, queue, clock)
    drain(worker, queue)
    worker.close()
    job = queue.get(P("a.jpg"))
    assert job is not None and job.state == "failed" and job.reason == "vanished" and job.quarantine is None


class FlakyModel(BrightModel):
    """Fails with a model error until told to work."""

    broken = True

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self.broken:
            raise ModelError("model failed on this image: simulated")
        return super().predict(batch)


def test_retry_sends_a_quarantined_file_back_and_success_removes_its_error_file(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    add(folders, queue, "sub/a.jpg")
    model = FlakyModel()
    worker = make_worker(folders, queue, clock, model=model)
    drain(worker, queue)
    assert (folders.quarantine / "sub" / "a.jpg.error.json").exists()
    assert retry(folders, target=folders.quarantine / "sub" / "a.jpg", every=False) == ["queued again: sub/a.jpg"]
    assert (folders.input / "sub" / "a.jpg").exists() and not (folders.quarantine / "sub" / "a.jpg").exists()
    model.broken = False
    drain(worker, queue)
    worker.close()
    assert (folders.output / "sub" / "a.png").exists()
    assert not (folders.quarantine / "sub" / "a.jpg.error.json").exists()


def test_a_retried_file_that_fails_again_returns_to_its_quarantine_place(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    add(folders, queue, "a.jpg")
    worker = make_worker(folders, queue, clock, model=FlakyModel())
    drain(worker, queue)
    retry(folders, target=None, every=True)
    drain(worker, queue)
    worker.close()
    assert sorted(p.name for p in folders.quarantine.iterdir()) == ["a.jpg", "a.jpg.error.json"]


def test_closing_puts_prefetched_jobs_back_without_counting_them(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    for index in range(3):
        add(folders, queue, f"{index}.jpg")
    worker = make_worker(folders, queue, clock, in_flight=3)
    worker.stages.top_up()  # claimed and decoding, none through the model yet
    worker.close()
    assert queue.counts()["pending"] == 3
    job = queue.claim()
    assert job is not None and job.attempts == 1


def test_a_decompression_bomb_and_a_raw_file_are_quarantined_with_their_reasons(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    from daemon.pipeline.source import RAW_AVAILABLE
    from tests.test_photo_files import _png_claiming

    (folders.input / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    (folders.input / "IMG_1.NEF").write_bytes(b"II*\x00" + b"\x00" * 64)
    for name in ("bomb.png", "IMG_1.NEF"):
        queue.offer(P(name), Fingerprint.of(folders.input / name))
    worker = make_worker(folders, queue, clock)
    drain(worker, queue)
    worker.close()
    reasons = {name: json.loads((folders.quarantine / f"{name}.error.json").read_text())["reason"]
               for name in ("bomb.png", "IMG_1.NEF")}
    # A NEF that LibRaw (the `raw` extra) cannot read; without the extra no RAW is read at all.
    assert reasons == {"bomb.png": "too_large", "IMG_1.NEF": "undecodable" if RAW_AVAILABLE else "unsupported"}


class ReExportingModel(BrightModel):
    """The photographer re-exports the file while the model is busy with it."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        write_image(self.path, subject_image(200, 300, (50, 50, 250, 150)))
        return super().predict(batch)


@pytest.mark.parametrize("policy", ["archive", "delete"])
def test_a_file_replaced_during_processing_is_neither_archived_nor_deleted(
    folders: Folders, queue: JobQueue, clock: FakeClock, policy: OriginalsPolicy
) -> None:
    path = add(folders, queue, "a.jpg")
    worker = make_worker(folders, queue, clock, model=ReExportingModel(path), policy=policy)
    drain(worker, queue)
    worker.close()
    assert path.exists() and (folders.output / "a.png").exists()
    assert queue.offer(P("a.jpg"), Fingerprint.of(path), content_hash=lambda: "new content") == "requeued"


def test_the_original_stays_when_its_cutout_could_not_be_written(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    path = add(folders, queue, "a.jpg")
    folders.output.rmdir()
    worker = make_worker(folders, queue, clock, policy="delete")
    drain(worker, queue)
    worker.close()
    assert path.exists()


def test_a_quarantine_that_cannot_be_written_sends_the_job_back_and_the_loop_goes_on(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    add(folders, queue, "dark.png", np.full((100, 100, 3), 20, np.uint8))
    crash_alone(queue, times=3)  # and a second file that crashed the process three times
    add(folders, queue, "b.png", np.full((100, 100, 3), 20, np.uint8))
    folders.quarantine.rmdir()
    folders.quarantine.write_text("a file where the quarantine folder should be")
    worker = make_worker(folders, queue, clock)
    drain(worker, queue)
    worker.close()
    assert (folders.input / "dark.png").exists() and (folders.input / "b.png").exists()
    assert queue.counts() == {"pending": 2, "running": 0, "done": 0, "failed": 0, "review": 0}


def crash_alone(queue: JobQueue, *, times: int, crashed: bool = True) -> None:
    """The next job dies with the process `times` times, each time alone inside the model:
    a crash of its own (`crashed`) or a kill from outside."""
    for _ in range(times):
        job = queue.claim()
        assert job is not None
        queue.mark_stage(job, "inference")
        queue.recover(crashed=crashed)


def test_a_verdict_on_a_file_that_changed_since_its_claim_becomes_a_retry(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    from daemon.errors import FileChanged, Undecodable
    from daemon.work.worker import _Claimed

    path = write_image(folders.input / "copying.tif", subject_image(30, 40, BOX))
    add(folders, queue, "other.png")
    job = queue.claim()
    assert job is not None
    worker = make_worker(folders, queue, clock)
    claimed = replace(job, source=P("copying.tif"))
    assert isinstance(worker._judged(_Claimed(claimed, Fingerprint(1, 1)), Undecodable("half a TIFF")), FileChanged)
    same = _Claimed(claimed, Fingerprint.of(path))
    assert isinstance(worker._judged(same, Undecodable("broken")), Undecodable)
    worker.close()


def test_heartbeats_racing_the_end_of_jobs_never_report_a_claim_lost_on_one_daemon(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    """The watch thread heartbeats the jobs in flight while they end on the stage pool: a job
    that just ended is done, not lost, and says nothing."""
    import threading

    from structlog.testing import capture_logs

    for index in range(12):
        add(folders, queue, f"{index:02d}.jpg", subject_image(60, 80, (20, 15, 60, 45)))
    worker = make_worker(folders, queue, clock)
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            worker.heartbeat()

    beating = threading.Thread(target=beat)
    with capture_logs() as logs:
        beating.start()
        try:
            drain(worker, queue)
        finally:
            stop.set()
            beating.join(10)
    worker.close()
    assert queue.counts()["done"] == 12
    assert [e for e in logs if e["event"] == "claim_lost"] == []


def test_a_job_whose_end_the_store_cannot_write_is_neither_charged_nor_stuck(folders: Folders, clock: FakeClock) -> None:
    """The store is away as the job ends (another session holds its lock past the busy time):
    neither the cutout nor the retry can be recorded. Once it is back the job is done, with no
    attempt counted against the file and no restart needed."""
    import sqlite3

    from structlog.testing import capture_logs

    from daemon.errors import QueueError

    path = folders.state / "queue.sqlite3"
    queue = JobQueue(path, clock=clock, busy_seconds=0.1)
    add(folders, queue, "a.jpg", subject_image(60, 80, (20, 15, 60, 45)))
    other = sqlite3.connect(path, isolation_level=None)

    class LockingModel(BrightModel):
        def predict(self, batch: Any) -> Any:
            if self.calls == 0:
                other.execute("BEGIN EXCLUSIVE")  # taken while the job runs: its end finds the store away
            return super().predict(batch)

    worker = make_worker(folders, queue, clock, model=LockingModel(), in_flight=1)
    with capture_logs() as logs:
        for _ in range(100):
            try:
                worker.run_once(idle_wait=0.02)
            except QueueError:
                pass  # the runner's loop waits the store out
            if any(e["event"] == "retry_not_recorded" for e in logs):
                break
        other.execute("ROLLBACK")
        for _ in range(200):
            worker.run_once(idle_wait=0.02)
            if queue.counts()["done"] == 1:
                break
    worker.close()
    other.close()
    job = queue.get(P("a.jpg"))
    assert job is not None and job.state == "done" and job.finished_attempts == 0
    assert [e["event"] for e in logs].count("retry_not_recorded") == 1
    assert "quarantined" not in {e.get("outcome") for e in logs}
    queue.close()


def test_a_slot_freed_during_a_forward_is_claimed_again_before_the_forward_ends(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    """Small photos: the pool finishes one while the model works on the next; the freed slot
    must take the next file now, not when the model thread is back (cores would idle)."""
    import threading

    from daemon.testing import wait_until

    in_forward, gate = threading.Event(), threading.Event()

    class SecondForwardWaits(BrightModel):
        forwards = 0

        def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            self.forwards += 1
            if self.forwards == 2:
                in_forward.set()
                gate.wait(10)
            return super().predict(batch)

    for name in ("a.jpg", "b.jpg", "c.jpg"):
        add(folders, queue, name)
    worker = make_worker(folders, queue, clock, model=SecondForwardWaits(), in_flight=2)
    finished = worker.stages.on_done

    def finish_during_the_forward(*args: Any) -> None:  # a's finish ends while b is in the model
        assert in_forward.wait(10)
        finished(*args)

    worker.stages.on_done = finish_during_the_forward
    worker.stages.top_up()  # a and b: both slots
    assert worker.stages.infer_next()  # a through the model; its finish goes to the pool
    model = threading.Thread(target=worker.stages.infer_next)
    model.start()  # b's forward, which waits
    try:
        assert in_forward.wait(10)
        wait_until(lambda: (folders.output / "a.png").exists(), what="a's finish")
        wait_until(lambda: bool(worker.stages._ready) and worker.stages._ready[0].prepared.done(),
                   what="c claimed and decoded while b is in the model")
        job = queue.get(P("c.jpg"))
        assert job is not None and job.state == "running" and not gate.is_set()
    finally:
        gate.set()
        model.join(10)
    drain(worker, queue)
    worker.close()
    assert sorted(path.name for path in folders.output.iterdir()) == ["a.png", "b.png", "c.png"]


def test_a_file_that_cannot_be_looked_at_after_its_claim_goes_back_to_the_queue_uncounted(
    folders: Folders, queue: JobQueue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error while the claimed file is checked (a NAS gone read-error): the job is put back,
    not left `running` with no one working on it until its lease runs out."""
    add(folders, queue, "a.jpg")
    worker = make_worker(folders, queue, clock)

    def unreadable(claimed: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(worker, "_refusal", unreadable)
    with pytest.raises(OSError):
        worker.stages.top_up()
    job = queue.get(P("a.jpg"))
    assert job is not None and job.state == "pending" and job.attempts == 0
    monkeypatch.undo()
    drain(worker, queue)
    worker.close()
    assert (folders.output / "a.png").exists()


def test_a_batch_whose_last_finish_frees_a_slot_after_the_top_up_still_does_every_file(tmp_path: Path) -> None:
    """`cutout process`: the driver found no free slot, then every image in flight finished before
    it looked again; the files not yet claimed are still done, none silently left out."""
    from daemon.pipeline.source import ImageOptions
    from daemon.work.batch import _claims, _drive
    from daemon.work.stages import Stages

    names = [f"{index}.png" for index in range(5)]
    for name in names:
        write_image(tmp_path / name, subject_image(120, 160, (30, 20, 130, 100)))
    done: list[str] = []
    stages: Stages[PurePosixPath] = Stages(
        model=BrightModel(), params=PipelineParams(), options=ImageOptions(), in_flight=1, cpu_threads=1,
        claim=_claims(iter(P(name) for name in names), input_dir=tmp_path),
        on_done=lambda task, prepared, cutout: done.append(task.key.name), on_failed=lambda task, exc: None)
    infer = stages.infer_next

    def late_look() -> bool:  # the driver is slow to look again: the finish in flight ends meanwhile
        ran = infer()
        if not ran:
            import time
            time.sleep(0.2)
        return ran

    stages.infer_next = late_look  # type: ignore[method-assign]
    _drive(stages)
    assert sorted(done) == names


def test_a_claim_that_fails_gives_its_slot_back() -> None:
    """The store away at a claim (a database restart): once it is back, every slot claims again."""
    from daemon.pipeline.source import ImageOptions
    from daemon.work.stages import Stages

    asked: list[int] = []

    def away() -> tuple[str, Path] | None:
        asked.append(1)
        raise RuntimeError("the store is away")

    stages: Stages[str] = Stages(model=BrightModel(), params=PipelineParams(), options=ImageOptions(), in_flight=1,
                                 cpu_threads=1, claim=away, on_done=lambda *a: None, on_failed=lambda *a: None)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            stages.top_up()
    assert len(asked) == 3  # each try had its slot
    stages.close()


def test_opencv_gets_the_cores_the_stage_pool_leaves_it() -> None:
    """The pool gives each of its threads an image: with one per core, OpenCV's own threads on top
    would only oversubscribe the cores (and spin while they wait); a pool of fewer leaves it some."""
    import os

    import cv2

    from daemon.pipeline.source import ImageOptions
    from daemon.work.stages import Stages, opencv_threads

    assert [opencv_threads(pool_threads=pool, cores=8) for pool in (8, 16, 3, 1, 0)] == [1, 1, 2, 8, 8]
    assert opencv_threads(pool_threads=2, cores=None) == 1
    before = cv2.getNumThreads()
    cv2.setNumThreads(4)
    try:
        stages: Stages[str] = Stages(model=BrightModel(), params=PipelineParams(), options=ImageOptions(), in_flight=2,
                                     cpu_threads=os.cpu_count() or 1, claim=lambda: None, on_done=lambda *a: None,
                                     on_failed=lambda *a: None)
        assert cv2.getNumThreads() == 1
        stages.close()
    finally:
        cv2.setNumThreads(before)


def test_a_slow_quarantine_move_holds_no_lock_the_watch_threads_rejections_wait_on(
    folders: Folders, queue: JobQueue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed original crossing to a quarantine on a slow NAS takes long; a file refused by the
    watch thread meanwhile (its name cannot be stored) is quarantined at once."""
    import threading

    import daemon.work.worker as worker_module
    from daemon.errors import InvalidName

    real_move = worker_module.move_to_quarantine
    moving, finish = threading.Event(), threading.Event()

    def slow_nas(folders: Folders, rel: P, target: P, report: Any) -> None:
        if rel == P("dark.png"):
            moving.set()
            finish.wait(30)  # the copy across volumes, still going
        real_move(folders, rel, target, report)

    monkeypatch.setattr(worker_module, "move_to_quarantine", slow_nas)
    add(folders, queue, "dark.png", np.full((100, 100, 3), 20, np.uint8))
    worker = make_worker(folders, queue, clock)
    running = threading.Thread(target=drain, args=(worker, queue))
    running.start()
    assert moving.wait(30)
    (folders.input / "dark__b.png").write_bytes(b"x")
    where = worker.reject(P("dark__b.png"), InvalidName("a name that cannot be stored"))
    assert where == str(folders.quarantine / "dark__b.png")  # done while the other move still runs
    finish.set()
    running.join(30)
    worker.close()
    job = queue.get(P("dark.png"))
    assert job is not None and job.state == "failed" and (folders.quarantine / "dark.png").exists()
