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
  own (segfault, abort: `daemon.crashreport` found a report) counts in
  `crashes`, and `max_attempts` of them quarantine the file as `crashed`; a
  kill from outside (`kill -9`, a stop timeout, the OOM killer, a power cut)
  counts in `kills`, whose much higher limit only stops a file that gets the
  process killed every time (out of memory) from blocking the folder forever.
- Every statement runs through `db()`: one lock, `BEGIN IMMEDIATE`, commit or
  roll back.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from daemon.atomic import access_problem, make_private_dir
from daemon.errors import ConfigError, from_sqlite_error
from daemon.layout import claim_key, output_name
from daemon.store import STATES, DoneRecord, FailedRecord, Fingerprint, Job, Offer, Recovery, State, WorkerInfo


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,          -- path relative to the hot folder, POSIX
    output TEXT NOT NULL,                 -- output path relative to the output folder
    output_key TEXT UNIQUE,               -- the claim on the output name; released on failure
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT,                    -- sha256 of the bytes that were processed
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
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
    token INTEGER NOT NULL DEFAULT 0      -- the fencing token: grows at every claim
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, retry_at, id);
"""

ADDED_COLUMNS = {
    "stage": "TEXT",
    "suspect": "INTEGER NOT NULL DEFAULT 0",
    "crashes": "INTEGER NOT NULL DEFAULT 0",
    "kills": "INTEGER NOT NULL DEFAULT 0",
    "token": "INTEGER NOT NULL DEFAULT 0",
}
"""Columns newer than the first release: added to an older database when it is opened."""


def _holds(conn: sqlite3.Connection, job: Job, *, state: State = "running") -> bool:
    """Whether `job`'s claim is still the current one: in `state`, under the same token."""
    row = conn.execute("SELECT 1 FROM jobs WHERE id = ? AND state = ? AND token = ?", (job.id, state, job.token))
    return row.fetchone() is not None


def _posix(path: PurePosixPath | None) -> str | None:
    return None if path is None else path.as_posix()


def _same(job: Job, fingerprint: Fingerprint) -> bool:
    return (job.size, job.mtime_ns) == (fingerprint.size, fingerprint.mtime_ns)


def _claim_output(
    conn: sqlite3.Connection, source: PurePosixPath, *, preferred: PurePosixPath | None = None
) -> PurePosixPath:
    """The output name for `source`: `preferred` if nobody holds it, else the layout rule's first free one."""

    def taken(key: str) -> bool:
        return conn.execute("SELECT 1 FROM jobs WHERE output_key = ?", (key,)).fetchone() is not None

    if preferred is not None and not taken(claim_key(preferred)):
        return preferred
    return output_name(source, is_taken=taken)


def _job(row: sqlite3.Row) -> Job:
    quarantine = row["quarantine"]
    return Job(
        id=row["id"],
        source=PurePosixPath(row["source"]),
        output=PurePosixPath(row["output"]),
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        content_hash=row["content_hash"],
        state=row["state"],
        attempts=row["attempts"],
        finished_attempts=row["finished_attempts"],
        reason=row["reason"],
        message=row["message"],
        quarantine=PurePosixPath(quarantine) if quarantine else None,
        first_seen=row["first_seen"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        stage=row["stage"],
        suspect=bool(row["suspect"]),
        crashes=row["crashes"],
        kills=row["kills"],
        token=row["token"],
    )


def _connect(path: Path) -> sqlite3.Connection:
    """The database, after refusing a state folder or file this user cannot write: SQLite would
    open it read-only and fail at the first write, with a traceback instead of the fix."""
    places = [(path.parent, True), *((path.with_name(path.name + end), False) for end in ("", "-wal", "-shm"))]
    for place, folder in places:
        problem = access_problem(place, folder=folder) if place.exists() else None
        if problem is not None:
            raise ConfigError(f"folders.state: the queue cannot be written: {problem}")
    try:
        return sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise from_sqlite_error(exc, path=path) from exc


class JobQueue:
    """The SQLite `JobStore`: all access to the state database; safe to share between threads."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        make_private_dir(path.parent)
        self.path = path
        self.clock = clock
        self._lock = threading.RLock()
        self._conn = _connect(path)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed "done" must survive power loss, or a cutout could be redone
        # after an archive/delete of its original. One fsync per job is cheap next to a model run.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA fullfsync=ON")  # macOS: flush the drive cache too
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.executescript(SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        have = {row["name"] for row in self._conn.execute("PRAGMA table_info(jobs)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in have:
                self._conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def db(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: lock, BEGIN IMMEDIATE, commit on success, roll back on error.

        `durable=False` skips the fsync: for facts that must survive the process dying
        but not the machine (which stage a job is in), written several times per job.
        """
        with self._lock:
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

    # --- ownership --------------------------------------------------------------
    def bind_input(self, root: Path) -> None:
        """Remember which hot folder these jobs belong to; refuse another one."""
        with self.db() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'input'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('input', ?)", (str(root),))
            elif row["value"] != str(root):
                raise ConfigError(
                    f"state folder {self.path.parent} belongs to hot folder {row['value']}, not {root}: "
                    "set folders.state to another folder for this hot folder"
                )

    def remember_folders(self, folders: dict[str, Path]) -> None:
        """The folders the daemon runs with, so `cutout status --state S` can name full paths."""
        with self.db() as conn:
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [(f"folder.{name}", str(path)) for name, path in folders.items()],
            )

    def folder(self, name: str) -> Path | None:
        with self.db() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (f"folder.{name}",)).fetchone()
        return Path(row["value"]) if row else None

    # --- adding work ------------------------------------------------------------
    def get(self, source: PurePosixPath) -> Job | None:
        with self.db() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE source = ?", (source.as_posix(),)).fetchone()
        return _job(row) if row else None

    def offer(
        self, source: PurePosixPath, fingerprint: Fingerprint, *, content_hash: Callable[[], str] | None = None
    ) -> Offer:
        """Record a settled file: a new job, a job to redo (new content), or nothing to do.

        The content hash (a full read) is computed outside the transaction, only for a
        done file whose size or mtime changed, so the worker is never held up by it.
        """
        known = self.get(source)
        digest = None
        if known is not None and known.state == "done" and not _same(known, fingerprint) and content_hash:
            digest = content_hash()
        with self.db() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE source = ?", (source.as_posix(),)).fetchone()
            if row is None:
                self._insert(conn, source, fingerprint)
                return "queued"
            return self._reoffer(conn, _job(row), fingerprint, digest)

    def _insert(self, conn: sqlite3.Connection, source: PurePosixPath, fingerprint: Fingerprint) -> None:
        output = _claim_output(conn, source)
        now = self.clock()
        conn.execute(
            "INSERT INTO jobs (source, output, output_key, size, mtime_ns, state, first_seen, queued_at)"
            " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
            (source.as_posix(), output.as_posix(), claim_key(output), fingerprint.size, fingerprint.mtime_ns, now, now),
        )

    def _reoffer(self, conn: sqlite3.Connection, job: Job, fingerprint: Fingerprint, digest: str | None) -> Offer:
        if job.state in ("pending", "running"):
            return "busy"
        if job.state == "done" and (_same(job, fingerprint) or (digest is not None and digest == job.content_hash)):
            conn.execute(
                "UPDATE jobs SET size = ?, mtime_ns = ? WHERE id = ?", (fingerprint.size, fingerprint.mtime_ns, job.id)
            )
            return "unchanged"
        if job.state == "failed":  # a new file at a failed one's path: not the quarantined one
            self._reclaim(conn, job)
            conn.execute("UPDATE jobs SET quarantine = NULL WHERE id = ?", (job.id,))
        conn.execute(
            "UPDATE jobs SET state = 'pending', size = ?, mtime_ns = ?, attempts = 0, finished_attempts = 0,"
            " retry_at = 0, reason = NULL, message = NULL, queued_at = ? WHERE id = ?",
            (fingerprint.size, fingerprint.mtime_ns, self.clock(), job.id),
        )
        return "requeued"

    def _reclaim(self, conn: sqlite3.Connection, job: Job) -> None:
        """A failed job gave up its output name; claim one again (the same one if still free)."""
        output = _claim_output(conn, job.source, preferred=job.output)
        conn.execute(
            "UPDATE jobs SET output = ?, output_key = ? WHERE id = ?", (output.as_posix(), claim_key(output), job.id)
        )

    def record_rejected(
        self, source: PurePosixPath, fingerprint: Fingerprint, *, reason: str, message: str,
        quarantine: PurePosixPath | None,
    ) -> None:
        """A file refused before it became a job (its name): a failed row, so status and retry see it."""
        now = self.clock()
        with self.db() as conn:
            conn.execute(
                "INSERT INTO jobs (source, output, size, mtime_ns, state, reason, message, quarantine,"
                " first_seen, queued_at, finished_at) VALUES (?, ?, ?, ?, 'failed', ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (source) DO UPDATE SET state = 'failed', reason = excluded.reason,"
                " message = excluded.message, quarantine = excluded.quarantine, finished_at = excluded.finished_at,"
                " output_key = NULL WHERE state NOT IN ('pending', 'running')",
                (source.as_posix(), source.with_suffix(".png").as_posix(), fingerprint.size, fingerprint.mtime_ns,
                 reason, message, _posix(quarantine), now, now, now),
            )

    def requeue(self, job: Job) -> bool:
        """Send a failed job back through the queue from scratch (`cutout retry`)."""
        with self.db() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ? AND state = 'failed'", (job.id,)).fetchone() is None:
                return False  # the daemon already picked the restored file up
            self._reclaim(conn, job)
            conn.execute(
                "UPDATE jobs SET state = 'pending', attempts = 0, finished_attempts = 0, retry_at = 0,"
                " queued_at = ? WHERE id = ?",
                (self.clock(), job.id),
            )
        return True

    # --- running work -----------------------------------------------------------
    def recover(self, *, crashed: bool) -> Recovery:
        """At start-up: jobs left `running` by a dead process go back to `pending`.

        Bystanders (claimed, but in no stage) get their start back. Jobs that were in a
        stage become suspects; when exactly one was, the death was its alone, and counts
        as a crash (`crashed`: the process left a crash report) or else as a kill.
        """
        counter = "crashes" if crashed else "kills"
        with self.db() as conn:
            rows = conn.execute("SELECT id FROM jobs WHERE state = 'running' AND stage IS NOT NULL").fetchall()
            in_stage = [row["id"] for row in rows]
            alone = in_stage if len(in_stage) == 1 else []
            conn.executemany(f"UPDATE jobs SET {counter} = {counter} + 1 WHERE id = ?", [(i,) for i in alone])
            # Several in a stage: none is to blame yet, so none keeps an unfinished start.
            conn.execute(
                "UPDATE jobs SET suspect = 1, finished_attempts = finished_attempts + ?"
                " WHERE state = 'running' AND stage IS NOT NULL", (0 if alone else 1,)
            )
            released = conn.execute(
                "UPDATE jobs SET attempts = MAX(0, attempts - 1) WHERE state = 'running' AND stage IS NULL"
            ).rowcount
            conn.execute("UPDATE jobs SET state = 'pending', stage = NULL WHERE state = 'running'")
        return Recovery(released=released, suspects=len(in_stage), blamed=len(alone) if crashed else 0,
                        killed=0 if crashed else len(alone))

    def claim(self, *, suspect_ok: bool = True) -> Job | None:
        """The next ready pending job, now `running`, its attempt counted.

        Suspects come first, the one that died least with the process first. While one is waiting,
        nothing else is claimed; with `suspect_ok=False` (other work still in flight)
        nothing is, so that the suspect runs alone.
        """
        now = self.clock()
        with self.db() as conn:
            row = conn.execute(
                "SELECT id, suspect FROM jobs WHERE state = 'pending' AND retry_at <= ?"
                " ORDER BY suspect DESC, crashes + kills, retry_at, id LIMIT 1", (now,)
            ).fetchone()
            if row is None or (row["suspect"] and not suspect_ok):
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?, token = token + 1"
                " WHERE id = ?",
                (now, row["id"]),
            )
            return _job(conn.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def mark_stage(self, job: Job, stage: str | None) -> None:
        """Which stage the job is in now (None: between stages, e.g. decoded and waiting)."""
        with self.db(durable=False) as conn:
            conn.execute("UPDATE jobs SET stage = ? WHERE id = ? AND state = 'running' AND token = ?",
                         (stage, job.id, job.token))

    def next_retry_in(self) -> float | None:
        """Seconds until the earliest pending job becomes ready (0 if one is ready now)."""
        with self.db() as conn:
            row = conn.execute("SELECT MIN(retry_at) AS at FROM jobs WHERE state = 'pending'").fetchone()
        return None if row["at"] is None else max(0.0, row["at"] - self.clock())

    def heartbeat(self, job: Job) -> bool:
        """One process owns this file's jobs, so a claim has no lease to extend: it holds until
        the job ends or the process dies (then `recover` decides). True while it is current."""
        with self.db(durable=False) as conn:
            return _holds(conn, job)

    def finish(
        self, job: Job, *, content_hash: str, fingerprint: Fingerprint, publish: Callable[[], object]
    ) -> bool:
        """Publish the output and record it done, in one transaction that checks the claim first."""
        with self.db() as conn:
            if not _holds(conn, job):
                return False
            publish()
            conn.execute(
                "UPDATE jobs SET state = 'done', content_hash = ?, size = ?, mtime_ns = ?, reason = NULL,"
                " message = NULL, quarantine = NULL, finished_at = ?, stage = NULL, suspect = 0"
                " WHERE id = ?",
                (content_hash, fingerprint.size, fingerprint.mtime_ns, self.clock(), job.id),
            )
        return True

    def mark_failed(self, job: Job, *, reason: str, message: str, quarantine: PurePosixPath | None) -> bool:
        """Failed for good; the output name is released (a RAW file must not keep `x.png` from `x.jpg`)."""
        with self.db() as conn:
            return conn.execute(
                "UPDATE jobs SET state = 'failed', reason = ?, message = ?, quarantine = ?, finished_at = ?,"
                " output_key = NULL, stage = NULL, suspect = 0 WHERE id = ? AND state = 'running' AND token = ?",
                (reason, message, quarantine.as_posix() if quarantine else None, self.clock(), job.id, job.token),
            ).rowcount == 1

    def mark_retry(
        self, job: Job, *, reason: str, message: str, delay: float, counts: bool, was: State = "running"
    ) -> bool:
        """Back to pending after `delay`; `counts=False` for errors that are not the file's fault.

        `was="failed"` undoes a quarantine whose move failed (the file is still in the hot folder).
        """
        with self.db() as conn:
            if not _holds(conn, job, state=was):
                return False
            if was == "failed":
                self._reclaim(conn, job)
            conn.execute(
                "UPDATE jobs SET state = 'pending', reason = ?, message = ?, retry_at = ?, quarantine = ?,"
                " finished_attempts = finished_attempts + ?, stage = NULL, suspect = 0 WHERE id = ?",
                (reason, message, self.clock() + delay, _posix(job.quarantine), 0 if counts else 1, job.id),
            )
        return True

    def release(self, job: Job) -> None:
        """Put a claimed job back untouched (shutdown before it ran): the start does not count."""
        with self.db() as conn:
            conn.execute(
                "UPDATE jobs SET state = 'pending', attempts = MAX(0, attempts - 1), stage = NULL"
                " WHERE id = ? AND state = 'running' AND token = ?",
                (job.id, job.token),
            )

    # --- the fleet: one machine ---------------------------------------------------
    def lead(self) -> bool:
        return True  # the state folder's lock already makes this daemon the only one

    def check_model(self, model: str) -> None:
        """One machine may change its model at will: nothing to agree with."""

    def report_worker(self, info: WorkerInfo) -> None:
        """`cutout status` finds this daemon through the state folder's lock and live.json."""

    def leave(self, worker: str) -> None:
        """Nothing was reported, so nothing to withdraw."""

    def fleet(self) -> list[WorkerInfo]:
        return []

    # --- reporting --------------------------------------------------------------
    def counts(self) -> dict[State, int]:
        with self.db() as conn:
            rows = conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        found = {row["state"]: row["n"] for row in rows}
        return {state: found.get(state, 0) for state in STATES}

    def jobs(self, *, state: State, limit: int = 20, newest_first: bool = False) -> list[Job]:
        order = "DESC" if newest_first else "ASC"
        with self.db() as conn:
            rows = conn.execute(
                f"SELECT * FROM jobs WHERE state = ? ORDER BY COALESCE(finished_at, queued_at) {order}, id {order}"
                " LIMIT ?",
                (state, limit),
            ).fetchall()
        return [_job(row) for row in rows]

    def has_work(self) -> bool:
        """Whether any job waits or runs (the hot folder must then hold its files)."""
        with self.db() as conn:
            return conn.execute("SELECT 1 FROM jobs WHERE state IN ('pending', 'running') LIMIT 1").fetchone() is not None

    def oldest_pending_since(self) -> float | None:
        with self.db() as conn:
            row = conn.execute("SELECT MIN(queued_at) AS at FROM jobs WHERE state = 'pending'").fetchone()
        return None if row["at"] is None else float(row["at"])

    def known(self) -> dict[str, tuple[State, int, int]]:
        """Every job's state and fingerprint by source, for the reconciliation scan."""
        with self.db() as conn:
            rows = conn.execute("SELECT source, state, size, mtime_ns FROM jobs").fetchall()
        return {row["source"]: (row["state"], row["size"], row["mtime_ns"]) for row in rows}

    # --- rebuilding a lost queue (daemon/rebuild.py) ----------------------------------
    def record_done(self, records: list[DoneRecord]) -> None:
        """Work finished before this queue existed: done rows, each claiming its output name as found."""
        rows = [
            {"source": r.source.as_posix(), "output": r.output.as_posix(), "key": claim_key(r.output),
             "size": r.fingerprint.size, "mtime_ns": r.fingerprint.mtime_ns, "hash": r.content_hash,
             "at": r.finished_at}
            for r in records
        ]
        with self.db() as conn:  # one transaction: thousands of rows, one fsync
            conn.executemany(
                "INSERT INTO jobs (source, output, output_key, size, mtime_ns, content_hash, state, attempts,"
                " first_seen, queued_at, started_at, finished_at) VALUES (:source, :output, :key, :size,"
                " :mtime_ns, :hash, 'done', 1, :at, :at, :at, :at)",
                rows,
            )

    def record_failed(self, records: list[FailedRecord]) -> None:
        """Quarantined files found on disk: failed rows without an output claim, so `cutout retry` works."""
        rows = [
            {"source": r.source.as_posix(), "output": r.source.with_suffix(".png").as_posix(),
             "size": r.fingerprint.size, "mtime_ns": r.fingerprint.mtime_ns, "attempts": r.attempts,
             "reason": r.reason, "message": r.message, "quarantine": r.quarantine.as_posix(),
             "first_seen": r.first_seen, "at": r.finished_at}
            for r in records
        ]
        with self.db() as conn:
            conn.executemany(
                "INSERT INTO jobs (source, output, size, mtime_ns, state, attempts, finished_attempts, reason,"
                " message, quarantine, first_seen, queued_at, finished_at) VALUES (:source, :output, :size,"
                " :mtime_ns, 'failed', :attempts, :attempts, :reason, :message, :quarantine, :first_seen,"
                " :first_seen, :at)",
                rows,
            )
