"""`cutout status` and `cutout retry`: read and steer the queue, with or without a daemon."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO

from daemon.errors import ConfigError
from daemon.outputs import Folders, restore_from_quarantine
from daemon.queue import Job, JobQueue, State
from daemon.runner import QUEUE_FILE, daemon_pid


@dataclass(frozen=True)
class StatusReport:
    counts: dict[State, int]
    running: list[str]
    failures: list[dict[str, str | None]]
    oldest_pending_age: float | None
    daemon_pid: int | None

    def to_json(self) -> str:
        return json.dumps(vars(self), indent=2)


def open_queue(folders: Folders) -> JobQueue:
    path = folders.state / QUEUE_FILE
    if not path.exists():
        raise ConfigError(f"no queue at {path}: the daemon has not run with this state folder yet")
    return JobQueue(path)


def _failure(job: Job, folders: Folders) -> dict[str, str | None]:
    where = str(folders.quarantine / job.quarantine) if job.quarantine else None
    return {"file": job.source.as_posix(), "reason": job.reason, "message": job.message, "quarantined_as": where}


def collect_status(folders: Folders, *, now: float | None = None, last: int = 10) -> StatusReport:
    queue = open_queue(folders)
    try:
        oldest = queue.oldest_pending_since()
        return StatusReport(
            counts=queue.counts(),
            running=[job.source.as_posix() for job in queue.jobs(state="running", limit=50)],
            failures=[_failure(job, folders) for job in queue.jobs(state="failed", limit=last, newest_first=True)],
            oldest_pending_age=None if oldest is None else round((now or time.time()) - oldest, 1),
            daemon_pid=daemon_pid(folders.state),
        )
    finally:
        queue.close()


def print_status(report: StatusReport, *, out: TextIO) -> None:
    daemon = f"running (pid {report.daemon_pid})" if report.daemon_pid else "not running"
    print(f"daemon: {daemon}", file=out)
    print("jobs: " + "  ".join(f"{state} {count}" for state, count in report.counts.items()), file=out)
    if report.oldest_pending_age is not None:
        print(f"oldest pending job waiting: {report.oldest_pending_age:.0f} s", file=out)
    for path in report.running:
        print(f"now processing: {path}", file=out)
    if report.failures:
        print("last failures:", file=out)
    for failure in report.failures:
        print(f"  {failure['file']}: {failure['reason']}: {failure['message']} -> {failure['quarantined_as']}", file=out)


def retry(folders: Folders, *, target: Path | None, every: bool) -> list[str]:
    """Send quarantined files back through the queue; one line per file saying what happened."""
    queue = open_queue(folders)
    try:
        chosen = [job for job in queue.jobs(state="failed", limit=1_000_000) if job.quarantine is not None]
        if not every:
            chosen = [job for job in chosen if _matches(job, target, folders)]
            if not chosen:
                raise ConfigError(f"{target} is not a quarantined file of this daemon (see: cutout status)")
        return [_send_back(folders, queue, job) for job in chosen]
    finally:
        queue.close()


def _send_back(folders: Folders, queue: JobQueue, job: Job) -> str:
    """One file back into the hot folder and the queue; a problem is reported, not fatal."""
    assert job.quarantine is not None
    try:
        restore_from_quarantine(folders, quarantined=job.quarantine, source=job.source)
    except ConfigError as exc:
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
