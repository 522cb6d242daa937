"""The PostgreSQL `JobStore`: every machine of a fleet on one queue.

The same rules as the SQLite store (daemon/store/jobs.py), made safe for many workers:

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

The statements and the logic around them are shared with the SQLite store
(daemon/store/sql.py, written with `:name` parameters, which `NamedParams` hands psycopg as
`%(name)s`); this module holds what is the fleet's own: the schema and its migrations, the
pool, and its answers to that module's seams (row locks, leases, tokens, the names lock).
The statements outside a store transaction (migrations, the leader's lock) are psycopg's own `%s`.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from daemon.errors import ConfigError, QueueError, StoreIncomplete
from daemon.store.jobs import Job, WorkerInfo
from daemon.store.sql import NEXT_READY, START_ATTEMPT, Params, Row, Sql, SqlJobStore

DictRow = dict[str, Any]
"""A row as psycopg's `dict_row` gives it."""

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
    """
    CREATE TABLE cutout_names (
        key text PRIMARY KEY,
        job_id bigint NOT NULL REFERENCES cutout_jobs (id)
    );
    CREATE INDEX cutout_names_job ON cutout_names (job_id);
    """,
    """
    ALTER TABLE cutout_jobs ADD COLUMN IF NOT EXISTS doubt double precision;
    ALTER TABLE cutout_jobs ADD COLUMN IF NOT EXISTS doubt_parts text;
    """,
    """
    ALTER TABLE cutout_jobs ADD COLUMN IF NOT EXISTS recipes text;
    ALTER TABLE cutout_jobs DROP CONSTRAINT IF EXISTS cutout_jobs_state_check;
    ALTER TABLE cutout_jobs ADD CONSTRAINT cutout_jobs_state_check
        CHECK (state IN ('pending', 'running', 'done', 'failed', 'review'));
    """,
    """
    ALTER TABLE cutout_jobs ADD COLUMN IF NOT EXISTS model text;
    """,
)
"""Migration N+1 takes the schema from version N to N+1; never edit a released one."""
SCHEMA_LOCK = 0x637574_6F7574  # "cutout": serialises migrations and output-name decisions
LEADER_LOCK = SCHEMA_LOCK + 1  # held by the fleet's watcher for as long as its connection lives
DEFAULT_LEASE_SECONDS = 60.0
CLOCK_REFRESH_SECONDS = 30.0
"""How often a store reads the database's clock again (it carries it forward in between)."""
CLOCK_JUMP_SECONDS = 0.5
"""A gap this large between the monotonic and wall clocks' progress: the machine slept, or its clock was set."""
SWEEPS_PER_LEASE = 6
"""How often, per lease, claims look for expired leases: a lost claim is back within a sixth of a
lease, and the claims in between run one statement fewer."""
BUSY_SECONDS = 30.0
"""How long a statement waits for a lock another session holds before the store counts as away."""


class PostgresStore(SqlJobStore):
    """The jobs of one hot folder in a PostgreSQL database; safe to share between threads."""

    JOBS = "cutout_jobs"
    META = "cutout_meta"
    NAMES = "cutout_names"
    FOR_UPDATE = " FOR UPDATE"
    FOR_UPDATE_SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"  # claimers never wait on each other's rows
    CLEAR_CLAIM = ", owner = NULL, lease_until = NULL"

    def __init__(
        self, url: str, *, worker: str | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] | None = None, pool_size: int = 4, connect_timeout: float = 10.0,
        busy_seconds: float = BUSY_SECONDS,
    ) -> None:
        self.url, self.lease_seconds, self.clock = url, lease_seconds, clock
        self._database_clock = DatabaseClock()
        self._next_sweep = float("-inf")
        self._leader: psycopg.Connection[tuple[Any, ...]] | None = None
        self._leading_lock = threading.Lock()
        self.worker = worker or f"{socket.gethostname()}:{id(self)}"
        self._pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, connection_class=psycopg.Connection[DictRow],
            kwargs={"row_factory": dict_row, "autocommit": True, "options": _with_lock_timeout(url, busy_seconds)},
        )
        try:
            with psycopg.connect(url, row_factory=dict_row, connect_timeout=max(1, round(connect_timeout))) as probe:
                check_schema(probe, url=url)  # fails at once when unreachable; the pool would keep retrying
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
    def db(self, *, durable: bool = True, single: bool = False) -> Iterator[NamedParams]:
        """One transaction on a pooled connection: commit on success, roll back on error.
        `single`: each of the block's statements is atomic by itself, and is sent as a
        transaction of its own (no BEGIN and COMMIT round trips). Every commit is as durable
        as the server makes it: `durable` is for SQLite's sake."""
        try:
            with self._pool.connection() as conn, nullcontext() if single else conn.transaction():
                yield NamedParams(conn)
        except psycopg.OperationalError as exc:
            raise _unreachable(self.url, exc) from exc
        except psycopg.errors.UndefinedTable as exc:  # dropped under a running daemon: a person must act
            table = re.search(r'relation "([^"]+)"', str(exc))
            raise StoreIncomplete(redacted(self.url), [table[1] if table else "a table"]) from exc

    # --- the seams of SqlJobStore: a fleet -----------------------------------------------------
    def _now(self, conn: Sql) -> float:
        """The time every row is stamped with: the database's clock (a test may pass its own)."""
        if self.clock is not None:
            return self.clock()
        return self._database_clock.now(lambda: _database_time(conn))

    def _lock_names(self, conn: Sql) -> None:
        """Output names are decided one transaction at a time across the fleet."""
        conn.execute("SELECT pg_advisory_xact_lock(:lock)", {"lock": SCHEMA_LOCK})

    def _return_lost_claims(self, conn: Sql, *, now: float) -> None:
        """Expired leases go back to pending: inside a stage, a death on the job (`kills`). Looked
        for once a sixth of a lease (SWEEPS_PER_LEASE), not at every claim."""
        if now < self._next_sweep:
            return
        conn.execute(
            "UPDATE cutout_jobs SET state = 'pending', owner = NULL, lease_until = NULL, stage = NULL,"
            " kills = kills + (stage IS NOT NULL)::int, suspect = suspect OR stage IS NOT NULL,"
            " attempts = CASE WHEN stage IS NULL THEN GREATEST(0, attempts - 1) ELSE attempts END"
            " WHERE state = 'running' AND lease_until < :now", {"now": now},
        )
        # Only after it ran: a sweep that failed is tried again at the next claim. (Two threads
        # may both sweep at once: harmless, and rarer than a lock would cost.)
        self._next_sweep = now + self.lease_seconds / SWEEPS_PER_LEASE

    def _take(self, conn: Sql, job_id: int, *, now: float, stage: str | None) -> Row:
        """Claimed for this worker under a lease, with a token from the store's one sequence."""
        row = conn.execute(f"{self._CLAIM} WHERE id = :id RETURNING *", self._claim_params(now, stage, id=job_id)).fetchone()
        assert row is not None
        return row

    def _take_next(self, conn: Sql, *, now: float, suspect_ok: bool, stage: str | None) -> Row | None:
        """The pick and the claim in one statement (the pick's row locked, others' skipped)."""
        return conn.execute(
            f"{self._CLAIM} WHERE id = (SELECT id FROM cutout_jobs WHERE {NEXT_READY} FOR UPDATE SKIP LOCKED)"
            " AND (:suspect_ok OR NOT suspect) RETURNING *",
            self._claim_params(now, stage, suspect_ok=suspect_ok),
        ).fetchone()

    _CLAIM = (f"UPDATE cutout_jobs SET {START_ATTEMPT}, token = nextval('cutout_tokens'), owner = :worker,"
              " lease_until = :until")

    def _claim_params(self, now: float, stage: str | None, **more: object) -> dict[str, object]:
        return {"now": now, "stage": stage, "worker": self.worker, "until": now + self.lease_seconds, **more}

    def _own_running(self) -> tuple[str, Params]:
        """This worker's own jobs from before a restart (same worker id): they go back now,
        judged as the SQLite store judges them; other workers' jobs wait for their leases."""
        return "state = 'running' AND owner = :worker", {"worker": self.worker}

    # --- which hot folder ------------------------------------------------------------------
    def bind_input(self, root: Path) -> None:
        """Each machine mounts the share where it likes: paths in the store are relative, so
        there is no absolute hot folder to bind to (each machine's config says where it is)."""

    # --- running work ------------------------------------------------------------------------
    def heartbeat(self, job: Job) -> bool:
        with self.db(single=True) as conn:
            now = self._now(conn)
            return conn.execute(
                "UPDATE cutout_jobs SET lease_until = :until WHERE id = :id AND state = 'running' AND token = :token",
                {"until": now + self.lease_seconds, "id": job.id, "token": job.token},
            ).rowcount == 1

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

    def fleet_id(self) -> str | None:
        """This store's id, made once (a random one in its meta table): the daemons that share it
        are one fleet, and share the hot and output folders' claims."""
        with self.db() as conn:
            conn.execute("INSERT INTO cutout_meta VALUES ('fleet.id', :id) ON CONFLICT (key) DO NOTHING",
                         {"id": uuid.uuid4().hex})
            row = conn.execute("SELECT value FROM cutout_meta WHERE key = 'fleet.id'").fetchone()
        assert row is not None
        return str(row["value"])

    def check_model(self, model: str) -> None:
        with self.db() as conn:
            conn.execute("INSERT INTO cutout_meta VALUES ('fleet.model', :model) ON CONFLICT (key) DO NOTHING",
                         {"model": model})
            row = conn.execute("SELECT value FROM cutout_meta WHERE key = 'fleet.model'").fetchone()
        if row is not None and row["value"] != model:
            raise ConfigError(
                f"this fleet runs the model {row['value']}, but this machine would run {model}: give it the same "
                "model.name and fetch the same revision (cutout model fetch --revision R), so that one hot folder "
                "never gets cutouts from two models; to change the fleet's model, stop every daemon and run "
                "`cutout queue init --change-model`"
            )

    def report_worker(self, info: WorkerInfo) -> None:
        with self.db() as conn:
            conn.execute(
                "INSERT INTO cutout_workers (worker, host, pid, device, model, started_at, seen_at, done, current,"
                " leader) VALUES (:worker, :host, :pid, :device, :model, :started_at, :seen_at, :done, :current,"
                " :leader) ON CONFLICT (worker) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
                " device = excluded.device, model = excluded.model, started_at = excluded.started_at,"
                " seen_at = excluded.seen_at, done = excluded.done, current = excluded.current,"
                " leader = excluded.leader",
                {**asdict(info), "seen_at": self._now(conn)},
            )

    def leave(self, worker: str) -> None:
        with self.db() as conn:
            conn.execute("DELETE FROM cutout_workers WHERE worker = :worker", {"worker": worker})

    def fleet(self) -> list[WorkerInfo]:
        with self.db() as conn:
            rows = conn.execute("SELECT * FROM cutout_workers ORDER BY host, worker").fetchall()
        return [WorkerInfo(**row) for row in rows]


# --- The shared SQL, in psycopg's style ----------------------------------------------------------
NO_PARAMS: Params = MappingProxyType({})
_NAMED = re.compile(r"(?<!:):([A-Za-z_]\w*)")  # `:name`; in a `::type` cast neither colon starts one


@lru_cache(maxsize=512)
def pyformat(sql: str) -> str:
    """`:name` parameters as psycopg's `%(name)s`, a literal `%` doubled, `::type` casts left alone."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


class NamedParams:
    """A pooled connection inside its transaction that takes daemon/store/sql.py's `:name` SQL."""

    def __init__(self, conn: psycopg.Connection[DictRow]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = NO_PARAMS, /) -> psycopg.Cursor[DictRow]:
        # Always a mapping, never None: psycopg reads `%%` as `%` only when it is given parameters.
        return self._conn.execute(pyformat(sql), params)

    def executemany(self, sql: str, rows: Iterable[Params], /) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(pyformat(sql), rows)


# --- The schema ---------------------------------------------------------------------------------
_CREATE = re.compile(r"CREATE (TABLE|SEQUENCE|INDEX) (?!IF NOT EXISTS)")
_CREATED = re.compile(r"CREATE (?:TABLE|SEQUENCE) (\w+)")


def missing_objects(conn: psycopg.Connection[DictRow], *, version: int) -> list[str]:
    """The tables and sequences the first `version` migrations made that are not there (the
    version record alone can lie)."""
    made = [name for sql in MIGRATIONS[:version] for name in _CREATED.findall(sql)]
    return [name for name in made if conn.execute("SELECT to_regclass(%s) AS t", (name,)).fetchone() == {"t": None}]


def _recreating(sql: str) -> str:
    """A migration that creates only what is missing. Every migration so far creates, alters with
    `IF NOT EXISTS` (migration 4), or drops `IF EXISTS` what it then adds (migration 5), so running
    one again is harmless; one that alters otherwise would need its own repair
    (tests/test_pgstore.py checks both give one schema)."""
    return _CREATE.sub(lambda found: f"CREATE {found[1]} IF NOT EXISTS ", sql)


def schema_version(conn: psycopg.Connection[DictRow]) -> int:
    if conn.execute("SELECT to_regclass('cutout_schema') AS t").fetchone() == {"t": None}:
        return 0
    row = conn.execute("SELECT version FROM cutout_schema").fetchone()
    return int(row["version"]) if row else 0


@dataclass(frozen=True)
class Migrated:
    """What `cutout queue init` did to a PostgreSQL store."""

    before: int
    after: int
    forgot_model: str | None  # the fleet model forgotten with `forget_model`
    recreated: list[str]  # what a current schema record lacked, made again


def migrate(url: str, *, forget_model: bool = False) -> Migrated:
    """Bring the store's schema to this program's version (`cutout queue init`), and make again
    whatever a current schema record lacks (tables dropped by hand, a partial restore)."""
    try:
        with psycopg.connect(url, row_factory=dict_row) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            before = schema_version(conn)
            _refuse_newer(before)
            conn.execute("CREATE TABLE IF NOT EXISTS cutout_schema (version integer NOT NULL)")
            missing = missing_objects(conn, version=before)
            if "cutout_jobs" in missing:  # the names point at jobs that are gone: they go too
                conn.execute("DROP TABLE IF EXISTS cutout_names")
            for sql in MIGRATIONS[:before] if missing else ():
                conn.execute(_recreating(sql))  # a current record over dropped tables: repaired
            for sql in MIGRATIONS[before:]:
                conn.execute(sql)
            conn.execute("DELETE FROM cutout_schema")
            conn.execute("INSERT INTO cutout_schema VALUES (%s)", (len(MIGRATIONS),))
            forgot = conn.execute("DELETE FROM cutout_meta WHERE key = 'fleet.model' RETURNING value").fetchone() \
                if forget_model else None
    except psycopg.OperationalError as exc:
        raise _unreachable(url, exc) from exc
    return Migrated(before, len(MIGRATIONS), forgot["value"] if forgot else None, missing)


def check_schema(conn: psycopg.Connection[DictRow], *, url: str) -> None:
    """A daemon runs only on the schema it knows: older is `cutout queue init`'s job, newer a
    refusal; a current record over missing tables is StoreIncomplete (`queue init` mends it)."""
    version = schema_version(conn)
    _refuse_newer(version)
    if version < len(MIGRATIONS):
        raise ConfigError(
            f"the PostgreSQL job store is at schema version {version}, this cutout needs {len(MIGRATIONS)}: "
            "run `cutout queue init --config F` once (it creates or upgrades the tables)"
        )
    if missing := missing_objects(conn, version=version):
        raise StoreIncomplete(redacted(url), missing)


def _refuse_newer(version: int) -> None:
    if version > len(MIGRATIONS):
        raise ConfigError(
            f"the PostgreSQL job store is at schema version {version}, newer than this cutout knows "
            f"({len(MIGRATIONS)}): upgrade cutout on this machine to the fleet's version"
        )


def _database_time(conn: Sql) -> float:
    row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8 AS now").fetchone()
    assert row is not None
    return float(row["now"])


class DatabaseClock:
    """The database's clock without a round trip each time: read now and then, and carried
    forward by this machine's monotonic clock in between. Its error is half a round trip plus
    the two clocks' drift over `refresh_seconds` (microseconds), where leases are a minute
    long; a machine that slept or whose wall clock was set reads the database's again."""

    def __init__(
        self, *, refresh_seconds: float = CLOCK_REFRESH_SECONDS, monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.refresh_seconds, self._monotonic, self._wall = refresh_seconds, monotonic, wall
        self._lock = threading.Lock()
        self._read: tuple[float, float, float] | None = None  # (database, monotonic, wall) at the last read

    def now(self, read: Callable[[], float]) -> float:
        """The database's time now; `read` asks the database itself when it is time to."""
        with self._lock:
            monotonic, wall = self._monotonic(), self._wall()
            if self._read is None or self._stale(monotonic, wall):
                self._read = (read(), monotonic, wall)
            database, then, _ = self._read
            return database + (monotonic - then)

    def _stale(self, monotonic: float, wall: float) -> bool:
        assert self._read is not None
        _, then, wall_then = self._read
        slept_or_set = abs((monotonic - then) - (wall - wall_then)) > CLOCK_JUMP_SECONDS
        return monotonic - then >= self.refresh_seconds or slept_or_set


def _unreachable(url: str, exc: BaseException) -> QueueError:
    return QueueError(f"the PostgreSQL job store {redacted(url)} is unreachable: {str(exc).strip()}")


def _with_lock_timeout(url: str, seconds: float) -> str:
    """The URL's own server options plus a lock timeout: a lock held past it (a stuck session, a
    migration) makes the store away (QueueError: waited out), not a statement hung forever."""
    own = conninfo_to_dict(url).get("options")
    return " ".join(part for part in (str(own or ""), f"-c lock_timeout={round(seconds * 1000)}") if part)


def redacted(url: str) -> str:
    """The URL without a password, for messages and logs."""
    head, at, tail = url.partition("@")
    if not at or ":" not in head.split("://", 1)[-1]:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}:***@{tail}"
