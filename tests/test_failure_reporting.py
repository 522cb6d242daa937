"""A failure is named the same in `cutout process` and `cutout watch`, and logged where people look.

The disks here are real: a 64 KiB tmpfs mounted for the test (full, or read-only), so the
errors are the kernel's own ENOSPC and EROFS. Mounting needs root (CI runs as root); elsewhere
those tests are skipped with the reason.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pytest

from daemon.folders.outputs import Folders
from daemon.logs import configure_logging
from daemon.pipeline import PipelineParams
from daemon.settings import LoggingSettings, QueueSettings
from daemon.store.jobs import Fingerprint
from daemon.store.sqlite import JobQueue
from daemon.testing import BrightModel, FakeClock
from daemon.work.batch import run_batch
from daemon.work.worker import Worker
from tests.conftest import fill_disk, small_tmpfs, subject_image, write_image

BOX = (100, 80, 300, 220)


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs of its own, unmounted afterwards."""
    with small_tmpfs(tmp_path / "volume") as mount:
        yield mount


def _fill(volume: Path) -> None:
    """Write until the kernel says the volume is full."""
    fill_disk(volume)


def _read_only(volume: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(volume)], check=True)


def _process_reasons(tmp_path: Path, output: Path) -> set[str]:
    """`cutout process` (its run_batch) over one good photo onto `output`: the failure reasons."""
    write_image(tmp_path / "batch-in" / "shoot" / "a.jpg", subject_image(300, 400, BOX))
    report = run_batch(tmp_path / "batch-in", output, model=BrightModel(), params=PipelineParams(), progress=False)
    assert report.done == []
    return {failure.reason for failure in report.failed}


def _make_worker(folders: Folders, queue: JobQueue, clock: FakeClock) -> Worker:
    return Worker(
        model=BrightModel(), params=PipelineParams(), folders=folders, queue=queue,
        queue_settings=QueueSettings(max_attempts=3, retry_base_seconds=5, retry_max_seconds=60),
        policy="keep", in_flight=2, cpu_threads=2, clock=clock,
    )


def _drain(worker: Worker, queue: JobQueue) -> None:
    for _ in range(200):
        worker.run_once(idle_wait=0.02)
        counts = queue.counts()
        if counts["running"] == 0 and (counts["pending"] == 0 or queue.next_retry_in()):
            worker.close()
            return
    raise AssertionError(f"worker did not drain: {queue.counts()}")


def _folders(tmp_path: Path, *, output: Path) -> Folders:
    folders = Folders(input=tmp_path / "in", output=output, quarantine=tmp_path / "q",
                      archive=tmp_path / "archive", state=tmp_path / "state")
    for path in (folders.input, folders.quarantine, folders.state):
        path.mkdir()
    return folders


def _watch_reason(tmp_path: Path, output: Path) -> str | None:
    """`cutout watch` (its worker) on the same photo onto `output`: the reason its job records."""
    folders = _folders(tmp_path, output=output)
    clock = FakeClock()
    queue = JobQueue(folders.state / "queue.sqlite3", clock=clock)
    path = write_image(folders.input / "shoot" / "a.jpg", subject_image(300, 400, BOX))
    queue.offer(PurePosixPath("shoot/a.jpg"), Fingerprint.of(path))
    _drain(_make_worker(folders, queue, clock), queue)
    job = queue.get(PurePosixPath("shoot/a.jpg"))
    assert job is not None and job.state == "pending"  # the machine's fault: retried, never quarantined
    return job.reason


def test_a_full_disk_is_disk_full_in_process_and_in_watch(tmp_path: Path, volume: Path) -> None:
    (volume / "out").mkdir()
    _fill(volume)
    assert _process_reasons(tmp_path, volume / "out") == {"disk_full"}
    assert _watch_reason(tmp_path, volume / "out") == "disk_full"


def test_a_read_only_output_is_permission_denied_in_process_and_in_watch(tmp_path: Path, volume: Path) -> None:
    (volume / "out" / "shoot").mkdir(parents=True)
    _read_only(volume)
    assert _process_reasons(tmp_path, volume / "out") == {"permission_denied"}
    assert _watch_reason(tmp_path, volume / "out") == "permission_denied"


# --- Log levels --------------------------------------------------------------------------------
def _job_events(log: io.StringIO) -> list[dict[str, object]]:
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    return [event for event in events if event.get("event") == "job"]


def _good_and_dark_logged(tmp_path: Path, *, level: Literal["info", "warning"]) -> tuple[Folders, list[dict[str, object]]]:
    """A good photo and a dark one through the worker, logged as JSON at `level`: the job events."""
    log = io.StringIO()
    configure_logging(LoggingSettings(level=level, format="json"), stream=log)
    folders = _folders(tmp_path, output=tmp_path / "out")
    folders.output.mkdir()
    clock = FakeClock()
    queue = JobQueue(folders.state / "queue.sqlite3", clock=clock)
    for rel, rgb in (("good.jpg", subject_image(300, 400, BOX)), ("dark.png", np.full((200, 200, 3), 20, np.uint8))):
        queue.offer(PurePosixPath(rel), Fingerprint.of(write_image(folders.input / rel, rgb)))
    _drain(_make_worker(folders, queue, clock), queue)
    return folders, _job_events(log)


def test_at_level_warning_the_log_keeps_every_quarantine_and_drops_the_successes(tmp_path: Path) -> None:
    folders, events = _good_and_dark_logged(tmp_path, level="warning")
    assert (folders.output / "good.png").exists() and (folders.quarantine / "dark.png").exists()
    assert [(event["path"], event["outcome"], event["reason"], event["level"]) for event in events] == [
        ("dark.png", "quarantined", "no_foreground", "warning")
    ]


def test_a_retry_for_a_machine_fault_is_a_warning_too(tmp_path: Path) -> None:
    log = io.StringIO()
    configure_logging(LoggingSettings(level="warning", format="json"), stream=log)
    reason = _watch_reason(tmp_path, tmp_path / "missing-output")  # the output folder is gone
    assert reason == "output_missing"
    assert [(event["outcome"], event["level"]) for event in _job_events(log)] == [("retry", "warning")]


def test_a_done_jobs_event_states_its_doubt_and_a_quarantined_ones_has_none(tmp_path: Path) -> None:
    _, logged = _good_and_dark_logged(tmp_path, level="info")
    events = {str(event["path"]): event for event in logged}
    done, failed = events["good.jpg"], events["dark.png"]
    assert isinstance(done["doubt"], float) and 0.0 <= done["doubt"] <= 1.0
    assert set(done["doubt_parts"]) == {"fog", "unstable", "borders", "area", "pieces", "unfounded"}  # type: ignore[arg-type]
    assert "doubt" not in failed and "doubt_parts" not in failed
