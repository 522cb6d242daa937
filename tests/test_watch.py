"""Settled files only: the settle window, end markers, temp names, and the real observer."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from typing import Any
from pathlib import Path, PurePosixPath

import pytest
from structlog.testing import capture_logs

from daemon.errors import QueueError
from daemon.folders.layout import is_candidate_name
from daemon.store.jobs import Fingerprint
from daemon.store.sqlite import JobQueue
from daemon.testing import FakeClock, wait_until
from daemon.watch.settle import OFFERS_PER_TRANSACTION, STORE_RETRY_SECONDS, Settler, reconcile, start_observer
from tests.conftest import counted, fill_disk, small_tmpfs, subject_image, write_image

P = PurePosixPath


@pytest.fixture
def hot(tmp_path: Path) -> Path:
    (tmp_path / "hot").mkdir()
    return tmp_path / "hot"


@pytest.fixture
def queue(tmp_path: Path) -> JobQueue:
    return JobQueue(tmp_path / "queue.sqlite3")


@pytest.fixture
def settler(hot: Path, queue: JobQueue, clock: FakeClock) -> Settler:
    return Settler(
        root=hot, queue=queue, settle_seconds=1.0, incomplete_timeout=30.0, clock=clock, on_queued=lambda: None,
        on_rejected=lambda rel, error: rejected.append((rel, error.reason)),
    )


rejected: list[tuple[PurePosixPath, str]] = []


@pytest.fixture(autouse=True)
def _no_rejections_leak() -> None:
    rejected.clear()


def _jpeg_bytes(tmp_path: Path) -> bytes:
    return write_image(tmp_path / "source.jpg", subject_image(300, 400, (100, 80, 300, 220))).read_bytes()


def test_a_file_written_in_chunks_is_queued_once_after_the_last_chunk(
    tmp_path: Path, hot: Path, queue: JobQueue, settler: Settler, clock: FakeClock
) -> None:
    data = _jpeg_bytes(tmp_path)
    target = hot / "slow.jpg"
    chunks = [data[i : i + 700] for i in range(0, len(data), 700)]
    for chunk in chunks:
        with open(target, "ab") as handle:
            handle.write(chunk)
        settler.hint(P("slow.jpg"))
        settler.run_once()
        clock.now += 0.9  # pauses shorter than the settle window
        settler.run_once()
        assert queue.counts()["pending"] == 0
    clock.now += 1.1
    settler.run_once()
    job = queue.get(P("slow.jpg"))
    assert job is not None and job.size == len(data)


def test_a_burst_that_settles_together_is_offered_in_one_transaction_per_hundred_files(
    tmp_path: Path, hot: Path, queue: JobQueue, settler: Settler, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _jpeg_bytes(tmp_path)
    names = [f"shot-{index:03d}.jpg" for index in range(OFFERS_PER_TRANSACTION + 20)]
    for name in names:
        (hot / name).write_bytes(data)
        settler.hint(P(name))
    settler.run_once()
    work = counted(queue, monkeypatch)
    clock.now += 1.1
    settler.run_once()
    assert work.transactions == 2  # a hundred together, then the twenty left
    assert queue.counts()["pending"] == len(names) and settler.pending() == 0


def test_a_burst_that_settles_while_the_store_is_full_stays_watched_and_is_queued_when_space_returns(
    tmp_path: Path, hot: Path, clock: FakeClock
) -> None:
    with small_tmpfs(tmp_path / "state-disk", size="2m") as disk:
        queue = JobQueue(disk / "queue.sqlite3")
        settler = Settler(root=hot, queue=queue, settle_seconds=1.0, incomplete_timeout=30.0, clock=clock,
                          on_queued=lambda: None, on_rejected=lambda rel, error: None)
        data = _jpeg_bytes(tmp_path)
        names = [f"shot-{index}.jpg" for index in range(5)]
        filler = fill_disk(disk)
        for name in names:
            (hot / name).write_bytes(data)
            settler.hint(P(name))
        settler.run_once()
        clock.now += 1.1
        settler.run_once()
        assert sorted((w.path, bool(w.unqueued)) for w in settler.waiting()) == [(name, True) for name in names]
        filler.unlink()
        clock.now += STORE_RETRY_SECONDS
        settler.run_once()
        assert settler.waiting() == [] and queue.counts()["pending"] == len(names)
        queue.close()


def test_when_a_later_batch_finds_the_store_away_its_files_wait_for_the_retry_and_the_store_is_not_called_back(
    tmp_path: Path, hot: Path, queue: JobQueue, settler: Settler, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, calls, real = _jpeg_bytes(tmp_path), [], queue.offer_together

    def second_batch_away(files: Any) -> Any:  # the store's disk fills between two batches
        calls.append(len(files))
        if len(calls) == 2:
            raise QueueError("the job store's disk is full")
        return real(files)

    monkeypatch.setattr(queue, "offer_together", second_batch_away)
    names = [f"shot-{index:03d}.jpg" for index in range(OFFERS_PER_TRANSACTION + 5)]
    for name in names:
        (hot / name).write_bytes(data)
        settler.hint(P(name))
    settler.run_once()
    clock.now += 1.1
    with capture_logs() as logs:
        settler.run_once()
        clock.now += 0.1
        settler.run_once()  # before the retry: the store is not asked again
    assert calls == [OFFERS_PER_TRANSACTION, 5]
    assert queue.counts()["pending"] == OFFERS_PER_TRANSACTION and len(settler.waiting()) == 5
    assert "store_writable_again" not in [entry["event"] for entry in logs]
    clock.now += STORE_RETRY_SECONDS
    settler.run_once()
    assert queue.counts()["pending"] == len(names) and settler.waiting() == []


def test_an_unchanged_but_incomplete_jpeg_waits_then_is_queued_after_the_timeout(
    tmp_path: Path, hot: Path, queue: JobQueue, settler: Settler, clock: FakeClock
) -> None:
    (hot / "half.jpg").write_bytes(_jpeg_bytes(tmp_path)[:2000])
    settler.hint(P("half.jpg"))
    settler.run_once()
    clock.now += 5
    settler.run_once()
    assert queue.get(P("half.jpg")) is None and settler.pending() == 1
    clock.now += 30
    settler.run_once()
    assert queue.get(P("half.jpg")) is not None  # the worker will quarantine it as truncated


def test_a_file_that_disappears_while_settling_is_forgotten(hot: Path, settler: Settler, clock: FakeClock) -> None:
    (hot / "gone.png").write_bytes(b"x")
    settler.hint(P("gone.png"))
    settler.run_once()
    (hot / "gone.png").unlink()
    clock.now += 2
    settler.run_once()
    assert settler.pending() == 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("~$a.jpg", False),
        ("a.jpg.tmp", False),
        ("a.part", False),
        ("a.jpg.crdownload", False),
        (".DS_Store", False),
        ("._a.jpg", False),
        (".a.jpg", False),
        ("a.txt", False),
    ],
)
def test_temp_hidden_and_non_image_names_are_ignored(name: str, expected: bool) -> None:
    assert is_candidate_name(name) is expected


def test_reconcile_hints_new_and_changed_files_but_not_done_ones(
    tmp_path: Path, hot: Path, queue: JobQueue, settler: Settler, clock: FakeClock
) -> None:
    data = _jpeg_bytes(tmp_path)
    for rel in ("a.jpg", "sub/b.jpg"):
        (hot / rel).parent.mkdir(parents=True, exist_ok=True)
        (hot / rel).write_bytes(data)
    assert reconcile(root=hot, queue=queue, settler=settler) == 2
    settler.run_once()
    clock.now += 2
    settler.run_once()
    for _ in range(2):
        job = queue.claim()
        assert job is not None
        queue.finish(job, content_hash="h", fingerprint=Fingerprint.of(hot / job.source), publish=lambda: None)
    assert reconcile(root=hot, queue=queue, settler=settler) == 0
    (hot / "a.jpg").write_bytes(data + b"changed")
    assert reconcile(root=hot, queue=queue, settler=settler) == 1


def test_a_file_replaced_while_its_job_is_busy_stays_watched_and_is_requeued_after(
    tmp_path: Path, hot: Path, queue: JobQueue, settler: Settler, clock: FakeClock
) -> None:
    data = _jpeg_bytes(tmp_path)
    (hot / "a.jpg").write_bytes(data)
    settler.hint(P("a.jpg"))
    settler.run_once()
    clock.now += 2
    settler.run_once()
    job = queue.claim()  # the worker is on it...
    assert job is not None
    (hot / "a.jpg").write_bytes(data + b"re-exported")  # ...when a new version lands
    settler.hint(P("a.jpg"))
    for _ in range(3):
        clock.now += 2
        settler.run_once()
    assert settler.pending() == 1  # still watched while the job is busy
    queue.finish(job, content_hash="old", fingerprint=Fingerprint(job.size, job.mtime_ns), publish=lambda: None)
    clock.now += 2
    settler.run_once()
    requeued = queue.get(P("a.jpg"))
    assert requeued is not None and requeued.state == "pending" and settler.pending() == 0


def write_soon(path: Path, data: bytes, *, delay: float = 0.1) -> threading.Thread:
    """Write a file from another thread a moment from now, as an exporting app would."""

    def write() -> None:
        time.sleep(delay)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


class Recorder:
    """Collects the settler's hints from the real observer thread."""

    def __init__(self) -> None:
        self._hints: set[PurePosixPath] = set()
        self._lock = threading.Lock()
        self.root_gone = threading.Event()

    def hint(self, rel: PurePosixPath) -> None:
        with self._lock:
            self._hints.add(rel)

    @property
    def hints(self) -> set[PurePosixPath]:
        with self._lock:
            return set(self._hints)

    def take(self) -> set[PurePosixPath]:
        """The hints so far, forgotten."""
        with self._lock:
            taken, self._hints = self._hints, set()
            return taken


@pytest.mark.parametrize("polling", [False, True], ids=["native", "polling"])
def test_the_real_observer_hints_new_nested_renamed_and_moved_in_files(
    tmp_path: Path, hot: Path, polling: bool
) -> None:
    recorder = Recorder()
    observer = start_observer(
        root=hot, settler=recorder, polling=polling, poll_interval=0.1
    )
    try:
        write_soon(hot / "new" / "deep" / "a.jpg", b"data").join()
        (hot / "export.tmp").write_bytes(b"data")
        (hot / "export.tmp").rename(hot / "renamed.png")
        outside = tmp_path / "outside"
        (outside / "inner").mkdir(parents=True)
        (outside / "inner" / "c.tif").write_bytes(b"data")
        shutil.move(str(outside), str(hot / "moved-in"))
        (hot / "notes.txt").write_bytes(b"text")
        expected = {P("new/deep/a.jpg"), P("renamed.png"), P("moved-in/inner/c.tif")}
        wait_until(lambda: expected <= recorder.hints, what=f"hints for {expected}")
        assert not any(hint.name in ("notes.txt", "export.tmp") for hint in recorder.hints)
    finally:
        observer.stop()
        observer.join()
