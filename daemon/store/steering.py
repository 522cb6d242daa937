"""Steering the queue from outside the worker: `cutout retry`, `cutout reprocess` and the dashboard's Retry.

Each opens the existing queue (never a fresh one), sends files back through it, and says,
one line per file, what happened; a file that cannot go back is reported, not fatal.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from daemon.errors import ConfigError, JobError, reason_codes
from daemon.folders.outputs import Folders, restore_from_quarantine
from daemon.folders.routing import SEED_ROUTING, Routing
from daemon.settings import QueueSettings
from daemon.store.configured import open_store
from daemon.store.jobs import Job, JobStore

DEFAULT_QUEUE = QueueSettings()


def open_queue(state: Path, *, queue: QueueSettings) -> JobStore:
    # A SQLite queue is checked first: a damaged one gets a clear refusal, not a traceback or a
    # healthy-looking status, and an empty file is never given a fresh schema that would make it
    # look like a real queue.
    return open_store(queue, state=state, existing=True)



@contextmanager
def steering(folders: Folders, *, queue_settings: QueueSettings, routing: Routing) -> Iterator[JobStore]:
    """The existing queue, for a command that sends jobs back through it: a job taken up again
    claims the names its recipes give now."""
    queue = open_queue(folders.state, queue=queue_settings)
    queue.name_outputs(routing.name_deriver)
    try:
        yield queue
    finally:
        queue.close()


def retry(
    folders: Folders, *, target: Path | None, every: bool, queue_settings: QueueSettings = DEFAULT_QUEUE,
    routing: Routing = SEED_ROUTING, reason: str | None = None,
) -> list[str]:
    """Send quarantined files back through the queue; one line per file saying what happened.
    `every` with a `reason`: only the files quarantined for that reason (the dashboard's "Retry all")."""
    with steering(folders, queue_settings=queue_settings, routing=routing) as queue:
        chosen = [job for job in queue.jobs(state="failed", limit=1_000_000) if job.quarantine is not None]
        if every and reason is not None:
            _check_reason(reason, held=chosen)
            chosen = [job for job in chosen if job.reason == reason]
        if not every:
            chosen = [job for job in chosen if _matches(job, target, folders)]
            if not chosen:
                raise ConfigError(f"{target} is not a quarantined file of this daemon (see: cutout status)")
        return [_send_back(folders, queue, job) for job in chosen]


def _check_reason(reason: str, *, held: list[Job]) -> None:
    """A reason that is no reason code at all is a typo: say which exist, and which are held now."""
    if reason in reason_codes():
        return
    counts: dict[str, int] = {}
    for job in held:
        counts[str(job.reason)] = counts.get(str(job.reason), 0) + 1
    now = ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "nothing"
    raise ConfigError(f"--reason {reason} is no reason code; they are: {', '.join(reason_codes())} "
                      f"(in quarantine now: {now})")


def reprocess(
    folders: Folders, *, target: Path | None, queue_settings: QueueSettings = DEFAULT_QUEUE,
    routing: Routing = SEED_ROUTING,
) -> list[str]:
    """Done files (all, or those at or under `target` in the hot folder) through the queue again,
    with the recipes the config gives them now: what was queued, and what was left and why."""
    with steering(folders, queue_settings=queue_settings, routing=routing) as queue:
        done = [job for job in queue.jobs(state="done", limit=10_000_000) if _under(job, target, folders)]
        if target is not None and not done and not _exists_in_hot_folder(target, folders):
            raise ConfigError(f"{target} is neither a file nor a folder of the hot folder {folders.input} "
                              "(give a path in it, or relative to it; or --all)")
        present = [job for job in done if (folders.input / job.source).is_file()]
        conflicts = {job.source: found for job in present if (found := queue.name_conflicts(job))}
        queued = sum(queue.redo(job) for job in present if job.source not in conflicts)
    lines = [f"queued again: {queued} file{'s' if queued != 1 else ''}"]
    if len(done) > len(present):
        lines.append(f"left: {len(done) - len(present)} whose original is no longer in the hot folder (archived or deleted)")
    for source, found in conflicts.items():
        taken = ", ".join(f"{name} is {holder}'s" for name, holder in found)
        lines.append(f"left as it is: {source} (its new files would take names of other files: {taken}; "
                     "rename one of them, or change the recipe)")
    return lines


def _under(job: Job, target: Path | None, folders: Folders) -> bool:
    """`target` is None (every file), or the file or a folder above it, absolute or relative to the hot folder."""
    if target is None:
        return True
    wanted = _in_hot_folder(Path(target).expanduser(), folders)
    return wanted in (PurePosixPath("."), job.source) or wanted in job.source.parents


def _exists_in_hot_folder(target: Path, folders: Folders) -> bool:
    relative = _in_hot_folder(Path(target).expanduser(), folders)
    return (folders.input / relative).exists()


def _in_hot_folder(path: Path, folders: Folders) -> PurePosixPath:
    """`path` relative to the hot folder: given inside it, or as a path relative to it."""
    if path.absolute().is_relative_to(folders.input):
        return PurePosixPath(path.absolute().relative_to(folders.input).as_posix())
    if path.is_absolute():
        raise ConfigError(f"{path} is not in the hot folder {folders.input}")
    return PurePosixPath(path.as_posix())


def _send_back(folders: Folders, queue: JobStore, job: Job) -> str:
    """One file back into the hot folder and the queue; a problem is reported, not fatal."""
    assert job.quarantine is not None
    try:
        restore_from_quarantine(folders, quarantined=job.quarantine, source=job.source)
    except (ConfigError, JobError) as exc:
        return f"skipped: {exc}"
    queue.requeue(job)
    return f"queued again: {job.source.as_posix()}"


def _matches(job: Job, target: Path | None, folders: Folders) -> bool:
    if target is None or job.quarantine is None:
        return False
    return names_one_of(target, places={folders.quarantine / job.quarantine, folders.input / job.source},
                        relative={job.quarantine, job.source})


def names_one_of(target: Path, *, places: set[Path], relative: set[PurePosixPath]) -> bool:
    """Whether a path a person typed is one of `places` (absolute, `~` expanded), or one of the
    `relative` paths as given."""
    return Path(target).expanduser().absolute() in places or PurePosixPath(Path(target).as_posix()) in relative
