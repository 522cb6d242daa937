"""`cutout status` and `cutout retry`: read and steer the queue, with or without a daemon."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TextIO

from daemon.errors import ConfigError, JobError, QueueDamaged, QueueError, reason_codes
from daemon.folders.outputs import Folders, restore_from_quarantine
from daemon.store.jobs import Job, JobStore, State
from daemon.store.live import Live, read_live
from daemon.folders.routing import SEED_ROUTING, Routing
from daemon.settings import QueueSettings
from daemon.store.statedir import daemon_pid
from daemon.store.configured import open_store

DEFAULT_QUEUE = QueueSettings()


@dataclass(frozen=True)
class StatusReport:
    counts: dict[State, int]
    running: list[str]
    failures: list[dict[str, str | None]]
    oldest_pending_age: float | None
    daemon_pid: int | None
    waiting: list[dict[str, object]] = field(default_factory=list)
    """Files not in the queue yet: still being written and settling, or found incomplete."""
    hot_folder_problem: str | None = None
    """Why the running daemon is paused (its hot folder's volume is gone), or None."""
    workers: list[dict[str, object]] = field(default_factory=list)
    """A fleet's daemons (PostgreSQL store): host, pid, device, model, the watcher, last heartbeat."""
    store_problem: str | None = None
    """The job store cannot be reached (this command's try), and since when (this machine's daemon)."""

    def to_json(self) -> str:
        return json.dumps(vars(self), indent=2)


def open_queue(state: Path, *, queue: QueueSettings) -> JobStore:
    # A SQLite queue is checked first: a damaged one gets a clear refusal, not a traceback or a
    # healthy-looking status, and an empty file is never given a fresh schema that would make it
    # look like a real queue.
    return open_store(queue, state=state, existing=True)


def _failure(job: Job, quarantine: Path | None) -> dict[str, str | None]:
    where = str(quarantine / job.quarantine) if job.quarantine and quarantine else None
    return {"file": job.source.as_posix(), "reason": job.reason, "message": job.message, "quarantined_as": where}


def collect_status(
    state: Path, *, queue_settings: QueueSettings = DEFAULT_QUEUE, quarantine: Path | None = None,
    now: float | None = None, last: int = 10,
) -> StatusReport:
    """From the state folder alone; `quarantine` (else the one the daemon last ran with) for full paths."""
    now = now or time.time()
    try:
        queue = open_queue(state, queue=queue_settings)
    except QueueError as exc:
        if isinstance(exc, QueueDamaged):
            raise
        return _unreachable(state, exc, now=now)
    try:
        oldest = queue.oldest_pending_since()
        quarantine = quarantine or queue.folder("quarantine")
        pid = daemon_pid(state)
        live = read_live(state) if pid is not None else None
        return StatusReport(
            counts=queue.counts(),
            running=[job.source.as_posix() for job in queue.jobs(state="running", limit=50)],
            failures=[_failure(job, quarantine) for job in queue.jobs(state="failed", limit=last, newest_first=True)],
            oldest_pending_age=None if oldest is None else round(now - oldest, 1),
            daemon_pid=pid,
            waiting=_waiting(live, now=now),
            hot_folder_problem=live.volume_problem if live else None,
            workers=[{**asdict(w), "seen_ago": round(now - w.seen_at, 1),
                      "alive": now - w.seen_at <= queue_settings.lease_seconds} for w in queue.fleet()],
        )
    finally:
        queue.close()


def _unreachable(state: Path, exc: QueueError, *, now: float) -> StatusReport:
    """What this machine still knows when the store is away: its daemon, and since when it lost it."""
    pid = daemon_pid(state)
    live = read_live(state) if pid is not None else None
    seen = f"; this machine's daemon: {live.store_problem}" if live and live.store_problem else ""
    return StatusReport(counts={}, running=[], failures=[], oldest_pending_age=None, daemon_pid=pid,
                        waiting=_waiting(live, now=now), hot_folder_problem=live.volume_problem if live else None,
                        store_problem=f"{exc}{seen}")


def _waiting(live: Live | None, *, now: float) -> list[dict[str, object]]:
    if live is None:
        return []
    since = max(0.0, now - live.updated)
    return [{**asdict(w), "waiting": round(w.waiting + since, 1)} for w in live.waiting]


def print_status(report: StatusReport, *, out: TextIO) -> None:
    daemon = f"running (pid {report.daemon_pid})" if report.daemon_pid else "not running"
    print(f"daemon: {daemon}", file=out)
    if report.hot_folder_problem:
        print(f"PAUSED: {report.hot_folder_problem} (nothing is lost; it resumes when the folder is back)", file=out)
    if report.store_problem:
        print(f"STORE UNREACHABLE: {report.store_problem} (the daemons wait for it; nothing is lost)", file=out)
        return
    print("jobs: " + "  ".join(f"{state} {count}" for state, count in report.counts.items()), file=out)
    if report.oldest_pending_age is not None:
        print(f"oldest pending job waiting: {report.oldest_pending_age:.0f} s", file=out)
    for path in report.running:
        print(f"now processing: {path}", file=out)
    _print_fleet(report.workers, out=out)
    unqueued = [file for file in report.waiting if file.get("unqueued")]
    if unqueued:
        print(f"NOT QUEUED: {len(unqueued)} settled file{'s' if len(unqueued) != 1 else ''} the job store could not "
              f"take ({unqueued[0]['unqueued']}); offered again until it can: free space on the state folder's disk",
              file=out)
    for file in report.waiting:
        print(f"not queued yet: {file['path']} ({file['size']} bytes, {_why_waiting(file)}, {file['waiting']:.0f} s)",
              file=out)
    if report.failures:
        print("last failures:", file=out)
    for failure in report.failures:
        print(f"  {failure['file']}: {failure['reason']}: {failure['message']} -> {failure['quarantined_as']}", file=out)


def _why_waiting(file: dict[str, object]) -> str:
    if file.get("unqueued"):
        return "settled; the job store could not take it yet"
    return "incomplete, waiting for the rest" if file["incomplete"] else "still being written or settling"


def _print_fleet(workers: list[dict[str, object]], *, out: TextIO) -> None:
    if workers:
        print(f"fleet: {len(workers)} daemons", file=out)
    for w in workers:
        if not w["alive"]:  # killed, or its machine gone: three heartbeats missed
            print(f"  {w['host']} pid {w['pid']}: not heard from for {w['seen_ago']:.0f} s (stopped or dead; "
                  "its jobs go back to the queue when their leases run out)", file=out)
            continue
        role = "watcher" if w["leader"] else "worker"
        doing = f", on {w['current']}" if w["current"] else ""
        print(f"  {w['host']} pid {w['pid']} ({role}, {w['device']}, {w['model']}): {w['done']} done{doing},"
              f" last heard {w['seen_ago']:.0f} s ago", file=out)


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
    absolute = Path(target).expanduser().absolute()
    candidates = {folders.quarantine / job.quarantine, folders.input / job.source}
    relative = PurePosixPath(Path(target).as_posix())
    return absolute in candidates or relative in (job.quarantine, job.source)
