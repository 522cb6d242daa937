"""The SQLite job queue: states, attempts, claims and re-drops, on a real database."""

from __future__ import annotations

import sqlite3
from pathlib import Path, PurePosixPath

import pytest

from daemon.errors import ConfigError
from daemon.queue import JobQueue
from daemon.store import Fingerprint, Recovery

from daemon.testing import FakeClock

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


def test_a_job_claimed_but_in_no_stage_when_the_process_died_goes_back_uncharged(queue: JobQueue) -> None:
    queue.offer(P("a.jpg"), FP)
    queue.claim()
    assert queue.recover(crashed=True) == Recovery(released=1, suspects=0, blamed=0, killed=0)
    job = queue.claim()
    assert job is not None and job.attempts == 1 and job.crashes == 0 and not job.suspect


def test_the_only_job_inside_a_stage_when_the_process_crashed_is_charged_with_the_crash(queue: JobQueue) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        queue.offer(P(name), FP)
    a, _, _ = queue.claim(), queue.claim(), queue.claim()
    assert a is not None
    queue.mark_stage(a, "inference")
    assert queue.recover(crashed=True) == Recovery(released=2, suspects=1, blamed=1, killed=0)
    again = queue.get(P("a.jpg"))
    assert again is not None and (again.crashes, again.kills) == (1, 0) and again.suspect and again.stage is None


def test_the_only_job_inside_a_stage_when_the_process_was_killed_counts_a_kill_not_a_crash(queue: JobQueue) -> None:
    queue.offer(P("a.jpg"), FP)
    a = queue.claim()
    assert a is not None
    queue.mark_stage(a, "decode")
    assert queue.recover(crashed=False) == Recovery(released=0, suspects=1, blamed=0, killed=1)
    again = queue.get(P("a.jpg"))
    assert again is not None and (again.crashes, again.kills) == (0, 1) and again.suspect


def test_several_jobs_inside_stages_become_suspects_that_run_first_and_alone(queue: JobQueue) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        queue.offer(P(name), FP)
    jobs = [queue.claim() for _ in range(3)]
    for job, stage in zip(jobs, ("decode", "inference", "finish"), strict=True):
        assert job is not None
        queue.mark_stage(job, stage)
    assert queue.recover(crashed=True) == Recovery(released=0, suspects=3, blamed=0, killed=0)
    assert all(job is not None and job.crashes == 0 for job in map(queue.get, (P("a.jpg"), P("b.jpg"))))
    assert queue.claim(suspect_ok=False) is None  # other work in flight: the suspect waits, and so does the rest
    first = queue.claim()
    assert first is not None and first.suspect and first.source == P("a.jpg")


@pytest.mark.parametrize("crashed", [True, False])
def test_suspects_that_die_alone_take_turns_so_a_run_of_deaths_convicts_nobody_early(
    queue: JobQueue, crashed: bool
) -> None:
    for name in ("a.jpg", "b.jpg"):
        queue.offer(P(name), FP)
    for job in (queue.claim(), queue.claim()):
        assert job is not None
        queue.mark_stage(job, "decode")
    queue.recover(crashed=crashed)
    order = []
    for _ in range(4):  # the process dies every time, whatever runs alone
        job = queue.claim()
        assert job is not None
        order.append(job.source.name)
        queue.mark_stage(job, "inference")
        queue.recover(crashed=crashed)
    assert order == ["a.jpg", "b.jpg", "a.jpg", "b.jpg"]
    jobs = [job for job in map(queue.get, (P("a.jpg"), P("b.jpg"))) if job]
    assert max(job.crashes if crashed else job.kills for job in jobs) == 2
    assert max(job.kills if crashed else job.crashes for job in jobs) == 0


def test_an_older_database_gains_the_new_columns_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE jobs (id INTEGER PRIMARY KEY, source TEXT NOT NULL UNIQUE, output TEXT NOT NULL,"
            " output_key TEXT UNIQUE, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, content_hash TEXT,"
            " state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, finished_attempts INTEGER NOT NULL DEFAULT 0,"
            " retry_at REAL NOT NULL DEFAULT 0, reason TEXT, message TEXT, quarantine TEXT, first_seen REAL NOT NULL,"
            " queued_at REAL NOT NULL, started_at REAL, finished_at REAL);"
            "INSERT INTO jobs (source, output, size, mtime_ns, state, first_seen, queued_at)"
            " VALUES ('a.jpg', 'a.png', 1, 1, 'pending', 0, 0);"
        )
    job = JobQueue(path).claim()
    assert job is not None and job.crashes == 0 and not job.suspect


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
    queue.finish(job, content_hash="abc", fingerprint=FP, publish=lambda: None)
    assert queue.offer(P("a.jpg"), FP) == "unchanged"


def test_a_redrop_with_the_same_content_is_not_reprocessed_but_new_content_is(queue: JobQueue) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.finish(job, content_hash="abc", fingerprint=FP, publish=lambda: None)
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
    queue.finish(job, content_hash="h", fingerprint=FP, publish=lambda: None)
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
