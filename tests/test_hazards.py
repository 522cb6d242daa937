"""Studio hazards, in-process on real folders, a real queue and the real observer:
foreign names, readers, paused writers, links, long names and a volume that goes away."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from structlog.testing import capture_logs

from daemon.errors import FileChanged, Undecodable, VolumeUnavailable
from daemon.folders.outputs import Folders
from daemon.folders.volume import Volume
from daemon.store.jobs import Fingerprint
from daemon.store.session import read_live
from daemon.store.sqlite import JobQueue
from daemon.testing import BrightModel, FakeClock, wait_until
from daemon.watch.settle import Settler, start_observer
from daemon.work.worker import Worker, _Claimed
from tests.conftest import subject_image, write_image
from tests.test_watch import Recorder
from tests.test_worker import BOX, add, drain, folders, make_worker, queue  # noqa: F401  (fixtures)

P = PurePosixPath
BAD_NAME = os.fsdecode(b"caf\xe9 \xff.jpg")
"""Latin-1 bytes from an SMB share: not UTF-8, so not a `str` SQLite can store."""


def _settler(folders: Folders, queue: JobQueue, clock: FakeClock, worker: Worker | None = None) -> Settler:
    rejects = worker.reject if worker else (lambda rel, error: None)
    return Settler(
        root=folders.input, queue=queue, settle_seconds=1.0, incomplete_timeout=30.0, clock=clock,
        on_queued=lambda: None, on_rejected=rejects,
    )


def _settle(settler: Settler, clock: FakeClock, *rels: str) -> None:
    for rel in rels:
        settler.hint(P(rel))
    settler.run_once()
    clock.now += 2
    settler.run_once()


def _settled_empty_file(folders: Folders, queue: JobQueue, clock: FakeClock, name: str) -> Settler:
    """A settler that has watched an empty file (a writer that created it and paused) past the window."""
    (folders.input / name).touch()
    settler = _settler(folders, queue, clock)
    _settle(settler, clock, name)
    return settler


# --- 1. one file can stop the whole hot folder ------------------------------------------
def _put(path: Path, source: Path) -> None:
    """Rename by bytes: OpenCV crashes on a `str` path that holds undecodable bytes."""
    os.rename(os.fsencode(source), os.fsencode(path))


def test_a_name_that_is_not_utf8_is_quarantined_and_every_other_file_still_flows(
    folders: Folders, queue: JobQueue, clock: FakeClock, tmp_path: Path
) -> None:
    _put(folders.input / BAD_NAME, write_image(tmp_path / "good.jpg", subject_image(300, 400, BOX)))
    write_image(folders.input / "after.jpg", subject_image(300, 400, BOX))
    worker = make_worker(folders, queue, clock)
    _settle(_settler(folders, queue, clock, worker), clock, BAD_NAME, "after.jpg")
    assert queue.get(P("after.jpg")) is not None
    assert not (folders.input / BAD_NAME).exists()
    stored = "caf\ufffd \ufffd.jpg"
    report = json.loads((folders.quarantine / f"{stored}.error.json").read_text())
    assert report["reason"] == "invalid_name" and report["file"] == "caf\\xe9 \\xff.jpg"
    assert (folders.quarantine / stored).read_bytes()[:2] == b"\xff\xd8"
    failed = queue.jobs(state="failed")
    assert [(job.source, job.reason) for job in failed] == [(P(stored), "invalid_name")]
    worker.close()


def test_a_file_the_queue_refuses_is_set_aside_once_and_the_rest_is_offered(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    with sqlite3.connect(queue.path) as conn:  # a real database error, for this one name only
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON jobs WHEN NEW.source = 'poison.jpg'"
                     " BEGIN SELECT RAISE(ABORT, 'refused'); END")
    for name in ("poison.jpg", "a.jpg", "b.jpg"):
        write_image(folders.input / name, subject_image(30, 40, (5, 5, 20, 20)))
    settler = _settler(folders, queue, clock)
    with capture_logs() as logs:
        _settle(settler, clock, "poison.jpg", "a.jpg", "b.jpg")
        for _ in range(3):
            _settle(settler, clock, "poison.jpg")
    assert queue.counts()["pending"] == 2 and settler.pending() == 0
    assert [entry["path"] for entry in logs if entry["event"] == "file_set_aside"] == ["poison.jpg"]


def test_a_name_too_long_for_its_error_report_is_quarantined_with_a_shortened_name_not_retried(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    name = "é" * 122 + ".png"  # 248 bytes: the file fits, `<name>.error.json` would not
    add(folders, queue, name, np.full((100, 100, 3), 20, np.uint8))  # dark: no foreground
    worker = make_worker(folders, queue, clock)
    drain(worker, queue)
    worker.close()
    [job] = queue.jobs(state="failed")
    assert job.reason == "no_foreground" and job.quarantine is not None
    kept = folders.quarantine / job.quarantine
    assert kept.exists() and len(os.fsencode(kept.name)) <= 255 - len(".error.json")
    assert json.loads(kept.with_name(kept.name + ".error.json").read_text())["file"] == name


def test_a_name_whose_cutout_cannot_exist_is_quarantined_as_name_too_long_unrun(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    name = "x" * 251 + ".jpg"  # the cutout x...x.png is fine, but a second one would be x...x.jpg.png
    add(folders, queue, "x" * 251 + ".png")
    add(folders, queue, name)
    model = BrightModel()
    worker = make_worker(folders, queue, clock, model=model)
    drain(worker, queue)
    worker.close()
    assert queue.counts() == {"pending": 0, "running": 0, "done": 1, "failed": 1, "review": 0}
    job = queue.get(P(name))
    assert job is not None and job.reason == "name_too_long" and model.calls == 1


# --- 2. reading the hot folder -----------------------------------------------------------
def test_reading_files_in_the_hot_folder_wakes_nothing(folders: Folders) -> None:
    for index in range(20):
        write_image(folders.input / f"{index}.jpg", subject_image(30, 40, (5, 5, 20, 20)))
    recorder = Recorder()
    observer = start_observer(root=folders.input, settler=recorder, polling=False, poll_interval=0.1)
    # Events arrive in order: a marker's hint comes after every hint of what happened before it,
    # so no sleep is needed to know that nothing else came (each marker may hint itself twice).
    try:
        (folders.input / "fence.jpg").write_bytes(b"x")
        wait_until(lambda: P("fence.jpg") in recorder.hints, what="the first marker's hint")
        recorder.take()
        for path in folders.input.iterdir():  # a backup, an indexer, the settle check itself
            path.read_bytes()
        os.utime(folders.input / "0.jpg")  # attributes only: no new content either
        (folders.input / "marker.jpg").write_bytes(b"x")
        wait_until(lambda: P("marker.jpg") in recorder.hints, what="the second marker's hint")
        assert recorder.hints - {P("fence.jpg"), P("marker.jpg")} == set()
    finally:
        observer.stop()
        observer.join()


# --- 3. a writer that pauses ---------------------------------------------------------------
def test_an_empty_file_is_not_finished_until_the_incomplete_timeout(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    settler = _settled_empty_file(folders, queue, clock, "created.jpg")
    assert queue.get(P("created.jpg")) is None and settler.waiting()[0].incomplete
    clock.now += 30
    settler.run_once()
    assert queue.get(P("created.jpg")) is not None


def test_an_undecodable_verdict_on_a_file_written_within_the_settle_window_is_a_retry(
    folders: Folders, queue: JobQueue
) -> None:
    path = folders.input / "paused.tif"
    path.write_bytes(b"II*\x00\x08\x00\x00\x00")  # a writer's first bytes, then a pause
    queue.offer(P("paused.tif"), Fingerprint.of(path))
    worker = Worker(
        model=BrightModel(), params=make_worker(folders, queue, FakeClock()).stages.params, folders=folders,
        queue=queue, queue_settings=make_worker(folders, queue, FakeClock()).queue_settings, policy="keep",
        in_flight=1, cpu_threads=1, clock=time.time, settle_seconds=60.0,
    )
    job = queue.claim()
    assert job is not None
    judged = worker._judged(_Claimed(job, Fingerprint.of(path)), Undecodable("no dimensions"))
    assert isinstance(judged, FileChanged) and "changed" in str(judged)
    worker.close()


# --- 5. a volume that goes away --------------------------------------------------------------
def _worker_on_a_volume(folders: Folders, queue: JobQueue, clock: FakeClock) -> tuple[Worker, Volume]:
    add(folders, queue, "a.jpg")
    volume = Volume(folders.input, has_work=queue.has_work)
    worker = make_worker(folders, queue, clock)
    worker.volume = volume
    return worker, volume


def test_a_replaced_hot_folder_pauses_the_worker_and_no_job_changes_state(
    folders: Folders, queue: JobQueue, clock: FakeClock, tmp_path: Path
) -> None:
    worker, volume = _worker_on_a_volume(folders, queue, clock)
    folders.input.rename(tmp_path / "share-contents")  # unmounted: an empty mount point stays
    folders.input.mkdir()
    assert not volume.check() and "another folder" in (volume.problem or "")
    for _ in range(3):
        worker.run_once(idle_wait=0.01)
    assert queue.counts()["pending"] == 1 and queue.counts()["failed"] == 0
    job = queue.get(P("a.jpg"))
    assert job is not None and job.attempts == 0
    folders.input.rmdir()
    (tmp_path / "share-contents").rename(folders.input)  # mounted again
    assert volume.check()
    drain(worker, queue)
    worker.close()
    assert queue.counts()["done"] == 1


def test_a_file_that_vanished_with_its_volume_is_retried_not_marked_vanished(
    folders: Folders, queue: JobQueue, clock: FakeClock, tmp_path: Path
) -> None:
    from daemon.errors import Vanished

    worker, volume = _worker_on_a_volume(folders, queue, clock)
    job = queue.claim()
    assert job is not None
    shutil.rmtree(folders.input)
    folders.input.mkdir()
    judged = worker._judged(_Claimed(job, None), Vanished("the file disappeared"))
    assert isinstance(judged, VolumeUnavailable)
    worker.close()


# --- 8. links ------------------------------------------------------------------------------
def test_a_symlink_to_a_file_outside_the_hot_folder_is_ignored_and_said_once(
    folders: Folders, queue: JobQueue, clock: FakeClock, tmp_path: Path
) -> None:
    secret = write_image(tmp_path / "private" / "secret.jpg", subject_image(300, 400, BOX))
    (folders.input / "link.jpg").symlink_to(secret)
    settler = _settler(folders, queue, clock)
    with capture_logs() as logs:
        for _ in range(3):
            _settle(settler, clock, "link.jpg")
    assert queue.get(P("link.jpg")) is None
    assert [entry["path"] for entry in logs if entry["event"] == "symlink_ignored"] == ["link.jpg"]


@pytest.mark.parametrize("policy", ["archive", "delete"])
def test_a_followed_symlink_is_cut_out_but_never_archived_or_deleted(
    folders: Folders, queue: JobQueue, clock: FakeClock, tmp_path: Path, policy: str
) -> None:
    target = write_image(tmp_path / "elsewhere" / "a.jpg", subject_image(300, 400, BOX))
    (folders.input / "a.jpg").symlink_to(target)
    queue.offer(P("a.jpg"), Fingerprint.of(folders.input / "a.jpg"))
    worker = make_worker(folders, queue, clock, policy=policy)  # type: ignore[arg-type]
    worker.follow_symlinks = True
    drain(worker, queue)
    worker.close()
    assert (folders.output / "a.png").exists()
    assert (folders.input / "a.jpg").is_symlink() and target.exists()


def test_a_symlink_swapped_in_after_settling_is_refused_unrun(
    folders: Folders, queue: JobQueue, clock: FakeClock, tmp_path: Path
) -> None:
    path = add(folders, queue, "a.jpg")
    path.unlink()
    path.symlink_to(write_image(tmp_path / "elsewhere.jpg", subject_image(300, 400, BOX)))
    model = BrightModel()
    worker = make_worker(folders, queue, clock, model=model)
    drain(worker, queue)
    worker.close()
    job = queue.get(P("a.jpg"))
    assert job is not None and job.reason == "unsupported" and model.calls == 0
    assert not (folders.output / "a.png").exists()


def test_deleting_a_hard_linked_original_removes_only_its_name_in_the_hot_folder(
    folders: Folders, queue: JobQueue, clock: FakeClock, tmp_path: Path
) -> None:
    outside = write_image(tmp_path / "catalogue" / "a.jpg", subject_image(300, 400, BOX))
    os.link(outside, folders.input / "a.jpg")
    queue.offer(P("a.jpg"), Fingerprint.of(folders.input / "a.jpg"))
    worker = make_worker(folders, queue, clock, policy="delete")
    drain(worker, queue)
    worker.close()
    assert (folders.output / "a.png").exists() and not (folders.input / "a.jpg").exists()
    assert outside.read_bytes()[:2] == b"\xff\xd8"


# --- 10. what the user sees ------------------------------------------------------------------
def test_status_lists_files_still_settling_or_incomplete_from_the_running_daemon(
    folders: Folders, queue: JobQueue, clock: FakeClock
) -> None:
    from daemon.store.session import SessionRecord

    settler = _settled_empty_file(folders, queue, clock, "empty.jpg")
    session = SessionRecord(folders.state)
    session.begin(now=time.time())
    session.publish_live(waiting=settler.waiting(), volume_problem=None, now=time.time())
    live = read_live(folders.state)
    assert live is not None and [(w.path, w.size, w.incomplete) for w in live.waiting] == [("empty.jpg", 0, True)]
