"""The SQLite job store's own behaviour: WAL, its file, its migrations, one hot folder per state
folder. What every store must do is in test_store_contract.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path, PurePosixPath

import pytest

from daemon.errors import ConfigError
from daemon.store.jobs import Fingerprint
from daemon.store.sqlite import JobQueue
from daemon.testing import FakeClock

P = PurePosixPath


@pytest.fixture
def queue(tmp_path: Path, clock: FakeClock) -> JobQueue:
    return JobQueue(tmp_path / "state" / "queue.sqlite3", clock=clock)


FP = Fingerprint(100, 1)


def test_the_database_is_in_wal_mode(queue: JobQueue) -> None:
    with sqlite3.connect(queue.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


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
    assert job is not None and job.crashes == 0 and not job.suspect and job.doubt is None
    with sqlite3.connect(path) as conn:
        assert {"stage", "token", "doubt", "doubt_parts"} <= {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}


def test_a_queue_made_before_the_review_step_takes_the_review_state_and_keeps_its_rows(tmp_path: Path) -> None:
    from daemon.store.sqlite import SCHEMA

    path = tmp_path / "queue.sqlite3"
    older = SCHEMA.replace("'failed', 'review')", "'failed')")
    assert older != SCHEMA
    with sqlite3.connect(path) as conn:  # as the release before the review step made it
        conn.executescript(older)
        conn.execute("INSERT INTO jobs (source, output, output_key, size, mtime_ns, state, first_seen, queued_at)"
                     " VALUES ('a.jpg', 'a.png', 'a.png', 1, 1, 'pending', 0, 0)")
        conn.execute("INSERT INTO names (key, job_id) VALUES ('a-mask.png', 1)")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE jobs SET state = 'review'")
    queue = JobQueue(path)
    job = queue.claim()
    assert job is not None and job.source == P("a.jpg")
    assert queue.finish(job, content_hash="h", fingerprint=FP, publish=lambda: None, doubt=0.9, review=True)
    assert queue.counts()["review"] == 1
    queue.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT key, job_id FROM names").fetchall() == [("a-mask.png", 1)]
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "jobs_ready" in indexes
        assert "jobs_new" not in {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert JobQueue(path).counts()["review"] == 1  # opened again: nothing to rebuild, nothing lost


def test_the_queue_survives_reopening(tmp_path: Path) -> None:
    first = JobQueue(tmp_path / "q.sqlite3")
    first.offer(P("a.jpg"), FP)
    first.close()
    second = JobQueue(tmp_path / "q.sqlite3")
    assert second.counts() == {"pending": 1, "running": 0, "done": 0, "failed": 0, "review": 0}


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


def test_a_read_only_view_reads_a_queue_this_version_has_not_opened_yet(tmp_path: Path) -> None:
    """`cutout dashboard` beside an older daemon still running: the new columns are not there yet."""
    from daemon.store.view import ReadOnlyQueue

    from daemon.store.sqlite import SCHEMA

    path = tmp_path / "queue.sqlite3"
    older = SCHEMA.replace("token INTEGER NOT NULL DEFAULT 0,", "token INTEGER NOT NULL DEFAULT 0")
    older = "\n".join(line for line in older.splitlines() if not line.lstrip().startswith(("doubt", "recipes", "model")))
    with sqlite3.connect(path) as conn:  # as the release before the doubt score made it
        conn.executescript(older)
        conn.execute("INSERT INTO jobs (source, output, size, mtime_ns, state, first_seen, queued_at)"
                     " VALUES ('a.jpg', 'a.png', 1, 1, 'done', 0, 0)")
    view = ReadOnlyQueue(path)
    try:
        [job] = view.jobs(state="done", limit=5)
        assert job.source.as_posix() == "a.jpg" and job.doubt is None and job.doubt_parts is None
    finally:
        view.close()
