"""The PostgreSQL `JobStore`: every machine of a fleet on one queue.

The same rules as the SQLite store (daemon/store.py), made safe for many workers:

- **Claims** take the next ready row with `FOR UPDATE SKIP LOCKED`, so workers never wait
  on each other's rows, and stamp it with the worker's id, a *lease* and a fencing token
  from one sequence (tokens grow across the whole store).
- **Leases** end on the database's clock, never a worker's. A worker extends its leases
  (`heartbeat`) while it works; a job whose lease ran out (a worker frozen, cut off or
  killed, or the database away for longer than a lease) goes back to pending at the next
  claim anywhere. If it was inside a stage, that counts as an unexplained death on it
  (`kills`, with its high limit): a lease can run out without the file's fault. A worker
  that crashed on it counts a crash when its service restarts it (`recover`, with the
  crash report), so a file that kills every worker is quarantined as `crashed` after
  `max_attempts` instead of going round the fleet.
- **Fencing**: every change to a claimed job names its token. A worker whose lease ran
  out and whose job was claimed again changes nothing; its `finish()` publishes nothing.
- **Output names** are decided under one transaction-scoped advisory lock, so two
  machines never claim the same one.
- **Schema** changes are numbered migrations (`MIGRATIONS`), applied by `cutout queue init`
  or the first daemon; a store newer than this program is refused with both versions.

Paths are relative to the hot folder, so machines that mount the share at different
places work on the same rows.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from daemon.errors import ConfigError, QueueError
from daemon.layout import claim_key, output_name
from daemon.store import STATES, DoneRecord, FailedRecord, Fingerprint, Job, Offer, Recovery, State, WorkerInfo

Row = dict[str, Any]

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE cutout_meta (key text PRIMARY KEY, value text NOT NULL);
    CREATE SEQUENCE cutout_tokens;
    CREATE TABLE cutout_jobs (
        id bigserial PRIMARY KEY,
        source text NOT NULL UNIQUE,
        output text NOT NULL,
        output_key text UNIQUE,
        size bigint NOT NULL,
        mtime_ns bigint NOT NULL,
        content_hash text,
        state text NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
        attempts integer NOT NULL DEFAULT 0,
        finished_attempts integer NOT NULL DEFAULT 0,
        retry_at double precision NOT NULL DEFAULT 0,
        reason text,
        message text,
        quarantine text,
        first_seen double precision NOT NULL,
        queued_at double precision NOT NULL,
        started_at double precision,
        finished_at double precision,
        stage text,
        suspect boolean NOT NULL DEFAULT false,
        crashes integer NOT NULL DEFAULT 0,
        kills integer NOT NULL DEFAULT 0,
        token bigint NOT NULL DEFAULT 0,
        owner text,
        lease_until double precision
    );
    CREATE INDEX cutout_jobs_ready ON cutout_jobs (state, retry_at, id);
    """,
    """
    CREATE TABLE cutout_workers (
        worker text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        device text NOT NULL,
        model text NOT NULL,
        started_at double precision NOT NULL,
        seen_at double precision NOT NULL,
        done integer NOT NULL DEFAULT 0,
        current text,
        leader boolean NOT NULL DEFAULT false
    );
    """,
)
"""Migration N+1 takes the schema from version N to N+1; never edit a released one."""
SCHEMA_LOCK = 0x637574_6F7574  # "cutout": serialises migrations and output-name decisions
LEADER_LOCK = SCHEMA_LOCK + 1  # held by the fleet's watcher for as long as its connection lives
DEFAULT_LEASE_SECONDS = 60.0


class PostgresStore:
    """The jobs of one hot folder in a PostgreSQL database; safe to share between threads."""

    def __init__(
        self, url: str, *, worker: str | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] | None = None, pool_size: int = 4, connect_timeout: float = 10.0,
    ) -> None:
        self.url, self.lease_seconds, self.clock = url, lease_seconds, clock
        self._leader: psycopg.Connection[tuple[Any, ...]] | None = None
        self._leading_lock = threading.Lock()
        self.worker = worker or f"{socket.gethostname()}:{id(self)}"
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, connection_class=psycopg.Connection[Row],
            kwargs={"row_factory": dict_row, "autocommit": True},
        )
        try:
            with psycopg.connect(url, row_factory=dict_row, connect_timeout=max(1, round(connect_timeout))) as probe:
                check_schema(probe)  # fails at once when unreachable; the pool would keep retrying
            self._pool.open(wait=True, timeout=connect_timeout)
        except BaseException as exc:
            self._pool.close()  # its threads would go on trying to connect
            if isinstance(exc, psycopg.Error):
                raise _unreachable(url, exc) from exc
            raise

    def close(self) -> None:
        self._resign()
        self._pool.close()

    @contextmanager
    def db(self) -> Iterator[psycopg.Connection[Row]]:
        """One transaction on a pooled connection: commit on success, roll back on error."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.OperationalError as exc:
            raise _unreachable(self.url, exc) from exc

    def _now(self, conn: psycopg.Connection[Row]) -> float:
        """The time every row is stamped with: the database's clock (a test may pass its own)."""
        if self.clock is not None:
            return self.clock()
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8 AS now").fetchone()
        assert row is not None
        return float(row["now"])

    # --- which hot folder ------------------------------------------------------------------
    def bind_input(self, root: Path) -> None:
        """Each machine mounts the share where it likes: paths in the store are relative, so
        there is no absolute hot folder to bind to (each machine's config says where it is)."""

    def remember_folders(self, folders: dict[str, Path]) -> None:
        with self.db() as conn:
            for name, path in folders.items():
                conn.execute("INSERT INTO cutout_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value ="
                             " excluded.value", (f"folder.{name}", str(path)))

    def folder(self, name: str) -> Path | None:
        with self.db() as conn:
            row = conn.execute("SELECT value FROM cutout_meta WHERE key = %s", (f"folder.{name}",)).fetchone()
        return Path(row["value"]) if row else None

    # --- adding work ------------------------------------------------------------------------
    def get(self, source: PurePosixPath) -> Job | None:
        with self.db() as conn:
            row = conn.execute("SELECT * FROM cutout_jobs WHERE source = %s", (source.as_posix(),)).fetchone()
        return _job(row) if row else None

    def offer(
        self, source: PurePosixPath, fingerprint: Fingerprint, *, content_hash: Callable[[], str] | None = None
    ) -> Offer:
        known = self.get(source)
        digest = None
        if known is not None and known.state == "done" and not _same(known, fingerprint) and content_hash:
            digest = content_hash()
        with self.db() as conn:
            _lock_names(conn)
            row = conn.execute("SELECT * FROM cutout_jobs WHERE source = %s FOR UPDATE",
                               (source.as_posix(),)).fetchone()
            if row is None:
                self._insert(conn, source, fingerprint)
                return "queued"
            return self._reoffer(conn, _job(row), fingerprint, digest)

    def _insert(self, conn: psycopg.Connection[Row], source: PurePosixPath, fingerprint: Fingerprint) -> None:
        output, now = _claim_output(conn, source), self._now(conn)
        conn.execute(
            "INSERT INTO cutout_jobs (source, output, output_key, size, mtime_ns, state, first_seen, queued_at)"
            " VALUES (%s, %s, %s, %s, %s, 'pending', %s, %s)",
            (source.as_posix(), output.as_posix(), claim_key(output), fingerprint.size, fingerprint.mtime_ns, now, now),
        )

    def _reoffer(self, conn: psycopg.Connection[Row], job: Job, fingerprint: Fingerprint, digest: str | None) -> Offer:
        if job.state in ("pending", "running"):
            return "busy"
        if job.state == "done" and (_same(job, fingerprint) or (digest is not None and digest == job.content_hash)):
            conn.execute("UPDATE cutout_jobs SET size = %s, mtime_ns = %s WHERE id = %s",
                         (fingerprint.size, fingerprint.mtime_ns, job.id))
            return "unchanged"
        if job.state == "failed":  # a new file at a failed one's path: not the quarantined one
            _reclaim(conn, job)
            conn.execute("UPDATE cutout_jobs SET quarantine = NULL WHERE id = %s", (job.id,))
        conn.execute(
            "UPDATE cutout_jobs SET state = 'pending', size = %s, mtime_ns = %s, attempts = 0, finished_attempts = 0,"
            " retry_at = 0, reason = NULL, message = NULL, queued_at = %s WHERE id = %s",
            (fingerprint.size, fingerprint.mtime_ns, self._now(conn), job.id),
        )
        return "requeued"

    def record_rejected(
        self, source: PurePosixPath, fingerprint: Fingerprint, *, reason: str, message: str,
        quarantine: PurePosixPath | None,
    ) -> None:
        with self.db() as conn:
            now = self._now(conn)
            conn.execute(
                "INSERT INTO cutout_jobs (source, output, size, mtime_ns, state, reason, message, quarantine,"
                " first_seen, queued_at, finished_at) VALUES (%s, %s, %s, %s, 'failed', %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (source) DO UPDATE SET state = 'failed', reason = excluded.reason,"
                " message = excluded.message, quarantine = excluded.quarantine, finished_at = excluded.finished_at,"
                " output_key = NULL WHERE cutout_jobs.state NOT IN ('pending', 'running')",
                (source.as_posix(), source.with_suffix(".png").as_posix(), fingerprint.size, fingerprint.mtime_ns,
                 reason, message, _posix(quarantine), now, now, now),
            )

    def requeue(self, job: Job) -> bool:
        with self.db() as conn:
            _lock_names(conn)
            if conn.execute("SELECT 1 FROM cutout_jobs WHERE id = %s AND state = 'failed' FOR UPDATE",
                            (job.id,)).fetchone() is None:
                return False
            _reclaim(conn, job)
            conn.execute(
                "UPDATE cutout_jobs SET state = 'pending', attempts = 0, finished_attempts = 0, retry_at = 0,"
                " queued_at = %s WHERE id = %s", (self._now(conn), job.id),
            )
        return True

    def known(self) -> dict[str, tuple[State, int, int]]:
        with self.db() as conn:
            rows = conn.execute("SELECT source, state, size, mtime_ns FROM cutout_jobs").fetchall()
        return {row["source"]: (row["state"], row["size"], row["mtime_ns"]) for row in rows}

    # --- running work ------------------------------------------------------------------------
    def recover(self, *, crashed: bool) -> Recovery:
        """At start-up: this worker's own jobs from before a restart (same worker id) go back now,
        judged as the SQLite store judges them; other workers' jobs wait for their leases."""
        counter = "crashes" if crashed else "kills"
        with self.db() as conn:
            mine = "state = 'running' AND owner = %s"
            in_stage = [row["id"] for row in conn.execute(
                f"SELECT id FROM cutout_jobs WHERE {mine} AND stage IS NOT NULL FOR UPDATE", (self.worker,))]
            alone = in_stage if len(in_stage) == 1 else []
            for job_id in alone:
                conn.execute(f"UPDATE cutout_jobs SET {counter} = {counter} + 1 WHERE id = %s", (job_id,))
            conn.execute(f"UPDATE cutout_jobs SET suspect = true, finished_attempts = finished_attempts + %s"
                         f" WHERE {mine} AND stage IS NOT NULL", (0 if alone else 1, self.worker))
            released = conn.execute(f"UPDATE cutout_jobs SET attempts = GREATEST(0, attempts - 1) WHERE {mine}"
                                    " AND stage IS NULL", (self.worker,)).rowcount
            conn.execute(f"UPDATE cutout_jobs SET state = 'pending', stage = NULL, owner = NULL, lease_until = NULL"
                         f" WHERE {mine}", (self.worker,))
        return Recovery(released=released, suspects=len(in_stage), blamed=len(alone) if crashed else 0,
                        killed=0 if crashed else len(alone))

    def claim(self, *, suspect_ok: bool = True) -> Job | None:
        """The next ready job, claimed for this worker under a lease and a new token.

        Expired leases go back to pending first: inside a stage, a death on the job."""
        with self.db() as conn:
            now = self._now(conn)
            self._expire_leases(conn, now=now)
            row = conn.execute(
                "SELECT id, suspect FROM cutout_jobs WHERE state = 'pending' AND retry_at <= %s"
                " ORDER BY suspect DESC, crashes + kills, retry_at, id LIMIT 1 FOR UPDATE SKIP LOCKED", (now,)
            ).fetchone()
            if row is None or (row["suspect"] and not suspect_ok):
                return None
            claimed = conn.execute(
                "UPDATE cutout_jobs SET state = 'running', attempts = attempts + 1, started_at = %s,"
                " token = nextval('cutout_tokens'), owner = %s, lease_until = %s WHERE id = %s RETURNING *",
                (now, self.worker, now + self.lease_seconds, row["id"]),
            ).fetchone()
        assert claimed is not None
        return _job(claimed)

    def _expire_leases(self, conn: psycopg.Connection[Row], *, now: float) -> None:
        conn.execute(
            "UPDATE cutout_jobs SET state = 'pending', owner = NULL, lease_until = NULL, stage = NULL,"
            " kills = kills + (stage IS NOT NULL)::int, suspect = suspect OR stage IS NOT NULL,"
            " attempts = CASE WHEN stage IS NULL THEN GREATEST(0, attempts - 1) ELSE attempts END"
            " WHERE state = 'running' AND lease_until < %s", (now,),
        )

    def heartbeat(self, job: Job) -> bool:
        with self.db() as conn:
            now = self._now(conn)
            return conn.execute(
                "UPDATE cutout_jobs SET lease_until = %s WHERE id = %s AND state = 'running' AND token = %s",
                (now + self.lease_seconds, job.id, job.token),
            ).rowcount == 1

    def mark_stage(self, job: Job, stage: str | None) -> None:
        with self.db() as conn:
            conn.execute("UPDATE cutout_jobs SET stage = %s WHERE id = %s AND state = 'running' AND token = %s",
                         (stage, job.id, job.token))

    def next_retry_in(self) -> float | None:
        with self.db() as conn:
            row = conn.execute("SELECT MIN(retry_at) AS at FROM cutout_jobs WHERE state = 'pending'").fetchone()
            now = self._now(conn)
        return None if row is None or row["at"] is None else max(0.0, float(row["at"]) - now)

    def finish(
        self, job: Job, *, content_hash: str, fingerprint: Fingerprint, publish: Callable[[], object]
    ) -> bool:
        with self.db() as conn:
            if not _holds(conn, job):
                return False
            publish()  # under the row lock: a newer claim cannot finish until this commits
            conn.execute(
                "UPDATE cutout_jobs SET state = 'done', content_hash = %s, size = %s, mtime_ns = %s, reason = NULL,"
                " message = NULL, quarantine = NULL, finished_at = %s, stage = NULL, suspect = false, owner = NULL,"
                " lease_until = NULL WHERE id = %s",
                (content_hash, fingerprint.size, fingerprint.mtime_ns, self._now(conn), job.id),
            )
        return True

    def mark_failed(self, job: Job, *, reason: str, message: str, quarantine: PurePosixPath | None) -> bool:
        with self.db() as conn:
            return conn.execute(
                "UPDATE cutout_jobs SET state = 'failed', reason = %s, message = %s, quarantine = %s,"
                " finished_at = %s, output_key = NULL, stage = NULL, suspect = false, owner = NULL,"
                " lease_until = NULL WHERE id = %s AND state = 'running' AND token = %s",
                (reason, message, _posix(quarantine), self._now(conn), job.id, job.token),
            ).rowcount == 1

    def mark_retry(
        self, job: Job, *, reason: str, message: str, delay: float, counts: bool, was: State = "running"
    ) -> bool:
        with self.db() as conn:
            if was == "failed":
                _lock_names(conn)
            if not _holds(conn, job, state=was):
                return False
            if was == "failed":
                _reclaim(conn, job)
            conn.execute(
                "UPDATE cutout_jobs SET state = 'pending', reason = %s, message = %s, retry_at = %s, quarantine = %s,"
                " finished_attempts = finished_attempts + %s, stage = NULL, suspect = false, owner = NULL,"
                " lease_until = NULL WHERE id = %s",
                (reason, message, self._now(conn) + delay, _posix(job.quarantine), 0 if counts else 1, job.id),
            )
        return True

    def release(self, job: Job) -> None:
        with self.db() as conn:
            conn.execute(
                "UPDATE cutout_jobs SET state = 'pending', attempts = GREATEST(0, attempts - 1), stage = NULL,"
                " owner = NULL, lease_until = NULL WHERE id = %s AND state = 'running' AND token = %s",
                (job.id, job.token),
            )

    # --- reporting ---------------------------------------------------------------------------
    def counts(self) -> dict[State, int]:
        with self.db() as conn:
            rows = conn.execute("SELECT state, COUNT(*) AS n FROM cutout_jobs GROUP BY state").fetchall()
        found = {row["state"]: int(row["n"]) for row in rows}
        return {state: found.get(state, 0) for state in STATES}

    def jobs(self, *, state: State, limit: int = 20, newest_first: bool = False) -> list[Job]:
        order = "DESC" if newest_first else "ASC"
        with self.db() as conn:
            rows = conn.execute(
                f"SELECT * FROM cutout_jobs WHERE state = %s ORDER BY COALESCE(finished_at, queued_at) {order},"
                f" id {order} LIMIT %s", (state, limit),
            ).fetchall()
        return [_job(row) for row in rows]

    def has_work(self) -> bool:
        with self.db() as conn:
            return conn.execute(
                "SELECT 1 FROM cutout_jobs WHERE state IN ('pending', 'running') LIMIT 1").fetchone() is not None

    def oldest_pending_since(self) -> float | None:
        with self.db() as conn:
            row = conn.execute("SELECT MIN(queued_at) AS at FROM cutout_jobs WHERE state = 'pending'").fetchone()
        return None if row is None or row["at"] is None else float(row["at"])

    # --- the fleet ---------------------------------------------------------------------------
    def lead(self) -> bool:
        """The fleet's watcher holds a session advisory lock on a connection of its own: when it
        dies (or its machine, or the network between), the server drops the connection and the
        lock with it, and the next daemon to ask takes over."""
        with self._leading_lock:
            if self._leader is not None and not self._leader.closed:
                try:
                    self._leader.execute("SELECT 1")
                    return True
                except psycopg.Error:
                    self._resign()
            try:
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            except psycopg.Error:
                return False
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
            if row is None or not row[0]:
                conn.close()
                return False
            self._leader = conn
            return True

    def _resign(self) -> None:
        if self._leader is not None:
            self._leader.close()  # the server releases the lock with the connection
            self._leader = None

    def check_model(self, model: str) -> None:
        with self.db() as conn:
            conn.execute("INSERT INTO cutout_meta VALUES ('fleet.model', %s) ON CONFLICT (key) DO NOTHING", (model,))
            row = conn.execute("SELECT value FROM cutout_meta WHERE key = 'fleet.model'").fetchone()
        if row is not None and row["value"] != model:
            raise ConfigError(
                f"this fleet runs the model {row['value']}, but this machine would run {model}: give it the same "
                "model.name and fetch the same revision (cutout model fetch --revision R), so that one hot folder "
                "never gets cutouts from two models"
            )

    def report_worker(self, info: WorkerInfo) -> None:
        with self.db() as conn:
            now = self._now(conn)
            conn.execute(
                "INSERT INTO cutout_workers (worker, host, pid, device, model, started_at, seen_at, done, current,"
                " leader) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (worker) DO UPDATE SET"
                " host = excluded.host, pid = excluded.pid, device = excluded.device, model = excluded.model,"
                " started_at = excluded.started_at, seen_at = excluded.seen_at, done = excluded.done,"
                " current = excluded.current, leader = excluded.leader",
                (info.worker, info.host, info.pid, info.device, info.model, info.started_at, now, info.done,
                 info.current, info.leader),
            )

    def leave(self, worker: str) -> None:
        with self.db() as conn:
            conn.execute("DELETE FROM cutout_workers WHERE worker = %s", (worker,))

    def fleet(self) -> list[WorkerInfo]:
        with self.db() as conn:
            rows = conn.execute("SELECT * FROM cutout_workers ORDER BY host, worker").fetchall()
        return [WorkerInfo(**row) for row in rows]

    # --- rebuilding a lost queue --------------------------------------------------------------
    def record_done(self, records: list[DoneRecord]) -> None:
        with self.db() as conn, conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO cutout_jobs (source, output, output_key, size, mtime_ns, content_hash, state, attempts,"
                " first_seen, queued_at, started_at, finished_at) VALUES (%s, %s, %s, %s, %s, %s, 'done', 1,"
                " %s, %s, %s, %s)",
                [(r.source.as_posix(), r.output.as_posix(), claim_key(r.output), r.fingerprint.size,
                  r.fingerprint.mtime_ns, r.content_hash, r.finished_at, r.finished_at, r.finished_at, r.finished_at)
                 for r in records],
            )

    def record_failed(self, records: list[FailedRecord]) -> None:
        with self.db() as conn, conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO cutout_jobs (source, output, size, mtime_ns, state, attempts, finished_attempts, reason,"
                " message, quarantine, first_seen, queued_at, finished_at) VALUES (%s, %s, %s, %s, 'failed', %s, %s,"
                " %s, %s, %s, %s, %s, %s)",
                [(r.source.as_posix(), r.source.with_suffix(".png").as_posix(), r.fingerprint.size,
                  r.fingerprint.mtime_ns, r.attempts, r.attempts, r.reason, r.message, r.quarantine.as_posix(),
                  r.first_seen, r.first_seen, r.finished_at) for r in records],
            )


# --- The schema ---------------------------------------------------------------------------------
def schema_version(conn: psycopg.Connection[Row]) -> int:
    if conn.execute("SELECT to_regclass('cutout_schema') AS t").fetchone() == {"t": None}:
        return 0
    row = conn.execute("SELECT version FROM cutout_schema").fetchone()
    return int(row["version"]) if row else 0


def migrate(url: str) -> tuple[int, int]:
    """Bring the store's schema to this program's version (`cutout queue init`): (before, after)."""
    try:
        with psycopg.connect(url, row_factory=dict_row) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            before = schema_version(conn)
            _refuse_newer(before)
            conn.execute("CREATE TABLE IF NOT EXISTS cutout_schema (version integer NOT NULL)")
            for sql in MIGRATIONS[before:]:
                conn.execute(sql)
            conn.execute("DELETE FROM cutout_schema")
            conn.execute("INSERT INTO cutout_schema VALUES (%s)", (len(MIGRATIONS),))
    except psycopg.OperationalError as exc:
        raise _unreachable(url, exc) from exc
    return before, len(MIGRATIONS)


def check_schema(conn: psycopg.Connection[Row]) -> None:
    """A daemon runs only on the schema it knows: older is `cutout queue init`'s job, newer a refusal."""
    version = schema_version(conn)
    _refuse_newer(version)
    if version < len(MIGRATIONS):
        raise ConfigError(
            f"the PostgreSQL job store is at schema version {version}, this cutout needs {len(MIGRATIONS)}: "
            "run `cutout queue init --config F` once (it creates or upgrades the tables)"
        )


def _refuse_newer(version: int) -> None:
    if version > len(MIGRATIONS):
        raise ConfigError(
            f"the PostgreSQL job store is at schema version {version}, newer than this cutout knows "
            f"({len(MIGRATIONS)}): upgrade cutout on this machine to the fleet's version"
        )


def _unreachable(url: str, exc: BaseException) -> QueueError:
    return QueueError(f"the PostgreSQL job store {redacted(url)} is unreachable: {str(exc).strip()}")


def redacted(url: str) -> str:
    """The URL without a password, for messages and logs."""
    head, at, tail = url.partition("@")
    if not at or ":" not in head.split("://", 1)[-1]:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}:***@{tail}"


# --- Rows and names -------------------------------------------------------------------------------
def _lock_names(conn: psycopg.Connection[Row]) -> None:
    """Output names are decided one transaction at a time across the fleet."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))


def _claim_output(
    conn: psycopg.Connection[Row], source: PurePosixPath, *, preferred: PurePosixPath | None = None
) -> PurePosixPath:
    def taken(key: str) -> bool:
        return conn.execute("SELECT 1 FROM cutout_jobs WHERE output_key = %s", (key,)).fetchone() is not None

    if preferred is not None and not taken(claim_key(preferred)):
        return preferred
    return output_name(source, is_taken=taken)


def _reclaim(conn: psycopg.Connection[Row], job: Job) -> None:
    output = _claim_output(conn, job.source, preferred=job.output)
    conn.execute("UPDATE cutout_jobs SET output = %s, output_key = %s WHERE id = %s",
                 (output.as_posix(), claim_key(output), job.id))


def _holds(conn: psycopg.Connection[Row], job: Job, *, state: State = "running") -> bool:
    row = conn.execute("SELECT 1 FROM cutout_jobs WHERE id = %s AND state = %s AND token = %s FOR UPDATE",
                       (job.id, state, job.token))
    return row.fetchone() is not None


def _same(job: Job, fingerprint: Fingerprint) -> bool:
    return (job.size, job.mtime_ns) == (fingerprint.size, fingerprint.mtime_ns)


def _posix(path: PurePosixPath | None) -> str | None:
    return None if path is None else path.as_posix()


def _job(row: Row) -> Job:
    return Job(
        id=row["id"], source=PurePosixPath(row["source"]), output=PurePosixPath(row["output"]), size=row["size"],
        mtime_ns=row["mtime_ns"], content_hash=row["content_hash"], state=row["state"], attempts=row["attempts"],
        finished_attempts=row["finished_attempts"], reason=row["reason"], message=row["message"],
        quarantine=PurePosixPath(row["quarantine"]) if row["quarantine"] else None, first_seen=row["first_seen"],
        queued_at=row["queued_at"], started_at=row["started_at"], finished_at=row["finished_at"], stage=row["stage"],
        suspect=bool(row["suspect"]), crashes=row["crashes"], kills=row["kills"], token=row["token"],
    )
