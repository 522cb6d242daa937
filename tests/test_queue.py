"""The SQLite job queue: states, attempts, claims and re-drops, on a real database."""

from __future__ import annotations

import sqlite3
from pathlib import Path, PurePosixPath

import pytest

from daemon.errors import ConfigError
from daemon.queue import Fingerprint, JobQueue

from tests.conftest import FakeClock

P = PurePosixPath


@pytest.fixture
def queue(tmp_path: Path, clock: FakeClock) -> JobQueue:
    return JobQueue(tmp_path / "state" / "queue.sqlite3", clock=clock)


FP = Fingerprint(100, 1)


def test_the_database_is_in_wal_mode(queue: JobQueue) -> None:
    with sqlite3.connect(queue.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_new_file_becomes_a_pending_job_and_claiming_counts_the_attempt(queue: JobQueue) -> None:
    assert queue.offer(P("a/b.jpg"), FP) == "queued"
    job = queue.claim()
    assert job is not None and job.source == P("a/b.jpg") and job.output == P("a/b.png")
    assert job.state == "running" and job.attempts == 1
    assert queue.claim() is None


def test_jobs_left_running_by_a_dead_process_go_back_to_pending_with_their_attempts(queue: JobQueue) -> None:
    queue.offer(P("a.jpg"), FP)
    queue.claim()
    assert queue.recover() == 1
    job = queue.claim()
    assert job is not None and job.attempts == 2 and job.unfinished_starts == 2


def test_a_retry_waits_for_its_time_and_transient_errors_do_not_count_as_crashes(
    queue: JobQueue, clock: FakeClock
) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.mark_retry(job, reason="disk_full", message="full", delay=10, counts=False)
    assert queue.claim() is None and queue.next_retry_in() == 10
    clock.now += 10
    again = queue.claim()
    assert again is not None and again.attempts == 2 and again.unfinished_starts == 1


def test_a_done_file_offered_again_unchanged_is_not_requeued(queue: JobQueue) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.mark_done(job, content_hash="abc", fingerprint=FP)
    assert queue.offer(P("a.jpg"), FP) == "unchanged"


def test_a_redrop_with_the_same_content_is_not_reprocessed_but_new_content_is(queue: JobQueue) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.mark_done(job, content_hash="abc", fingerprint=FP)
    assert queue.offer(P("a.jpg"), Fingerprint(100, 2), content_hash=lambda: "abc") == "unchanged"
    assert queue.offer(P("a.jpg"), Fingerprint(120, 3), content_hash=lambda: "def") == "requeued"
    requeued = queue.claim()
    assert requeued is not None and requeued.attempts == 1 and requeued.output == P("a.png")


def test_a_pending_file_offered_again_stays_one_job(queue: JobQueue) -> None:
    assert queue.offer(P("a.jpg"), FP) == "queued"
    assert queue.offer(P("a.jpg"), Fingerprint(200, 2)) == "busy"
    assert queue.counts()["pending"] == 1


def test_output_names_are_claimed_once_case_insensitively_in_arrival_order(queue: JobQueue) -> None:
    for name in ("x.png", "X.jpg", "x.webp"):
        queue.offer(P(name), FP)
    outputs = [queue.claim() for _ in range(3)]
    assert [job.output.as_posix() for job in outputs if job] == ["x.png", "X.jpg.png", "x.webp.png"]


def test_a_released_job_does_not_count_its_start(queue: JobQueue) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.release(job)
    again = queue.claim()
    assert again is not None and again.attempts == 1


def test_a_failed_job_redropped_is_queued_from_scratch(queue: JobQueue) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.mark_failed(job, reason="no_foreground", message="none", quarantine=P("a.jpg"))
    assert queue.offer(P("a.jpg"), Fingerprint(5, 5)) == "requeued"
    again = queue.claim()
    assert again is not None and again.attempts == 1
    assert again.quarantine is None  # a new file at that path, not the quarantined one


def test_the_queue_survives_reopening(tmp_path: Path) -> None:
    first = JobQueue(tmp_path / "q.sqlite3")
    first.offer(P("a.jpg"), FP)
    first.close()
    second = JobQueue(tmp_path / "q.sqlite3")
    assert second.counts() == {"pending": 1, "running": 0, "done": 0, "failed": 0}


def test_a_state_folder_belongs_to_one_hot_folder(queue: JobQueue, tmp_path: Path) -> None:
    queue.bind_input(tmp_path / "hot")
    queue.bind_input(tmp_path / "hot")
    with pytest.raises(ConfigError, match="belongs to hot folder"):
        queue.bind_input(tmp_path / "other")


def test_a_failed_transaction_is_rolled_back(queue: JobQueue) -> None:
    with pytest.raises(RuntimeError):
        with queue.db() as conn:
            conn.execute(
                "INSERT INTO jobs (source, output, output_key, size, mtime_ns, state, first_seen, queued_at)"
                " VALUES ('x', 'x', 'x', 1, 1, 'pending', 0, 0)"
            )
            raise RuntimeError("boom")
    assert queue.counts()["pending"] == 0


def test_a_failed_job_releases_its_output_name(queue: JobQueue) -> None:
    queue.offer(P("x.CR3"), FP)
    raw = queue.claim()
    assert raw is not None and raw.output == P("x.png")
    queue.mark_failed(raw, reason="unsupported", message="RAW", quarantine=P("x.CR3"))
    queue.offer(P("x.JPG"), FP)
    jpeg = queue.claim()
    assert jpeg is not None and jpeg.output == P("x.png")


def test_state_changes_only_apply_to_the_state_they_expect(queue: JobQueue) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.mark_done(job, content_hash="h", fingerprint=FP)
    queue.mark_retry(job, reason="io_error", message="late", delay=0, counts=True)  # after done: ignored
    queue.mark_failed(job, reason="model_error", message="late", quarantine=None)
    assert queue.counts()["done"] == 1
    assert queue.requeue(job) is False  # only failed jobs are sent back


def test_a_retried_job_gets_its_output_name_back_if_still_free(queue: JobQueue) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.mark_failed(job, reason="model_error", message="x", quarantine=P("a.jpg"))
    failed = queue.get(P("a.jpg"))
    assert failed is not None and queue.requeue(failed) is True
    again = queue.claim()
    assert again is not None and again.output == P("a.png") and again.quarantine == P("a.jpg")
