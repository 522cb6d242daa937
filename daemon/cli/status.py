"""`cutout status`: what the queue holds and what the daemon is doing, with or without a daemon.

Steering the queue (`cutout retry`, `cutout reprocess`, the dashboard's Retry) is daemon.store.steering."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from daemon.errors import QueueDamaged, QueueError
from daemon.pipeline.constants import DOUBTFUL, doubt_reasons
from daemon.settings import QueueSettings
from daemon.store.jobs import Job, State
from daemon.store.session import Live, read_live
from daemon.store.statedir import daemon_pid
from daemon.store.steering import DEFAULT_QUEUE, open_queue


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
    doubtful_above: float = DOUBTFUL
    """`review.threshold`: what counts as doubtful."""
    doubtful: list[dict[str, object]] = field(default_factory=list)
    """The latest cut-outs whose doubt is over `review.threshold`: the file, the score, its parts, and
    whether it waits in the review folder."""

    def to_json(self) -> str:
        return json.dumps(vars(self), indent=2)


def _failure(job: Job, quarantine: Path | None) -> dict[str, str | None]:
    where = str(quarantine / job.quarantine) if job.quarantine and quarantine else None
    return {"file": job.source.as_posix(), "reason": job.reason, "message": job.message, "quarantined_as": where}


def collect_status(
    state: Path, *, queue_settings: QueueSettings = DEFAULT_QUEUE, quarantine: Path | None = None,
    now: float | None = None, last: int = 10, doubtful_above: float = DOUBTFUL,
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
            doubtful=[{"file": job.source.as_posix(), "output": job.output.as_posix(), "doubt": job.doubt,
                       "parts": job.doubt_parts or {}, "waits_for_review": job.state == "review"}
                      for job in queue.doubtful(above=doubtful_above, limit=last)],
            doubtful_above=doubtful_above,
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
    if waiting := report.counts.get("review", 0):
        print(f"WAITING FOR REVIEW: {waiting} cut-out{'s' if waiting != 1 else ''} (cutout review list; "
              "then approve, reject or redo each)", file=out)
    if report.doubtful:
        print(f"doubtful cut-outs (doubt over {report.doubtful_above}: worth a look):", file=out)
    for item in report.doubtful:
        parts = item["parts"]
        assert isinstance(parts, dict)
        held = ", waits for review" if item.get("waits_for_review") else ""
        print(f"  {item['file']}: doubt {item['doubt']:.2f} ({doubt_reasons(parts)}{held})", file=out)
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
