"""The job store: what the daemon asks of the place its jobs live, and the records it gets back.

    JobStore                              the Protocol: offer, claim, finish, fail, retry, report
    └── daemon.store.sql.SqlJobStore       the rules in SQL, written once for both databases
        ├── daemon.store.sqlite.JobQueue         SQLite in the state folder: one machine (the default)
        └── daemon.store.postgres.PostgresStore  PostgreSQL: every machine of a fleet on one queue

Every backend passes the same contract suite (tests/test_store_contract.py). The rules
that suite holds them to:

- A job row exists before any work on its file and is never deleted; `done` rows are how
  a restart knows not to redo a file.
- Each claim counts an attempt and carries a *fencing token* that grows at every claim.
  Every change a worker makes to its job names the token; a worker whose claim was taken
  from it (its lease ran out while it was frozen, cut off or dead) changes nothing: the
  store answers False and the worker drops its work. `finish()` publishes the output
  inside the same transaction that checks the token, so only the current claim's cutout
  ever takes the output name.
- An output name belongs to one job at a time (the layout's collision rule, decided in
  the store), so two jobs, on one machine or several, never write the same output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from typing import Literal, Protocol

State = Literal["pending", "running", "done", "failed", "review"]
STATES: tuple[State, ...] = ("pending", "running", "done", "failed", "review")
"""`review`: done, but its cut-out is doubtful and waits in the review folder for a person."""


@dataclass(frozen=True)
class Job:
    id: int
    source: PurePosixPath
    output: PurePosixPath
    size: int
    mtime_ns: int
    content_hash: str | None
    state: State
    attempts: int
    finished_attempts: int
    reason: str | None
    message: str | None
    quarantine: PurePosixPath | None
    first_seen: float
    queued_at: float
    started_at: float | None
    finished_at: float | None
    stage: str | None = None
    suspect: bool = False
    crashes: int = 0
    kills: int = 0
    token: int = 0
    """The fencing token of the claim that returned this job: every change to it must name it."""
    doubt: float | None = None
    """How likely its cut-out is wrong, 0..1 (done jobs; daemon.pipeline.doubt)."""
    doubt_parts: dict[str, float] | None = None
    """The score's parts, so a person can see why."""
    recipes: tuple[str, ...] | None = None
    """The recipes a person chose for this file (`cutout review redo --recipe`); None: the routes'."""
    model: str | None = None
    """The model a person chose for this file (`cutout review redo --model`); None: the daemon's."""

    @property
    def unfinished_starts(self) -> int:
        """Starts that never came back: the process died while running this job."""
        return self.attempts - self.finished_attempts


@dataclass(frozen=True)
class Fingerprint:
    """What a file looks like from outside: enough to notice it changed."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Fingerprint:
        stat = path.stat()
        return cls(stat.st_size, stat.st_mtime_ns)

    @classmethod
    def read(cls, path: Path, *, follow_symlinks: bool = True) -> Fingerprint | None:
        """The fingerprint of a regular file, or None when there is none (gone, a folder, or a
        symbolic link when links are not followed)."""
        try:
            stat = os.stat(path, follow_symlinks=follow_symlinks)
        except (OSError, ValueError):  # ValueError: a NUL byte, only from a hostile caller
            return None
        return cls(stat.st_size, stat.st_mtime_ns) if S_ISREG(stat.st_mode) else None


Offer = Literal["queued", "requeued", "unchanged", "busy"]

ExtraNames = Callable[[PurePosixPath, PurePosixPath, "tuple[str, ...] | None"], Sequence[PurePosixPath]]
"""(a source, the seed's output name it claimed, the recipes chosen for it or None for the
routes') -> the other names its recipes write there."""


@dataclass(frozen=True)
class Recovery:
    """What start-up found of a dead process's work."""

    released: int  # claimed but in no stage: back to pending, the start not counted
    suspects: int  # inside a stage: each will run alone before any other work
    blamed: int  # the one job in a stage, and the process crashed: counted in `crashes`
    killed: int  # the one job in a stage, and the process was killed: counted in `kills`


@dataclass(frozen=True, kw_only=True)
class DoneRecord:
    """A job found done by a queue rebuild: its input, the cutout it owns, what the input was."""

    source: PurePosixPath
    output: PurePosixPath
    fingerprint: Fingerprint
    content_hash: str
    finished_at: float
    waiting: bool = False
    """Found in the review folder: the job waits for review again."""


@dataclass(frozen=True, kw_only=True)
class FailedRecord:
    """A quarantined file found by a queue rebuild, from its `<name>.error.json`."""

    source: PurePosixPath
    fingerprint: Fingerprint
    reason: str
    message: str
    quarantine: PurePosixPath  # relative to the quarantine folder
    attempts: int
    first_seen: float
    finished_at: float


@dataclass(frozen=True, kw_only=True)
class WorkerInfo:
    """One daemon of a fleet, as `cutout status` shows it."""

    worker: str  # host and state folder: the same across the daemon's restarts
    host: str
    pid: int
    device: str
    model: str
    started_at: float
    seen_at: float  # its last heartbeat, on the store's clock
    done: int = 0  # images it finished since it started
    current: str | None = None  # a file it works on now
    leader: bool = False  # the fleet's watcher: it queues the hot folder's files


class JobStore(Protocol):
    """Where jobs live. Methods that change a claimed job take the `Job` the claim returned
    and return False when that claim is no longer the current one."""

    def close(self) -> None: ...

    # --- which hot folder ---------------------------------------------------------------
    def bind_input(self, root: Path) -> None:
        """Refuse to serve another hot folder than the one this store's jobs belong to."""

    def remember_folders(self, folders: dict[str, Path]) -> None: ...

    def folder(self, name: str) -> Path | None: ...

    # --- adding work ----------------------------------------------------------------------
    def get(self, source: PurePosixPath) -> Job | None: ...

    def offer(
        self, source: PurePosixPath, fingerprint: Fingerprint, *, content_hash: Callable[[], str] | None = None
    ) -> Offer:
        """A settled file: queued (new), requeued (new content), unchanged, or busy (in the queue)."""

    def offer_together(self, files: Sequence[tuple[PurePosixPath, Fingerprint]]) -> list[Offer | None]:
        """Several settled files in one transaction; None for one to offer alone with its hash."""

    def record_rejected(
        self, source: PurePosixPath, fingerprint: Fingerprint, *, reason: str, message: str,
        quarantine: PurePosixPath | None,
    ) -> None: ...

    def requeue(self, job: Job) -> bool:
        """`cutout retry`: a failed job back to pending; False if it is no longer failed."""

    def redo(self, job: Job, *, recipes: tuple[str, ...] | None = None, model: str | None = None) -> bool:
        """`cutout reprocess`, `cutout review redo`: a done (or in review) job back to pending,
        keeping its output name and claiming the derived names its recipes give now; False if it
        is no longer in the state it was read in, or if one of those names is another job's
        (`name_conflicts`). `recipes`: the recipes it is made with from now on (None: the routes'); `model`: the model
        (None: the daemon's)."""

    def name_conflicts(self, job: Job) -> list[tuple[PurePosixPath, PurePosixPath]]:
        """The files `job`'s recipes would write under names another job holds: (name, holder)."""

    def fleet_id(self) -> str | None:
        """The id the daemons sharing this store have in common (a fleet's); None for one daemon."""

    def name_outputs(self, extra_names: ExtraNames | None) -> None:
        """Which names besides the seed's each source's recipes write (the config's routes);
        None when no recipe writes any."""

    def known(self) -> dict[str, tuple[State, int, int]]: ...

    # --- running work -----------------------------------------------------------------------
    def recover(self, *, crashed: bool) -> Recovery:
        """At start-up: what a dead predecessor left running goes back to pending."""

    def claim(self, *, suspect_ok: bool = True, stage: str | None = None) -> Job | None: ...

    def heartbeat(self, job: Job) -> bool:
        """Extend the claim's lease; False when the claim is lost (stop, drop the work)."""

    def mark_stage(self, job: Job, stage: str | None) -> None: ...

    def next_retry_in(self) -> float | None: ...

    def finish(
        self, job: Job, *, content_hash: str, fingerprint: Fingerprint, publish: Callable[[], object],
        doubt: float | None = None, doubt_parts: Mapping[str, float] | None = None, review: bool = False,
    ) -> bool:
        """Done: `publish()` (the output's rename into place) and the done row with the cut-out's
        doubt, in one transaction that first checks the claim. False: the claim was lost, nothing
        published. `review`: the cut-out went to the review folder, and the job waits in `review`
        (its names still claimed) for `approve`, `mark_failed(was="review")` or `redo`."""

    def approve(self, job: Job, *, publish: Callable[[], object]) -> bool:
        """A job in review becomes done: `publish()` (its files' moves into the output folder) and
        the done row in one transaction that first checks the job is still in review under the
        same claim. False: it is not (approved, rejected or redone meanwhile), nothing published."""

    def mark_failed(
        self, job: Job, *, reason: str, message: str, quarantine: PurePosixPath | None, was: State = "running"
    ) -> bool:
        """Failed for good, its names released; `was="review"`: a person rejected its cut-out."""

    def mark_retry(
        self, job: Job, *, reason: str, message: str, delay: float, counts: bool, was: State = "running"
    ) -> bool: ...

    def release(self, job: Job) -> None: ...

    # --- reporting ------------------------------------------------------------------------------
    def counts(self) -> dict[State, int]: ...

    def jobs(self, *, state: State, limit: int = 20, newest_first: bool = False) -> list[Job]: ...

    def doubtful(self, *, above: float, limit: int = 20) -> list[Job]: ...

    def has_work(self) -> bool: ...

    def oldest_pending_since(self) -> float | None: ...

    # --- the fleet ---------------------------------------------------------------------------------
    def lead(self) -> bool:
        """Whether this daemon is the one that watches the hot folder now (trying to become it).
        One machine: always. A fleet: exactly one of its daemons at a time."""

    def check_model(self, model: str) -> None:
        """Refuse to work on a shared queue with another model (`model`: spec and revision) than
        the fleet's, so one folder never gets cutouts from two models."""

    def report_worker(self, info: WorkerInfo) -> None:
        """This daemon's heartbeat for `cutout status` (nothing to share on one machine)."""

    def leave(self, worker: str) -> None: ...

    def fleet(self) -> list[WorkerInfo]: ...

    # --- rebuilding a lost queue ------------------------------------------------------------------
    def record_done(self, records: list[DoneRecord]) -> None: ...

    def record_failed(self, records: list[FailedRecord]) -> None: ...
