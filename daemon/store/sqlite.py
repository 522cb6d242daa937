"""The persistent job queue: one SQLite database in WAL mode, the source of truth.

A job is one input file, keyed by its path relative to the hot folder:

    pending ──claim──▶ running ──▶ done
       ▲                  │
       └── retry_at ◀─────┤  transient error, unexpected error, interrupted
                          └──▶ failed (quarantined, with reason)

- A job row exists before any work on its file happens, and is never deleted:
  `done` rows are how a restart knows not to redo a file.
- `stage` says which job is inside a stage (decode, inference, finish) right
  now; it is written without an fsync, since it only has to survive the
  process, not the machine. When the process dies, start-up reads it: a job
  that was claimed but not inside a stage is an innocent bystander and goes
  back untouched; jobs that were inside a stage become *suspects*. A suspect
  runs alone, before any other work, so a death while it runs can only be its
  own. How the process died decides what that death counts as: a crash of its
  own (segfault, abort: `daemon.store.crashreport` found a report) counts in
  `crashes`, and `max_attempts` of them quarantine the file as `crashed`; a
  kill from outside (`kill -9`, a stop timeout, the OOM killer, a power cut)
  counts in `kills`, whose much higher limit only stops a file that gets the
  process killed every time (out of memory) from blocking the folder forever.
- Every statement runs through `db()`: one lock, `BEGIN IMMEDIATE`, commit or
  roll back, and sqlite3's errors translated into the error tree (`QueueError`: the store
  is away; `QueueDamaged`), as the PostgreSQL store does.

The statements themselves, and the logic around them, are shared with the PostgreSQL
store (daemon/store/sql.py); this module holds what is SQLite's own: the schema, the
connection and its transaction, and the answers of one process to that module's seams.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from daemon.atomic import access_problem, make_private_dir
from daemon.errors import ConfigError, from_sqlite_error, is_queue_damage
from daemon.folders.layout import claim_key
from daemon.store.jobs import Job, WorkerInfo
from daemon.store.sql import START_ATTEMPT, Params, Row, Sql, SqlJobStore


JOBS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,          -- path relative to the hot folder, POSIX
    output TEXT NOT NULL,                 -- output path relative to the output folder
    output_key TEXT UNIQUE,               -- the claim on the output name; released on failure
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT,                    -- sha256 of the bytes that were processed
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'review')),
    attempts INTEGER NOT NULL DEFAULT 0,  -- starts, counted when a job starts
    finished_attempts INTEGER NOT NULL DEFAULT 0,  -- starts that ended in a retryable error
    retry_at REAL NOT NULL DEFAULT 0,
    reason TEXT,
    message TEXT,
    quarantine TEXT,                      -- where the original went, relative to quarantine
    first_seen REAL NOT NULL,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    stage TEXT,                           -- the stage it is in now (decode, inference, finish)
    suspect INTEGER NOT NULL DEFAULT 0,   -- was inside a stage when the process died
    crashes INTEGER NOT NULL DEFAULT 0,   -- the process crashed (a fatal signal) while it ran alone
    kills INTEGER NOT NULL DEFAULT 0,     -- the process was killed from outside while it ran alone
    token INTEGER NOT NULL DEFAULT 0,     -- the fencing token: grows at every claim
    doubt REAL,                           -- how likely the cut-out is wrong, 0..1 (done jobs)
    doubt_parts TEXT,                     -- the score's parts, JSON
    recipes TEXT,                         -- the recipes a person chose (JSON list); NULL: the routes'
    model TEXT                            -- the model a person chose; NULL: the daemon's
);
"""
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
{JOBS_TABLE.format(name="jobs")}
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, retry_at, id);
CREATE TABLE IF NOT EXISTS names (      -- output names a job's recipes derive from its own
    key TEXT PRIMARY KEY,                 -- claim_key of the name
    job_id INTEGER NOT NULL REFERENCES jobs (id)
);
CREATE INDEX IF NOT EXISTS names_job ON names (job_id);
CREATE TABLE IF NOT EXISTS held (       -- output names no input holds: kept by a rebuild
    key TEXT PRIMARY KEY,                 -- claim_key of the name
    output TEXT NOT NULL                  -- the file, relative to the output folder
);
"""

ADDED_COLUMNS = {
    "stage": "TEXT",
    "suspect": "INTEGER NOT NULL DEFAULT 0",
    "crashes": "INTEGER NOT NULL DEFAULT 0",
    "kills": "INTEGER NOT NULL DEFAULT 0",
    "token": "INTEGER NOT NULL DEFAULT 0",
    "doubt": "REAL",
    "doubt_parts": "TEXT",
    "recipes": "TEXT",
    "model": "TEXT",
}
"""Columns newer than the first release: added to an older database when it is opened."""
BUSY_SECONDS = 30.0
"""How long a statement waits for another process's lock (a `cutout retry`, a rebuild) before
the store counts as away (QueueError: waited out, never charged to a file)."""


def _connect(path: Path, *, busy_seconds: float) -> sqlite3.Connection:
    """The database, after refusing a state folder or file this user cannot write: SQLite would
    open it read-only and fail at the first write, with a traceback instead of the fix."""
    places = [(path.parent, True), *((path.with_name(path.name + end), False) for end in ("", "-wal", "-shm"))]
    for place, folder in places:
        problem = access_problem(place, folder=folder) if place.exists() else None
        if problem is not None:
            raise ConfigError(f"folders.state: the queue cannot be written: {problem}")
    try:
        return sqlite3.connect(path, timeout=busy_seconds, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise from_sqlite_error(exc, path=path) from exc


class JobQueue(SqlJobStore):
    """The SQLite `JobStore`: all access to the state database; safe to share between threads."""

    JOBS = "jobs"
    META = "meta"
    NAMES = "names"
    # One transaction at a time holds the whole database (BEGIN IMMEDIATE): no row to lock.
    FOR_UPDATE = ""
    FOR_UPDATE_SKIP_LOCKED = ""
    CLEAR_CLAIM = ""  # a claim here is its state and token only
    HELD_UNION = " UNION ALL SELECT :held FROM held WHERE key = :key"

    def __init__(
        self, path: Path, *, clock: Callable[[], float] = time.time, busy_seconds: float = BUSY_SECONDS
    ) -> None:
        make_private_dir(path.parent)
        self.path = path
        self.clock = clock
        self._lock = threading.RLock()
        self._conn = _connect(path, busy_seconds=busy_seconds)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed "done" must survive power loss, or a cutout could be redone
        # after an archive/delete of its original. One fsync per job is cheap next to a model run.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA fullfsync=ON")  # macOS: flush the drive cache too
        self._conn.execute(f"PRAGMA busy_timeout={round(busy_seconds * 1000)}")
        self._conn.executescript(SCHEMA)
        self._add_missing_columns()
        self._allow_review_state()

    def _add_missing_columns(self) -> None:
        have = {row["name"] for row in self._conn.execute("PRAGMA table_info(jobs)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in have:
                self._conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def _allow_review_state(self) -> None:
        """A queue made before the review step refuses the state `review` (its CHECK lists the
        states, and SQLite cannot alter a CHECK): the table is made again with the new one and
        every row copied over, in one transaction (SQLite's documented way to change a table)."""
        made = self._conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
        if "'review'" in made["sql"]:
            return
        columns = ", ".join(row["name"] for row in self._conn.execute("PRAGMA table_info(jobs)"))
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute(JOBS_TABLE.format(name="jobs_new"))
            self._conn.execute(f"INSERT INTO jobs_new ({columns}) SELECT {columns} FROM jobs")
            self._conn.execute("DROP TABLE jobs")  # its index goes with it; the names keep their ids
            self._conn.execute("ALTER TABLE jobs_new RENAME TO jobs")
            self._conn.execute("CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, retry_at, id)")
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def db(self, *, durable: bool = True, single: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction: lock, BEGIN IMMEDIATE, commit on success, roll back on error.

        `durable=False` skips the fsync: for facts that must survive the process dying
        but not the machine (which stage a job is in). `single` changes nothing here: a
        transaction costs no round trip in the process's own library.
        """
        with self._lock, self._translated():
            if not durable:
                self._conn.execute("PRAGMA synchronous=OFF")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:  # also when COMMIT itself failed
                        self._conn.execute("ROLLBACK")
                    raise
            finally:
                if not durable:
                    self._conn.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """sqlite3's errors about the database, at the edge: damage is QueueDamaged; a full
        disk, a lock held past the busy timeout, an I/O error is QueueError (the store is away:
        waited out, never charged to a file). A constraint or misuse error is a bug: as it is."""
        try:
            yield
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) or is_queue_damage(exc):
                raise from_sqlite_error(exc, path=self.path) from exc
            raise

    def fleet_id(self) -> str | None:
        """No fleet: one daemon owns a SQLite queue (its state folder's lock says so)."""
        return None

    def record_held(self, outputs: list[PurePosixPath]) -> None:
        """Cut-outs in the output folder whose input is gone (deleted or archived after
        success) when a queue is rebuilt: their names stay taken, so a new input named like
        an old one gets the next free name, as it would have without the rebuild."""
        with self.db() as conn:
            conn.executemany("INSERT INTO held (key, output) VALUES (:key, :output) ON CONFLICT (key) DO NOTHING",
                             [{"key": claim_key(output), "output": output.as_posix()} for output in outputs])

    # --- the seams of SqlJobStore: one process ----------------------------------
    def _now(self, conn: Sql) -> float:
        return self.clock()

    def _lock_names(self, conn: Sql) -> None:
        """Nothing to take: BEGIN IMMEDIATE already makes each transaction the only writer."""

    def _return_lost_claims(self, conn: Sql, *, now: float) -> None:
        """None to return: a claim holds until its job ends or the process dies, and a dead
        process's claims are judged by `recover` when the next one starts."""

    def _take(self, conn: Sql, job_id: int, *, now: float, stage: str | None) -> Row:
        # The token need only grow per row: one process, so no other claim to fence out but
        # this row's own earlier ones. Two statements, not UPDATE ... RETURNING: that needs
        # SQLite 3.35, newer than the library some systems' Pythons link.
        conn.execute(f"UPDATE jobs SET {START_ATTEMPT}, token = token + 1 WHERE id = :id",
                     {"now": now, "id": job_id, "stage": stage})
        row = conn.execute("SELECT * FROM jobs WHERE id = :id", {"id": job_id}).fetchone()
        assert row is not None
        return row

    def _own_running(self) -> tuple[str, Params]:
        """Every running job: this process is the queue's only one."""
        return "state = 'running'", {}

    # --- ownership --------------------------------------------------------------
    def bind_input(self, root: Path) -> None:
        """Remember which hot folder these jobs belong to; refuse another one."""
        with self.db() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'input'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('input', :root)", {"root": str(root)})
            elif row["value"] != str(root):
                raise ConfigError(
                    f"state folder {self.path.parent} belongs to hot folder {row['value']}, not {root}: "
                    "set folders.state to another folder for this hot folder"
                )

    # --- running work -----------------------------------------------------------
    def heartbeat(self, job: Job) -> bool:
        """One process owns this file's jobs, so a claim has no lease to extend: it holds until
        the job ends or the process dies (then `recover` decides). True while it is current."""
        with self.db(durable=False) as conn:
            return self._holds(conn, job)

    # --- the fleet: one machine ---------------------------------------------------
    def lead(self) -> bool:
        return True  # the state folder's lock already makes this daemon the only one

    def check_model(self, model: str) -> None:
        """One machine may change its model at will: nothing to agree with."""

    def report_worker(self, info: WorkerInfo) -> None:
        """`cutout status` finds this daemon through the state folder's lock and session record."""

    def leave(self, worker: str) -> None:
        """Nothing was reported, so nothing to withdraw."""

    def fleet(self) -> list[WorkerInfo]:
        return []
