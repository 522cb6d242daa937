"""Reading the job store without getting in the worker's way: the dashboard, `/metrics`, alerts.

- **SQLite**: a connection of its own, opened read-only (`mode=ro`, `query_only`). Each read
  is a plain deferred transaction, which in WAL mode reads a snapshot: it never blocks the
  daemon's writes and never waits for them. (The store's own `db()` starts with `BEGIN
  IMMEDIATE`, the writer's lock, which is right for the daemon and wrong for a page that
  refreshes every two seconds.)
- **PostgreSQL**: the store itself, on a small pool of its own. Under MVCC a SELECT takes no
  row locks, so it never holds up a claim (`FOR UPDATE SKIP LOCKED`) or a finish, and never
  waits for one.

`StoreView` answers the questions `JobStore` has no method for (per-minute throughput,
quarantines by reason, what failed since a moment) with SQL both databases run.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeAlias

from daemon.errors import from_sqlite_error
from daemon.settings import QueueSettings
from daemon.store.configured import worker_id
from daemon.store.jobs import Job, State, WorkerInfo
from daemon.store.sqlite import JobQueue
from daemon.store.statedir import QUEUE_FILE

if TYPE_CHECKING:
    from daemon.store.postgres import PostgresStore

Readable: TypeAlias = "JobQueue | PostgresStore"
"""Either store: its `JobStore` reads and its SQL (`db()`, `JOBS`)."""


class ReadOnlyQueue(JobQueue):
    """The SQLite queue through a read-only connection: every `JobStore` read, none of its writes."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:  # no schema, no pragmas
        self.path, self.clock = path, clock
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5.0,
                                         isolation_level=None, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA query_only=ON")
            self._conn.execute("SELECT 1 FROM jobs LIMIT 1")  # a file that is not (yet) a queue fails here
        except sqlite3.Error as exc:
            raise from_sqlite_error(exc, path=path) from exc

    @contextmanager
    def db(self, *, durable: bool = True, single: bool = False) -> Iterator[sqlite3.Connection]:
        """A deferred read transaction: one consistent snapshot, no lock that a writer waits for."""
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                try:
                    yield self._conn
                finally:
                    self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise from_sqlite_error(exc, path=self.path) from exc


def open_view(queue: QueueSettings, *, state: Path) -> StoreView:
    """The configured store, for reading. Raises QueueError (or ConfigError) when it cannot be read."""
    if queue.store == "postgresql":
        from daemon.store.postgres import PostgresStore  # psycopg only for a fleet

        assert queue.url is not None  # settings.validate
        return StoreView(PostgresStore(queue.url, worker=f"{worker_id(state)}:reader", pool_size=2,
                                       connect_timeout=5.0))
    return StoreView(ReadOnlyQueue(state / QUEUE_FILE))


class StoreView:
    """Read-only questions to one store; every method raises QueueError when the store is away."""

    def __init__(self, store: Readable) -> None:
        self.store = store

    def close(self) -> None:
        self.store.close()

    def counts(self) -> dict[State, int]:
        return self.store.counts()

    def jobs(self, *, state: State, limit: int, newest_first: bool = True) -> list[Job]:
        return self.store.jobs(state=state, limit=limit, newest_first=newest_first)

    def doubtful(self, *, above: float, limit: int) -> list[Job]:
        """Done cut-outs whose doubt is over `above`, the latest first ([] from a queue the running,
        older daemon made: it has no doubt to show)."""
        with self.store.db() as conn:
            if isinstance(self.store, ReadOnlyQueue) and not any(
                    row["name"] == "doubt" for row in conn.execute("PRAGMA table_info(jobs)")):
                return []
        return self.store.doubtful(above=above, limit=limit)

    def get_job(self, job_id: int) -> Job | None:
        with self.store.db() as conn:
            row = conn.execute(f"SELECT source FROM {self.store.JOBS} WHERE id = :id", {"id": job_id}).fetchone()
        return None if row is None else self.store.get(_path(row["source"]))

    def oldest_pending_since(self) -> float | None:
        return self.store.oldest_pending_since()

    def fleet(self) -> list[WorkerInfo]:
        return self.store.fleet()

    def folder(self, name: str) -> Path | None:
        return self.store.folder(name)

    def finished_since(self, since: float, *, state: State = "done") -> list[float]:
        """When each job that ended in `state` at or after `since` ended (for the per-minute chart)."""
        with self.store.db() as conn:
            rows = conn.execute(
                f"SELECT finished_at FROM {self.store.JOBS} WHERE state = :state AND finished_at >= :since",
                {"state": state, "since": since},
            ).fetchall()
        return [float(row["finished_at"]) for row in rows]

    def failed_by_reason(self) -> dict[tuple[str, bool], int]:
        """Failed jobs by (reason, whether the file is in quarantine)."""
        with self.store.db() as conn:
            rows = conn.execute(
                f"SELECT reason, quarantine IS NOT NULL AS held, COUNT(*) AS n FROM {self.store.JOBS}"
                " WHERE state = 'failed' GROUP BY reason, quarantine IS NOT NULL"
            ).fetchall()
        found: dict[tuple[str, bool], int] = {}
        for row in rows:
            key = (str(row["reason"] or "error"), bool(row["held"]))
            found[key] = found.get(key, 0) + int(row["n"])
        return found

    def progress(self) -> tuple[int, float | None]:
        """How many jobs have ended (done, failed or in review) and when the last one did: what "moving" means."""
        with self.store.db() as conn:
            row = conn.execute(f"SELECT COUNT(*) AS n, MAX(finished_at) AS at FROM {self.store.JOBS}"
                               " WHERE state IN ('done', 'failed', 'review')").fetchone()
        assert row is not None
        return int(row["n"]), None if row["at"] is None else float(row["at"])

    def last_finished(self, *, state: State = "done") -> float | None:
        with self.store.db() as conn:
            row = conn.execute(f"SELECT MAX(finished_at) AS at FROM {self.store.JOBS} WHERE state = :state",
                               {"state": state}).fetchone()
        return None if row is None or row["at"] is None else float(row["at"])

    def failed_since(self, after: float, *, examples: int = 1000) -> tuple[int, list[Job]]:
        """Jobs that failed after `after` (store time): how many, and the latest `examples` of them."""
        with self.store.db() as conn:
            row = conn.execute(
                f"SELECT COUNT(*) AS n FROM {self.store.JOBS} WHERE state = 'failed' AND finished_at > :after",
                {"after": after},
            ).fetchone()
        count = int(row["n"]) if row else 0
        if not count:
            return 0, []
        latest = self.store.jobs(state="failed", limit=min(count, examples), newest_first=True)
        return count, [job for job in latest if (job.finished_at or 0.0) > after]


def _path(text: str) -> PurePosixPath:
    return PurePosixPath(text)
