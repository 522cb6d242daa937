"""The SQL job store: the rules of daemon/store/jobs.py written once, for SQLite and PostgreSQL.

    SqlJobStore                        offering, claiming, ending and reporting jobs: every
    │                                  statement both databases run, and the logic around it
    ├── daemon.store.sqlite.JobQueue          SQLite in the state folder: one process, one machine
    └── daemon.store.postgres.PostgresStore   PostgreSQL: every machine of a fleet on one queue

The two differ in a few places only, and each is a seam a subclass fills in:

- **The transaction**: `db()` yields a connection inside one transaction (`Sql`: `execute`
  and `executemany`, returning a cursor with `fetchone`, `fetchall` and `rowcount`), and
  commits when the block ends or rolls back when it raises. `durable=False` lets SQLite
  skip the fsync for facts that only have to survive the process (which stage a job is in);
  `single=True` says each of the block's statements is atomic by itself, so PostgreSQL
  sends each as its own transaction, without BEGIN and COMMIT (two round trips fewer).
- **Parameters** are named, written `:name`: sqlite3 takes that style as it is, and the
  PostgreSQL store rewrites each statement once to psycopg's `%(name)s`
  (`daemon.store.postgres.pyformat`). Names, not positions, because a statement here sets up to
  a dozen columns and a name says which value goes where.
- **Tables**: `JOBS`, `META` and `NAMES` (PostgreSQL's carry a `cutout_` prefix, to share a database).
- **Output names**: a job claims the seed's name (`output_key` on its row) and every other
  name its recipes derive from it (`NAMES` rows, from `extra_names`); a name is free when
  neither holds it for another job.
- **The clock**: `_now(conn)`, the time every row is stamped with: the process's clock on
  one machine, the database's for a fleet, so that every lease ends on one clock.
- **Row locks**: `FOR_UPDATE` ends each SELECT of a row the transaction goes on to change,
  `FOR_UPDATE_SKIP_LOCKED` the claim's: empty on SQLite, whose `BEGIN IMMEDIATE` already
  holds the whole database; on PostgreSQL they keep two workers off one row.
- **Output names**: `_lock_names(conn)` before deciding one (nothing to do on SQLite, for
  the same reason; an advisory lock on PostgreSQL).
- **Claims**: `_take` stamps the claimed row (attempt, start, fencing token; on PostgreSQL
  also its owner and lease), `_return_lost_claims` gives back, before each claim, the
  claims whose holder is gone (expired leases; none on SQLite, where `recover` judges a dead
  process's claims at the next start), `CLEAR_CLAIM` the columns a claim leaves behind that
  must go when it ends, and `_own_running` which running rows `recover` may judge (all of
  them on one machine, only this worker's own in a fleet).

Everything else is one SQL text that both run: booleans are written `true` and `false`
(SQLite stores 1 and 0) and a start is given back with `CASE`, since SQLite has no
`GREATEST` and PostgreSQL no two-argument `MAX`.
"""

from __future__ import annotations

import itertools
import json
from abc import ABC, abstractmethod
from dataclasses import replace
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Protocol

from daemon.folders.layout import candidate_outputs, claim_key
from daemon.store.jobs import STATES, DoneRecord, ExtraNames, FailedRecord, Fingerprint, Job, Offer, Recovery, State

Params = Mapping[str, object]
"""A statement's parameters, by the names its SQL gives them (`:name`)."""


class Row(Protocol):
    """A result row, read by column name (sqlite3.Row, or psycopg's dict rows)."""

    def __getitem__(self, column: str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...


class Cursor(Protocol):
    """What a statement gives back: its rows, or how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Row | None: ...

    def fetchall(self) -> Sequence[Row]: ...


class Sql(Protocol):
    """A connection inside one of `db()`'s transactions, taking SQL with `:name` parameters."""

    def execute(self, sql: str, params: Params = ..., /) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Params], /) -> object: ...


START_ATTEMPT = "state = 'running', attempts = attempts + 1, started_at = :now, stage = :stage"
"""What every claim sets (with its token): the start counted, at `now`, in `stage` (None: waiting)."""
NEXT_READY = ("state = 'pending' AND retry_at <= :now"
              " ORDER BY suspect DESC, crashes + kills, retry_at, id LIMIT 1")
"""The next job to claim: suspects first, the one that died least with the process first."""

QUARANTINE_MOVE_SECONDS = 60.0
"""How long after a job fails its unchanged file, still in the hot folder, counts as on its way
to quarantine (a copy across volumes of a large file included) rather than put back."""
FINISHED: tuple[State, ...] = ("done", "review")
"""States whose cut-out exists: a file that comes again unchanged has nothing to redo."""
HELD_BY_NONE = "a cut-out kept by a queue rebuild, its original gone"
"""Who holds a name `record_held` kept, in messages."""
UNCOUNT_START = "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"
"""A start given back (a claim that never ran), never below 0, in SQL both take (no `GREATEST` in SQLite)."""


class SqlJobStore(ABC):
    """The `JobStore` methods whose logic both databases share; subclasses fill in the seams."""

    JOBS: ClassVar[str]
    META: ClassVar[str]
    NAMES: ClassVar[str]
    extra_names: ExtraNames = staticmethod(lambda source, claimed, recipes: ())
    """The names besides the seed's that `source`'s recipes derive from its claimed name."""
    derives_names: bool = False
    """Whether any recipe derives a name: only then does a claim re-claim its job's names."""
    FOR_UPDATE: ClassVar[str]
    """Appended to a SELECT of a row this transaction goes on to change."""
    FOR_UPDATE_SKIP_LOCKED: ClassVar[str]
    """Appended to the claim's SELECT: a row another worker is claiming is passed over, not waited for."""
    CLEAR_CLAIM: ClassVar[str]
    """`, column = NULL` for each column a claim sets besides the token, cleared when it ends."""
    HELD_UNION: ClassVar[str] = ""
    """SQLite: the names a queue rebuild kept for cut-outs whose input is gone (PostgreSQL has no rebuild)."""

    # --- the seams --------------------------------------------------------------------------
    @abstractmethod
    def db(self, *, durable: bool = True, single: bool = False) -> AbstractContextManager[Sql]:
        """One transaction: commit when the block ends, roll back when it raises (`single`: each
        of the block's statements is atomic by itself, and they need no transaction around them)."""

    @abstractmethod
    def _now(self, conn: Sql) -> float:
        """The time rows are stamped with."""

    @abstractmethod
    def _lock_names(self, conn: Sql) -> None:
        """Called before an output name is decided: one decision at a time across the store."""

    @abstractmethod
    def _return_lost_claims(self, conn: Sql, *, now: float) -> None:
        """Called before each claim: claims whose holder is gone go back to pending."""

    @abstractmethod
    def _take(self, conn: Sql, job_id: int, *, now: float, stage: str | None) -> Row:
        """Claim a pending row (`START_ATTEMPT`, a new token, in `stage`) and return it as it is now."""

    def _take_next(self, conn: Sql, *, now: float, suspect_ok: bool, stage: str | None) -> Row | None:
        """Claim the next ready row (`NEXT_READY`), unless it is a suspect and `suspect_ok` is false."""
        row = self._next_ready(conn, now=now, suspect_ok=suspect_ok)
        return None if row is None else self._take(conn, row["id"], now=now, stage=stage)

    def _next_ready(self, conn: Sql, *, now: float, suspect_ok: bool) -> Row | None:
        """The next ready row (`NEXT_READY`), locked, unless it is a suspect and `suspect_ok` is false."""
        row = conn.execute(f"SELECT * FROM {self.JOBS} WHERE {NEXT_READY}{self.FOR_UPDATE_SKIP_LOCKED}",
                           {"now": now}).fetchone()
        return None if row is None or (row["suspect"] and not suspect_ok) else row

    @abstractmethod
    def _own_running(self) -> tuple[str, Params]:
        """The running rows `recover` judges: a WHERE condition and its parameters."""

    def name_outputs(self, extra_names: ExtraNames | None) -> None:
        """Which names besides the seed's each source's recipes write (the config's routes);
        None: no recipe writes any (the seed's output alone)."""
        self.derives_names = extra_names is not None
        self.extra_names = extra_names or SqlJobStore.extra_names

    # --- which hot folder ----------------------------------------------------------------------
    def remember_folders(self, folders: dict[str, Path]) -> None:
        """The folders the daemon runs with, so `cutout status --state S` can name full paths."""
        with self.db() as conn:
            conn.executemany(
                f"INSERT INTO {self.META} VALUES (:key, :value) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [{"key": f"folder.{name}", "value": str(path)} for name, path in folders.items()],
            )

    def folder(self, name: str) -> Path | None:
        with self.db() as conn:
            row = conn.execute(f"SELECT value FROM {self.META} WHERE key = :key", {"key": f"folder.{name}"}).fetchone()
        return Path(row["value"]) if row else None

    # --- adding work ----------------------------------------------------------------------------
    def get(self, source: PurePosixPath) -> Job | None:
        with self.db() as conn:
            row = self._row(conn, source)
        return _job(row) if row else None

    def _row(self, conn: Sql, source: PurePosixPath, *, lock: str = "") -> Row | None:
        """`source`'s job row; `lock=FOR_UPDATE` when the transaction goes on to change it."""
        return conn.execute(f"SELECT * FROM {self.JOBS} WHERE source = :source{lock}",
                            {"source": source.as_posix()}).fetchone()

    def offer(
        self, source: PurePosixPath, fingerprint: Fingerprint, *, content_hash: Callable[[], str] | None = None
    ) -> Offer:
        """Record a settled file: a new job, a job to redo (new content), or nothing to do.

        One transaction. The content hash (a full read) is computed outside it, only for a done
        file whose size or mtime changed, so the worker is never held up by it; the offer is then
        made again with it.
        """
        outcome = self._offer_once(source, fingerprint, hashing=content_hash is not None, digest=None)
        if outcome is None:
            assert content_hash is not None
            outcome = self._offer_once(source, fingerprint, hashing=True, digest=content_hash())
        assert outcome is not None
        return outcome

    def offer_together(self, files: Sequence[tuple[PurePosixPath, Fingerprint]]) -> list[Offer | None]:
        """Settled files of a burst in one transaction: one commit (and on SQLite one fsync) for
        them all, not one each. Each outcome is `offer`'s, or None for a done file whose size or
        mtime changed: offer that one alone, with its content hash. All or nothing: when one
        raises, none is offered (offer them alone to find which)."""
        with self.db() as conn:
            self._lock_names(conn)
            return [self._offered(conn, source, fingerprint, hashing=True, digest=None)
                    for source, fingerprint in files]

    def _offer_once(
        self, source: PurePosixPath, fingerprint: Fingerprint, *, hashing: bool, digest: str | None
    ) -> Offer | None:
        with self.db() as conn:
            self._lock_names(conn)
            return self._offered(conn, source, fingerprint, hashing=hashing, digest=digest)

    def _offered(
        self, conn: Sql, source: PurePosixPath, fingerprint: Fingerprint, *, hashing: bool, digest: str | None
    ) -> Offer | None:
        """The offer, or None when it needs the file's content hash (`hashing`) and has no `digest`."""
        row = self._row(conn, source, lock=self.FOR_UPDATE)
        if row is None:
            self._insert(conn, source, fingerprint)
            return "queued"
        job = _job(row)
        if hashing and digest is None and job.state in FINISHED and not _same(job, fingerprint):
            return None
        return self._reoffer(conn, job, fingerprint, digest)

    def _insert(self, conn: Sql, source: PurePosixPath, fingerprint: Fingerprint) -> None:
        output, now = self._claim_output(conn, source), self._now(conn)
        conn.execute(
            f"INSERT INTO {self.JOBS} (source, output, output_key, size, mtime_ns, state, first_seen, queued_at)"
            " VALUES (:source, :output, :key, :size, :mtime_ns, 'pending', :now, :now)",
            {"source": source.as_posix(), "output": output.as_posix(), "key": claim_key(output),
             "size": fingerprint.size, "mtime_ns": fingerprint.mtime_ns, "now": now},
        )
        if self.derives_names:  # a new row holds no names yet: without derived ones, none to take
            self._claim_extra_names(conn, source, output)

    def _reoffer(self, conn: Sql, job: Job, fingerprint: Fingerprint, digest: str | None) -> Offer:
        if job.state in ("pending", "running"):
            return "busy"
        seen = {"id": job.id, "size": fingerprint.size, "mtime_ns": fingerprint.mtime_ns}
        if job.state in FINISHED and (_same(job, fingerprint) or (digest is not None and digest == job.content_hash)):
            conn.execute(f"UPDATE {self.JOBS} SET size = :size, mtime_ns = :mtime_ns WHERE id = :id", seen)
            return "unchanged"
        if job.state == "failed" and self._moving_out(conn, job, fingerprint):
            return "busy"  # looked at again later: gone by then, or back in the hot folder by hand
        if job.state == "failed":  # a new file at a failed one's path: not the quarantined one
            self._reclaim(conn, job)
            conn.execute(f"UPDATE {self.JOBS} SET quarantine = NULL WHERE id = :id", seen)
        conn.execute(
            f"UPDATE {self.JOBS} SET state = 'pending', size = :size, mtime_ns = :mtime_ns, attempts = 0,"
            " finished_attempts = 0, retry_at = 0, reason = NULL, message = NULL, doubt = NULL, doubt_parts = NULL,"
            " recipes = NULL, model = NULL, queued_at = :now WHERE id = :id",  # new content: the config decides again
            {**seen, "now": self._now(conn)},
        )
        return "requeued"

    def _moving_out(self, conn: Sql, job: Job, fingerprint: Fingerprint) -> bool:
        """Whether the file seen is the very one its job is sending to quarantine right now: the
        failure is recorded before the file moves (so a crash never loses it), and a watcher that
        looks in between must not take it for a new file, queue it, and see it vanish. The same
        file a while later is one a person put back (or a move a crash cut short): queued again."""
        recent = self._now(conn) - (job.finished_at or 0.0) < QUARANTINE_MOVE_SECONDS
        return job.quarantine is not None and _same(job, fingerprint) and recent

    def _claim_output(
        self, conn: Sql, source: PurePosixPath, *, preferred: PurePosixPath | None = None,
        recipes: tuple[str, ...] | None = None,
    ) -> PurePosixPath:
        """The output name for `source`: `preferred` if it and the names its recipes derive from it
        are free, else the layout rule's first such name."""
        candidates = itertools.chain([preferred] if preferred is not None else [], candidate_outputs(source))
        return next(name for name in candidates if self._free(conn, source, name, recipes=recipes))

    def _free(
        self, conn: Sql, source: PurePosixPath, candidate: PurePosixPath, *, recipes: tuple[str, ...] | None
    ) -> bool:
        names = (candidate, *self.extra_names(source, candidate, recipes))
        return not any(self._name_holder(conn, claim_key(name), source=source) is not None for name in names)

    def _name_holder(self, conn: Sql, key: str, *, source: PurePosixPath) -> PurePosixPath | None:
        """The job other than `source`'s that holds the name `key`, as its own or a derived one
        (or HELD_BY_NONE: a cut-out kept by a queue rebuild whose input is gone)."""
        row = conn.execute(
            f"SELECT source FROM {self.JOBS} WHERE output_key = :key AND source <> :source UNION ALL"
            f" SELECT j.source FROM {self.NAMES} n JOIN {self.JOBS} j ON j.id = n.job_id"
            f" WHERE n.key = :key AND j.source <> :source{self.HELD_UNION}",
            {"key": key, "source": source.as_posix(), **({"held": HELD_BY_NONE} if self.HELD_UNION else {})},
        ).fetchone()
        return None if row is None else PurePosixPath(row["source"])

    def _claim_extra_names(
        self, conn: Sql, source: PurePosixPath, output: PurePosixPath, *, recipes: tuple[str, ...] | None = None
    ) -> None:
        """The job's derived names, as its recipes give them now, replacing any it held; a name
        another job holds is not taken (`name_conflicts` says which)."""
        job = f"(SELECT id FROM {self.JOBS} WHERE source = :source)"
        conn.execute(f"DELETE FROM {self.NAMES} WHERE job_id = {job}", {"source": source.as_posix()})
        free = [extra for extra in self.extra_names(source, output, recipes)
                if self._name_holder(conn, claim_key(extra), source=source) is None]
        if free:
            conn.executemany(
                f"INSERT INTO {self.NAMES} (key, job_id) VALUES (:key, {job})",
                [{"key": claim_key(extra), "source": source.as_posix()} for extra in free],
            )

    def _reclaim(self, conn: Sql, job: Job) -> None:
        """A job gave up its output names (failed), or its recipes changed (redone): claim them
        again. A job that published under the output name it still holds keeps it (a name never
        changes once given) and takes only the derived names it never had; any other takes the
        first candidate whose names are all free, `job.output` first."""
        held = conn.execute(
            f"SELECT 1 FROM {self.JOBS} WHERE id = :id AND output_key = :key AND content_hash IS NOT NULL",
            {"id": job.id, "key": claim_key(job.output)},
        ).fetchone()
        output = job.output if held else self._claim_output(conn, job.source, preferred=job.output,
                                                             recipes=job.recipes)
        if not held:
            conn.execute(f"UPDATE {self.JOBS} SET output = :output, output_key = :key WHERE id = :id",
                         {"output": output.as_posix(), "key": claim_key(output), "id": job.id})
        self._claim_extra_names(conn, job.source, output, recipes=job.recipes)

    def name_conflicts(self, job: Job) -> list[tuple[PurePosixPath, PurePosixPath]]:
        """The files `job`'s recipes would write under names another job holds: (name, holder)."""
        with self.db() as conn:
            return self._conflicts(conn, job)

    def _conflicts(self, conn: Sql, job: Job) -> list[tuple[PurePosixPath, PurePosixPath]]:
        holders = ((name, self._name_holder(conn, claim_key(name), source=job.source))
                   for name in self.extra_names(job.source, job.output, job.recipes))
        return [(name, holder) for name, holder in holders if holder is not None]

    def _release_names(self, conn: Sql, job_id: int) -> None:
        conn.execute(f"DELETE FROM {self.NAMES} WHERE job_id = :id", {"id": job_id})

    def record_rejected(
        self, source: PurePosixPath, fingerprint: Fingerprint, *, reason: str, message: str,
        quarantine: PurePosixPath | None,
    ) -> None:
        """A file refused before it became a job (its name): a failed row, so status and retry see it."""
        with self.db() as conn:
            conn.execute(
                f"INSERT INTO {self.JOBS} (source, output, size, mtime_ns, state, reason, message, quarantine,"
                " first_seen, queued_at, finished_at) VALUES (:source, :output, :size, :mtime_ns, 'failed', :reason,"
                " :message, :quarantine, :now, :now, :now) ON CONFLICT (source) DO UPDATE SET state = 'failed',"
                " reason = excluded.reason, message = excluded.message, quarantine = excluded.quarantine,"
                f" finished_at = excluded.finished_at, output_key = NULL"
                f" WHERE {self.JOBS}.state NOT IN ('pending', 'running')",
                {"source": source.as_posix(), "output": source.with_suffix(".png").as_posix(),
                 "size": fingerprint.size, "mtime_ns": fingerprint.mtime_ns, "reason": reason, "message": message,
                 "quarantine": _posix(quarantine), "now": self._now(conn)},
            )
            conn.execute(f"DELETE FROM {self.NAMES} WHERE job_id IN (SELECT id FROM {self.JOBS} WHERE source = :source"
                         " AND state = 'failed')", {"source": source.as_posix()})

    def requeue(self, job: Job) -> bool:
        """Send a failed job back through the queue from scratch (`cutout retry`)."""
        return self._again(job, was="failed")

    def redo(self, job: Job, *, recipes: tuple[str, ...] | None = None, model: str | None = None) -> bool:
        """Send a done job, or one in review, through the queue again (`cutout reprocess`: its
        recipes changed; `cutout review redo`, with the `recipes` and `model` a person chose, or
        None: the config's)."""
        return self._again(replace(job, recipes=recipes, model=model), was="review" if job.state == "review" else "done")

    def _again(self, job: Job, *, was: State) -> bool:
        """`job` back to pending from `was`, with the recipes it carries."""
        with self.db() as conn:
            self._lock_names(conn)
            still = conn.execute(
                f"SELECT 1 FROM {self.JOBS} WHERE id = :id AND state = :was{self.FOR_UPDATE}", {"id": job.id, "was": was}
            ).fetchone()
            if still is None:
                return False  # the daemon already picked it up (a restored file), or it is busy
            if was in FINISHED and self._conflicts(conn, job):
                return False  # its new files' names are others': it stays done, under its names
            self._reclaim(conn, job)
            conn.execute(
                f"UPDATE {self.JOBS} SET state = 'pending', attempts = 0, finished_attempts = 0, retry_at = 0,"
                " doubt = NULL, doubt_parts = NULL, recipes = :recipes, model = :model, queued_at = :now WHERE id = :id",
                {"now": self._now(conn), "id": job.id, "recipes": _recipes_text(job.recipes), "model": job.model},
            )
        return True

    def known(self) -> dict[str, tuple[State, int, int]]:
        """Every job's state and fingerprint by source, for the reconciliation scan."""
        with self.db() as conn:
            rows = conn.execute(f"SELECT source, state, size, mtime_ns FROM {self.JOBS}").fetchall()
        return {row["source"]: (row["state"], row["size"], row["mtime_ns"]) for row in rows}

    # --- running work -----------------------------------------------------------------------------
    def recover(self, *, crashed: bool) -> Recovery:
        """At start-up: jobs a dead process left `running` (`_own_running`) go back to `pending`.

        Bystanders (claimed, but in no stage) get their start back. Jobs that were in a
        stage become suspects; when exactly one was, the death was its alone, and counts
        as a crash (`crashed`: the process left a crash report) or else as a kill.
        """
        counter = "crashes" if crashed else "kills"
        mine, params = self._own_running()
        with self.db() as conn:
            rows = conn.execute(
                f"SELECT id FROM {self.JOBS} WHERE {mine} AND stage IS NOT NULL{self.FOR_UPDATE}", params
            ).fetchall()
            in_stage = [row["id"] for row in rows]
            alone = in_stage if len(in_stage) == 1 else []
            for job_id in alone:
                conn.execute(f"UPDATE {self.JOBS} SET {counter} = {counter} + 1 WHERE id = :id", {"id": job_id})
            # Several in a stage: none is to blame yet, so none keeps an unfinished start.
            conn.execute(
                f"UPDATE {self.JOBS} SET suspect = true, finished_attempts = finished_attempts + :uncounted"
                f" WHERE {mine} AND stage IS NOT NULL", {**params, "uncounted": 0 if alone else 1},
            )
            released = conn.execute(
                f"UPDATE {self.JOBS} SET {UNCOUNT_START} WHERE {mine} AND stage IS NULL", params
            ).rowcount
            conn.execute(f"UPDATE {self.JOBS} SET state = 'pending', stage = NULL{self.CLEAR_CLAIM} WHERE {mine}",
                         params)
        return Recovery(released=released, suspects=len(in_stage), blamed=len(alone) if crashed else 0,
                        killed=0 if crashed else len(alone))

    def claim(self, *, suspect_ok: bool = True, stage: str | None = None) -> Job | None:
        """The next ready pending job, now `running` (in `stage` when its work starts at once),
        its attempt counted, under a new token.

        Suspects come first, the one that died least with the process first. While one is waiting,
        nothing else is claimed; with `suspect_ok=False` (other work still in flight)
        nothing is, so that the suspect runs alone.
        """
        # Without derived names each statement here stands alone (the clock read, the sweep of
        # lost leases, the claim itself): no transaction around them, two round trips fewer.
        with self.db(single=not self.derives_names) as conn:
            if self.derives_names:
                self._lock_names(conn)  # before any row's lock, in the order offer() takes them
            now = self._now(conn)
            self._return_lost_claims(conn, now=now)
            if not self.derives_names:  # the seed's name, held since the offer, is all it writes
                row = self._take_next(conn, now=now, suspect_ok=suspect_ok, stage=stage)
                return None if row is None else _job(row)
            row = self._next_ready(conn, now=now, suspect_ok=suspect_ok)
            if row is None:
                return None
            # The claimer writes the files, so its recipes decide the names: the row's may have
            # been claimed under another config (an older start, `cutout retry` with another file).
            self._reclaim(conn, _job(row))
            return _job(self._take(conn, row["id"], now=now, stage=stage))

    def _holds(self, conn: Sql, job: Job, *, state: State = "running") -> bool:
        """Whether `job`'s claim is still the current one: in `state`, under the same token.
        On PostgreSQL the row stays locked to the end of the transaction."""
        row = conn.execute(
            f"SELECT 1 FROM {self.JOBS} WHERE id = :id AND state = :state AND token = :token{self.FOR_UPDATE}",
            {"id": job.id, "state": state, "token": job.token},
        )
        return row.fetchone() is not None

    def mark_stage(self, job: Job, stage: str | None) -> None:
        """Which stage the job is in now (None: between stages, e.g. decoded and waiting)."""
        with self.db(durable=False, single=True) as conn:
            conn.execute(
                f"UPDATE {self.JOBS} SET stage = :stage WHERE id = :id AND state = 'running' AND token = :token",
                {"stage": stage, "id": job.id, "token": job.token},
            )

    def next_retry_in(self) -> float | None:
        """Seconds until the earliest pending job becomes ready (0 if one is ready now)."""
        with self.db() as conn:
            at, now = self._earliest_pending(conn, "retry_at"), self._now(conn)
        return None if at is None else max(0.0, at - now)

    def finish(
        self, job: Job, *, content_hash: str, fingerprint: Fingerprint, publish: Callable[[], object],
        doubt: float | None = None, doubt_parts: Mapping[str, float] | None = None, review: bool = False,
    ) -> bool:
        """Record the job done (or in review) and publish its output, in one transaction whose
        record, made only while the claim is current, is undone if the publishing fails."""
        with self.db() as conn:
            recorded = conn.execute(
                f"UPDATE {self.JOBS} SET state = :state, content_hash = :hash, size = :size, mtime_ns = :mtime_ns,"
                " reason = NULL, message = NULL, quarantine = NULL, finished_at = :now, stage = NULL,"
                f" doubt = :doubt, doubt_parts = :parts, suspect = false{self.CLEAR_CLAIM}"
                " WHERE id = :id AND state = 'running' AND token = :token",
                {"hash": content_hash, "size": fingerprint.size, "mtime_ns": fingerprint.mtime_ns,
                 "now": self._now(conn), "id": job.id, "token": job.token, "doubt": doubt,
                 "state": "review" if review else "done",
                 "parts": None if doubt_parts is None else json.dumps(dict(doubt_parts), sort_keys=True)},
            ).rowcount == 1
            if recorded:
                publish()  # under the row's lock: a newer claim cannot finish until this commits
        return recorded

    def approve(self, job: Job, *, publish: Callable[[], object]) -> bool:
        """Publish a reviewed cut-out and record it done, in one transaction that checks first that
        the job is still in review under the claim that made the cut-out, holding its output name."""
        with self.db() as conn:
            held = conn.execute(
                f"SELECT 1 FROM {self.JOBS} WHERE id = :id AND state = 'review' AND token = :token"
                f" AND output_key = :key{self.FOR_UPDATE}",
                {"id": job.id, "token": job.token, "key": claim_key(job.output)},
            ).fetchone()
            if held is None:
                return False
            publish()  # under the row's lock: a reject or redo waits until this commits
            conn.execute(f"UPDATE {self.JOBS} SET state = 'done', finished_at = :now WHERE id = :id",
                         {"now": self._now(conn), "id": job.id})
        return True

    def mark_failed(
        self, job: Job, *, reason: str, message: str, quarantine: PurePosixPath | None, was: State = "running"
    ) -> bool:
        """Failed for good; the output names are released (a RAW file must not keep `x.png` from `x.jpg`).
        `was="review"`: a person rejected its cut-out."""
        with self.db() as conn:
            failed = conn.execute(
                f"UPDATE {self.JOBS} SET state = 'failed', reason = :reason, message = :message,"
                " quarantine = :quarantine, finished_at = :now, output_key = NULL, stage = NULL,"
                f" suspect = false{self.CLEAR_CLAIM} WHERE id = :id AND state = :was AND token = :token",
                {"reason": reason, "message": message, "quarantine": _posix(quarantine), "now": self._now(conn),
                 "id": job.id, "token": job.token, "was": was},
            ).rowcount == 1
            if failed:
                self._release_names(conn, job.id)
            return failed

    def mark_retry(
        self, job: Job, *, reason: str, message: str, delay: float, counts: bool, was: State = "running"
    ) -> bool:
        """Back to pending after `delay`; `counts=False` for errors that are not the file's fault.

        `was="failed"` undoes a quarantine whose move failed (the file is still in the hot folder).
        """
        with self.db() as conn:
            if was == "failed":
                self._lock_names(conn)  # it takes an output name again
            if not self._holds(conn, job, state=was):
                return False
            if was == "failed":
                self._reclaim(conn, job)
            conn.execute(
                f"UPDATE {self.JOBS} SET state = 'pending', reason = :reason, message = :message, retry_at = :at,"
                " quarantine = :quarantine, finished_attempts = finished_attempts + :uncounted, stage = NULL,"
                f" suspect = false{self.CLEAR_CLAIM} WHERE id = :id",
                {"reason": reason, "message": message, "at": self._now(conn) + delay,
                 "quarantine": _posix(job.quarantine), "uncounted": 0 if counts else 1, "id": job.id},
            )
        return True

    def release(self, job: Job) -> None:
        """Put a claimed job back untouched (shutdown before it ran): the start does not count."""
        with self.db() as conn:
            conn.execute(
                f"UPDATE {self.JOBS} SET state = 'pending', {UNCOUNT_START}, stage = NULL{self.CLEAR_CLAIM}"
                " WHERE id = :id AND state = 'running' AND token = :token",
                {"id": job.id, "token": job.token},
            )

    # --- reporting ----------------------------------------------------------------------------------
    def counts(self) -> dict[State, int]:
        with self.db() as conn:
            rows = conn.execute(f"SELECT state, COUNT(*) AS n FROM {self.JOBS} GROUP BY state").fetchall()
        found = {row["state"]: int(row["n"]) for row in rows}
        return {state: found.get(state, 0) for state in STATES}

    def jobs(self, *, state: State, limit: int = 20, newest_first: bool = False) -> list[Job]:
        order = "DESC" if newest_first else "ASC"
        with self.db() as conn:
            rows = conn.execute(
                f"SELECT * FROM {self.JOBS} WHERE state = :state"
                f" ORDER BY COALESCE(finished_at, queued_at) {order}, id {order} LIMIT :limit",
                {"state": state, "limit": limit},
            ).fetchall()
        return [_job(row) for row in rows]

    def doubtful(self, *, above: float, limit: int = 20) -> list[Job]:
        """Finished jobs (done or in review) whose cut-out's doubt is over `above`, the latest first."""
        with self.db() as conn:
            rows = conn.execute(
                f"SELECT * FROM {self.JOBS} WHERE state IN ('done', 'review') AND doubt > :above"
                " ORDER BY finished_at DESC, id DESC LIMIT :limit",
                {"above": above, "limit": limit},
            ).fetchall()
        return [_job(row) for row in rows]

    def has_work(self) -> bool:
        """Whether any job waits or runs (the hot folder must then hold its files)."""
        with self.db() as conn:
            return conn.execute(
                f"SELECT 1 FROM {self.JOBS} WHERE state IN ('pending', 'running') LIMIT 1").fetchone() is not None

    def oldest_pending_since(self) -> float | None:
        with self.db() as conn:
            return self._earliest_pending(conn, "queued_at")

    def _earliest_pending(self, conn: Sql, column: str) -> float | None:
        row = conn.execute(f"SELECT MIN({column}) AS at FROM {self.JOBS} WHERE state = 'pending'").fetchone()
        return None if row is None or row["at"] is None else float(row["at"])

    # --- rebuilding a lost queue (daemon/store/rebuild.py) ----------------------------------------------
    def record_done(self, records: list[DoneRecord]) -> None:
        """Work finished before this queue existed: done rows (or waiting for review), each claiming
        its output name as found."""
        rows = [
            {"source": r.source.as_posix(), "output": r.output.as_posix(), "key": claim_key(r.output),
             "size": r.fingerprint.size, "mtime_ns": r.fingerprint.mtime_ns, "hash": r.content_hash,
             "at": r.finished_at, "state": "review" if r.waiting else "done"}
            for r in records
        ]
        with self.db() as conn:  # one transaction: thousands of rows, one commit
            conn.executemany(
                f"INSERT INTO {self.JOBS} (source, output, output_key, size, mtime_ns, content_hash, state, attempts,"
                " first_seen, queued_at, started_at, finished_at) VALUES (:source, :output, :key, :size,"
                " :mtime_ns, :hash, :state, 1, :at, :at, :at, :at)",
                rows,
            )
            for record in records:
                self._claim_extra_names(conn, record.source, record.output)

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
                f"INSERT INTO {self.JOBS} (source, output, size, mtime_ns, state, attempts, finished_attempts,"
                " reason, message, quarantine, first_seen, queued_at, finished_at) VALUES (:source, :output, :size,"
                " :mtime_ns, 'failed', :attempts, :attempts, :reason, :message, :quarantine, :first_seen,"
                " :first_seen, :at)",
                rows,
            )


def _job(row: Row) -> Job:
    return Job(
        id=row["id"], source=PurePosixPath(row["source"]), output=PurePosixPath(row["output"]), size=row["size"],
        mtime_ns=row["mtime_ns"], content_hash=row["content_hash"], state=row["state"], attempts=row["attempts"],
        finished_attempts=row["finished_attempts"], reason=row["reason"], message=row["message"],
        quarantine=PurePosixPath(row["quarantine"]) if row["quarantine"] else None, first_seen=row["first_seen"],
        queued_at=row["queued_at"], started_at=row["started_at"], finished_at=row["finished_at"], stage=row["stage"],
        suspect=bool(row["suspect"]),  # SQLite stores booleans as 0 and 1
        crashes=row["crashes"], kills=row["kills"], token=row["token"],
        # A read-only view of a queue the new version has not opened yet lacks the columns.
        doubt=row["doubt"] if "doubt" in row.keys() else None,
        doubt_parts=json.loads(row["doubt_parts"]) if "doubt_parts" in row.keys() and row["doubt_parts"] else None,
        recipes=tuple(json.loads(row["recipes"])) if "recipes" in row.keys() and row["recipes"] else None,
        model=row["model"] if "model" in row.keys() else None,
    )


def _recipes_text(recipes: tuple[str, ...] | None) -> str | None:
    return None if recipes is None else json.dumps(list(recipes))


def _same(job: Job, fingerprint: Fingerprint) -> bool:
    return (job.size, job.mtime_ns) == (fingerprint.size, fingerprint.mtime_ns)


def _posix(path: PurePosixPath | None) -> str | None:
    return None if path is None else path.as_posix()
