"""A damaged, empty or missing queue database (issue 10, defect 6).

Each damage is made for real on a real SQLite file: garbage over one b-tree page, a
header that is no longer SQLite's, a file truncated to zero bytes, a file deleted
next to existing cutouts. The rebuild is checked in-process on real folders; the
refusals, exit statuses and the automatic rebuild against the real `cutout watch`
process (marked slow).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
import pytest

from daemon.cli.context import Context, current_context
from daemon.cli.doctor import check_queue
from daemon.cli.main import main
from daemon.errors import ConfigError, QueueDamaged, QueueError, from_sqlite_error
from daemon.folders.layout import content_hash
from daemon.folders.outputs import ERROR_SUFFIX, ErrorReport, Folders
from daemon.settings import load_settings
from daemon.store.jobs import Fingerprint
from daemon.store.rebuild import pair_outputs, prepare_queue, rebuild_queue
from daemon.store.sqlite import JobQueue
from daemon.store.statedir import acquire_lock, inspect_queue, open_existing_queue, queue_path
from daemon.store.steering import retry
from daemon.watch.runner import Daemon
from tests import harness
from daemon.testing import BrightModel
from tests.conftest import subject_image, write_image

Damage = Literal["page", "header", "zero", "missing"]
NOW = 1_790_000_000.0
"""A fixed clock: the moved-aside file is named after it."""
STAMP = "20260921T141320Z"
BOX = (100, 80, 300, 220)


# --- Making real damage -----------------------------------------------------------------------------
def garbage_over(path: Path, *, btree: str) -> None:
    """Garbage over the root page of one table or index: the file still opens, its header is fine."""
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (btree,)).fetchone()[0]
    with open(path, "r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\xa5" * page_size)


def damage(path: Path, how: Damage) -> None:
    """Damage a closed (checkpointed) queue file the way disks and people do."""
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0, "WAL not checkpointed"
    if how == "page":
        garbage_over(path, btree="jobs")
    elif how == "header":
        with open(path, "r+b") as handle:
            handle.write(b"not a database!\x00")
    elif how == "zero":
        os.truncate(path, 0)
    else:
        path.unlink()
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)


def make_folders(root: Path) -> Folders:
    folders = Folders(input=root / "in", output=root / "out", quarantine=root / "quarantine",
                      archive=root / "archive", state=root / "state")
    for folder in (folders.input, folders.output, folders.state):
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def queue_with_jobs(folders: Folders, count: int = 30) -> Path:
    """A real queue with done rows, closed (so its WAL is merged into the file)."""
    queue = JobQueue(queue_path(folders.state))
    queue.bind_input(folders.input)
    for index in range(count):
        fingerprint = Fingerprint(1000 + index, 1)
        queue.offer(PurePosixPath(f"old/{index:03d}.jpg"), fingerprint)
        job = queue.claim()
        assert job is not None
        queue.finish(job, content_hash=f"{index:064x}", fingerprint=fingerprint, publish=lambda: None)
    queue.close()
    return queue_path(folders.state)


def cutout_of(folders: Folders, rel: str, *, output: str | None = None) -> Path:
    """An input, then its cutout written after it, as the daemon leaves them."""
    source = write_image(folders.input / rel, subject_image(120, 160, (30, 20, 120, 90)))
    target = folders.output / (output or str(PurePosixPath(rel).with_suffix(".png")))
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 3] = 255
    target.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(target), rgba)
    stat = source.stat()
    later = max(stat.st_mtime_ns, stat.st_ctime_ns) + 1_000_000_000
    os.utime(target, ns=(later, later))  # written after the input, as the daemon does
    return source


def quarantined(folders: Folders, rel: str, *, reason: str = "no_foreground", last: float = NOW - 50) -> Path:
    """An original in quarantine with its error report, as the worker leaves it."""
    where = folders.quarantine / rel
    write_image(where, np.full((60, 80, 3), 20, np.uint8))
    report = ErrorReport(file=rel, reason=reason, message=f"{reason}: found on disk", attempts=1,
                         first_seen=NOW - 100, last_attempt=last)
    where.with_name(where.name + ERROR_SUFFIX).write_bytes(report.to_json(quarantined_as=where))
    return where


def offer_again(queue: JobQueue, folders: Folders, rel: str) -> str:
    path = folders.input / rel
    return queue.offer(PurePosixPath(rel), Fingerprint.of(path), content_hash=lambda: content_hash(path))


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    return make_folders(tmp_path)


# --- Finding the damage --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("how", "state", "words"),
    [
        ("page", "damaged", "quick_check"),
        ("header", "damaged", "file is not a database"),
        ("zero", "empty", "0 bytes"),
        ("missing", "missing", ""),
    ],
)
def test_each_damage_is_named_for_what_it_is(folders: Folders, how: Damage, state: str, words: str) -> None:
    path = queue_with_jobs(folders)
    assert inspect_queue(path).state == "healthy"
    damage(path, how)
    health = inspect_queue(path)
    assert (health.state, words in health.problem) == (state, True)
    if how != "missing":
        assert inspect_queue(path, thorough=True).state == state


def test_the_check_changes_nothing_in_the_file(folders: Folders) -> None:
    path = queue_with_jobs(folders)
    damage(path, "zero")
    inspect_queue(path, thorough=True)
    assert path.stat().st_size == 0  # still empty: nobody gave it a fresh schema


@pytest.mark.parametrize("how", ["page", "header"])
def test_opening_a_damaged_queue_raises_queue_damaged_never_a_sqlite_error(folders: Folders, how: Damage) -> None:
    path = queue_with_jobs(folders)
    damage(path, how)
    with pytest.raises(QueueDamaged) as caught:
        queue = open_existing_queue(path)
        queue.counts()
    assert str(path) in str(caught.value) and "cutout queue rebuild" in str(caught.value)


def test_a_locked_queue_is_a_queue_error_a_restart_may_fix_not_damage(folders: Folders) -> None:
    path = queue_with_jobs(folders)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    waiter = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError) as raised:
            waiter.execute("BEGIN IMMEDIATE")  # a second writer: "database is locked"
        error = from_sqlite_error(raised.value, path=path)
    finally:
        waiter.close()
        holder.execute("ROLLBACK")
        holder.close()
    assert isinstance(error, QueueError) and not isinstance(error, QueueDamaged)
    assert error.__cause__ is raised.value and str(path) in str(error)


# --- The command line: status, retry and watch on a damaged queue ------------------------------------------
def _flags(folders: Folders) -> list[str]:
    return ["--input", str(folders.input), "--output", str(folders.output), "--state", str(folders.state),
            "--quarantine", str(folders.quarantine)]


@pytest.mark.parametrize("how", ["page", "header"])
@pytest.mark.parametrize("command", [["status"], ["retry", "--all"]])
def test_status_and_retry_on_a_damaged_queue_say_what_to_run_without_a_traceback(
    folders: Folders, how: Damage, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    damage(queue_with_jobs(folders), how)
    assert main([*command, *_flags(folders)]) == QueueDamaged.exit_status
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(queue_path(folders.state)) in err
    assert f"Run: cutout queue rebuild --input {folders.input} --output {folders.output}" in err


def test_status_refuses_an_empty_queue_and_leaves_it_empty_for_the_daemon_to_rebuild(
    folders: Folders, capsys: pytest.CaptureFixture[str]
) -> None:
    damage(queue_with_jobs(folders), "zero")
    assert main(["status", *_flags(folders)]) == QueueDamaged.exit_status
    assert "is empty (0 bytes)" in capsys.readouterr().err
    assert queue_path(folders.state).stat().st_size == 0


def _context(*, must_act_status: int) -> Context:
    return replace(current_context(), must_act_status=must_act_status)


@pytest.mark.parametrize("how", ["page", "header"])
def test_watch_refuses_a_damaged_queue_before_loading_the_model(
    folders: Folders, how: Damage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage(queue_with_jobs(folders), how)
    absent_model = str(tmp_path / "no-such-model.torchscript")  # loading it would fail with exit 2
    config = tmp_path / "config.yaml"
    config.write_text(f"folders:\n  input: {folders.input}\n  output: {folders.output}\n  state: {folders.state}\n")
    args = ["watch", "--config", str(config), "--model", absent_model, "--device", "cpu"]
    assert main(args, context=_context(must_act_status=78)) == 78
    err = capsys.readouterr().err
    assert f"Run: cutout queue rebuild --config {config}" in err and "Traceback" not in err
    # What the LaunchAgent gets (CUTOUT_MUST_ACT_STATUS=0): a status launchd does not restart on.
    assert main(args, context=_context(must_act_status=0)) == 0
    assert "refusing to use it" in capsys.readouterr().err


def test_the_must_act_status_comes_from_the_environment_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUTOUT_MUST_ACT_STATUS", raising=False)
    assert current_context().must_act_status == 78
    monkeypatch.setenv("CUTOUT_MUST_ACT_STATUS", "0")
    assert current_context().must_act_status == 0
    monkeypatch.setenv("CUTOUT_MUST_ACT_STATUS", "later")
    with pytest.raises(ConfigError, match="CUTOUT_MUST_ACT_STATUS"):
        current_context()


# --- The running daemon meets damage -----------------------------------------------------------------------
def _daemon(folders: Folders) -> Daemon:
    settings = load_settings(overrides={
        "folders.input": folders.input, "folders.output": folders.output, "folders.state": folders.state,
        "folders.quarantine": folders.quarantine, "watch.settle_seconds": 0.1, "pipeline.target_size": 64,
    })
    return Daemon(settings=settings, folders=folders, model=BrightModel())


def test_damage_the_daemon_finds_itself_is_a_queue_damaged_error_not_a_traceback(folders: Folders) -> None:
    """Daemon.run() without the start-up check (damage that appears after it): still no raw sqlite error."""
    damage(queue_with_jobs(folders), "header")
    with pytest.raises(QueueDamaged):
        _daemon(folders).run()
    acquire_lock(folders.state).close()  # the lock was given back


def test_damage_found_while_running_stops_the_daemon_with_the_must_act_status(folders: Folders) -> None:
    """Garbage over the index of job names: start-up's reads pass, the first new file's lookup hits it."""
    garbage_over(queue_with_jobs(folders), btree="sqlite_autoindex_jobs_1")  # the UNIQUE index on source
    daemon = _daemon(folders)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(daemon.run()))
    runner.start()
    write_image(folders.input / "new.jpg", subject_image(120, 160, (30, 20, 120, 90)))
    runner.join(timeout=60)
    if runner.is_alive():  # it kept running on a damaged queue: stop it, then fail
        daemon.stop.set()
        runner.join(timeout=30)
    assert result == [QueueDamaged.exit_status]


# --- Rebuilding ---------------------------------------------------------------------------------------------
def test_rebuild_adopts_current_cutouts_and_quarantine_and_keeps_the_damaged_file(folders: Folders) -> None:
    damage(queue_with_jobs(folders), "page")
    damaged_bytes = queue_path(folders.state).read_bytes()
    cutout_of(folders, "a.jpg")
    cutout_of(folders, "shoot/day1/b.png")
    stale = cutout_of(folders, "c.jpg")
    os.utime(stale, ns=(stale.stat().st_mtime_ns + 10**10,) * 2)  # replaced after its cutout was made
    orphan = folders.output / "gone.png"
    orphan.write_bytes(b"kept as it is")
    quarantined(folders, "shoot/dark.jpg")

    report = rebuild_queue(folders, clock=lambda: NOW)

    aside = folders.state / f"queue.sqlite3.damaged-{STAMP}"
    assert report.moved[0] == aside and aside.read_bytes() == damaged_bytes
    assert (report.done, report.quarantined, report.not_done) == (2, 1, 1)
    assert orphan.read_bytes() == b"kept as it is"
    queue = open_existing_queue(queue_path(folders.state))
    try:
        done = {job.source.as_posix(): job.output.as_posix() for job in queue.jobs(state="done", limit=100)}
        assert done == {"a.jpg": "a.png", "shoot/day1/b.png": "shoot/day1/b.png"}
        # Nothing redone: the watcher's offer of each adopted file is "unchanged", the stale one is queued.
        assert offer_again(queue, folders, "a.jpg") == "unchanged"
        assert offer_again(queue, folders, "shoot/day1/b.png") == "unchanged"
        assert offer_again(queue, folders, "c.jpg") == "queued"
        (failed,) = queue.jobs(state="failed")
        assert (failed.source, failed.reason, failed.quarantine) == (
            PurePosixPath("shoot/dark.jpg"), "no_foreground", PurePosixPath("shoot/dark.jpg"))
    finally:
        queue.close()


def test_a_quarantined_file_is_retryable_after_a_rebuild(folders: Folders) -> None:
    damage(queue_with_jobs(folders), "header")
    quarantined(folders, "shoot/dark.jpg")
    rebuild_queue(folders, clock=lambda: NOW)
    assert retry(folders, target=None, every=True) == ["queued again: shoot/dark.jpg"]
    assert (folders.input / "shoot" / "dark.jpg").is_file()
    queue = open_existing_queue(queue_path(folders.state))
    try:
        (job,) = queue.jobs(state="pending")
        assert job.source == PurePosixPath("shoot/dark.jpg")
    finally:
        queue.close()


def test_a_re_dropped_copy_of_the_same_bytes_is_not_redone_after_a_rebuild(folders: Folders) -> None:
    source = cutout_of(folders, "a.jpg")
    rebuild_queue(folders, clock=lambda: NOW)
    data = source.read_bytes()
    source.unlink()
    source.write_bytes(data)  # the same photo exported again: new mtime, same content
    later = source.stat().st_mtime_ns + 10**10
    os.utime(source, ns=(later, later))
    queue = open_existing_queue(queue_path(folders.state))
    try:
        assert offer_again(queue, folders, "a.jpg") == "unchanged"
    finally:
        queue.close()


def test_only_the_newest_error_report_of_a_file_is_recorded_and_a_refile_in_the_hot_folder_wins(
    folders: Folders,
) -> None:
    quarantined(folders, "x.jpg", last=NOW - 90)
    quarantined(folders, "x (2).jpg", last=NOW - 10)
    newest = folders.quarantine / "x (2).jpg"
    newest.with_name(newest.name + ERROR_SUFFIX).write_text(
        newest.with_name(newest.name + ERROR_SUFFIX).read_text().replace('"x (2).jpg"', '"x.jpg"'))
    quarantined(folders, "y.jpg")
    write_image(folders.input / "y.jpg", subject_image(120, 160, (30, 20, 120, 90)))  # y is back in the hot folder
    (folders.quarantine / "broken.jpg.error.json").write_text("{not json")
    report = rebuild_queue(folders, clock=lambda: NOW)
    queue = open_existing_queue(queue_path(folders.state))
    try:
        assert [(j.source.as_posix(), j.quarantine) for j in queue.jobs(state="failed")] == [
            ("x.jpg", PurePosixPath("x (2).jpg"))]
    finally:
        queue.close()
    assert report.quarantined == 1 and len(report.notes) == 3


def test_displaced_names_go_to_the_input_that_owns_them(folders: Folders) -> None:
    """x.png arrived first and got x.png; x.jpg then got x.jpg.png (layout rules). Sorted order is the reverse."""
    cutout_of(folders, "x.png", output="x.png")
    cutout_of(folders, "x.jpg", output="x.jpg.png")
    rebuild_queue(folders, clock=lambda: NOW)
    queue = open_existing_queue(queue_path(folders.state))
    try:
        done = {job.source.as_posix(): job.output.as_posix() for job in queue.jobs(state="done")}
    finally:
        queue.close()
    assert done == {"x.png": "x.png", "x.jpg": "x.jpg.png"}


def test_a_copy_that_kept_an_old_date_but_arrived_after_its_cutout_is_redone(folders: Folders) -> None:
    """Finder and `cp -p` keep the modification date; the arrival (ctime) is what tells the cutout is older."""
    source = cutout_of(folders, "a.jpg")
    year_2020, year_2021 = 1_580_000_000 * 10**9, 1_610_000_000 * 10**9
    os.utime(folders.output / "a.png", ns=(year_2021, year_2021))  # the cutout of an earlier a.jpg
    os.utime(source, ns=(year_2020, year_2020))  # the new a.jpg: an old photo, copied in just now
    report = rebuild_queue(folders, clock=lambda: NOW)
    assert (report.done, report.not_done) == (0, 1)


def test_a_cutout_cut_short_or_not_a_png_is_not_taken_for_done(folders: Folders) -> None:
    cutout_of(folders, "a.jpg")
    cutout_of(folders, "b.jpg")
    for name, keep in (("a.png", 0.5), ("b.png", 0.0)):
        output = folders.output / name
        stat, data = output.stat(), output.read_bytes()
        output.write_bytes(data[: int(len(data) * keep)] or b"GIF89a not a png")
        os.utime(output, ns=(stat.st_mtime_ns, stat.st_mtime_ns))  # still newer than its input
    report = rebuild_queue(folders, clock=lambda: NOW)
    assert (report.done, report.not_done) == (0, 2)


def test_a_file_that_arrived_after_the_cutout_of_its_name_is_not_taken_for_done() -> None:
    """x.png's cutout is x.png; x.jpg came later and was still pending: x.png is not x.jpg's."""
    names = {PurePosixPath("x.png")}
    made_after = {PurePosixPath("x.png")}  # the cutout is newer than x.png, older than x.jpg
    pairs = pair_outputs(
        [PurePosixPath("x.jpg"), PurePosixPath("x.png")],
        exists=lambda source, output: output in names,
        current=lambda source, output: source in made_after,
    )
    assert pairs == {PurePosixPath("x.png"): PurePosixPath("x.png")}


def test_rebuild_refuses_while_a_daemon_holds_the_lock(folders: Folders) -> None:
    path = queue_with_jobs(folders)
    damage(path, "page")
    before = path.read_bytes()
    lock = acquire_lock(folders.state)
    try:
        with pytest.raises(ConfigError, match="stop it first"):
            rebuild_queue(folders, clock=lambda: NOW)
    finally:
        lock.close()
    assert path.read_bytes() == before and not list(folders.state.glob("*.damaged-*"))


def test_rebuild_refuses_without_the_hot_folder(folders: Folders) -> None:
    cutout_of(folders, "a.jpg")
    (folders.input / "a.jpg").unlink()
    folders.input.rmdir()
    with pytest.raises(ConfigError, match="folders.input"):
        rebuild_queue(folders, clock=lambda: NOW)
    assert not queue_path(folders.state).exists()


def test_rebuild_moves_the_wal_and_shm_with_the_file(folders: Folders) -> None:
    path = queue_with_jobs(folders)
    damage(path, "header")
    Path(f"{path}-wal").write_bytes(b"old wal")
    Path(f"{path}-shm").write_bytes(b"old shm")
    report = rebuild_queue(folders, clock=lambda: NOW)
    aside = folders.state / f"queue.sqlite3.damaged-{STAMP}"
    assert report.moved == [aside, Path(f"{aside}-wal"), Path(f"{aside}-shm")]
    assert Path(f"{aside}-wal").read_bytes() == b"old wal"
    assert inspect_queue(path).state == "healthy"
    assert not list(folders.state.glob("*.rebuilding*"))


def test_the_queue_rebuild_command_prints_what_it_rebuilt(
    folders: Folders, capsys: pytest.CaptureFixture[str]
) -> None:
    damage(queue_with_jobs(folders), "page")
    cutout_of(folders, "a.jpg")
    quarantined(folders, "dark.jpg")
    assert main(["queue", "rebuild", *_flags(folders)]) == 0
    out = capsys.readouterr().out
    assert "the old queue is damaged (quick_check:" in out
    assert f"moved to {folders.state}/queue.sqlite3.damaged-" in out
    assert "1 done (kept, not redone), 1 quarantined (cutout retry works on them)" in out


# --- At start: empty or missing is rebuilt by itself --------------------------------------------------------
@pytest.mark.parametrize("how", ["zero", "missing"])
def test_an_empty_or_missing_queue_is_rebuilt_at_start_from_the_outputs(folders: Folders, how: Damage) -> None:
    damage(queue_with_jobs(folders), how)
    cutout_of(folders, "a.jpg")
    quarantined(folders, "dark.jpg")
    report = prepare_queue(folders, clock=lambda: NOW)
    assert report is not None and (report.done, report.quarantined) == (1, 1)
    assert report.moved == ([folders.state / f"queue.sqlite3.damaged-{STAMP}"] if how == "zero" else [])
    queue = open_existing_queue(queue_path(folders.state))
    try:
        assert offer_again(queue, folders, "a.jpg") == "unchanged"
    finally:
        queue.close()


@pytest.mark.parametrize("how", ["page", "header"])
def test_a_damaged_queue_is_refused_at_start_not_rebuilt(folders: Folders, how: Damage) -> None:
    path = queue_with_jobs(folders)
    damage(path, how)
    before = path.read_bytes()
    with pytest.raises(QueueDamaged):
        prepare_queue(folders, clock=lambda: NOW)
    assert path.read_bytes() == before and not list(folders.state.glob("*.damaged-*"))


def test_a_healthy_queue_is_left_alone_at_start(folders: Folders) -> None:
    path = queue_with_jobs(folders)
    cutout_of(folders, "a.jpg")
    assert prepare_queue(folders, clock=lambda: NOW) is None
    queue = open_existing_queue(path)
    try:
        assert queue.counts()["done"] == 30 and queue.get(PurePosixPath("a.jpg")) is None
    finally:
        queue.close()


# --- Doctor -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("how", "status"), [(None, "ok"), ("page", "FAIL"), ("header", "FAIL"), ("zero", "warn"), ("missing", "ok")]
)
def test_doctor_runs_the_integrity_check_and_names_the_fix(folders: Folders, how: Damage | None, status: str) -> None:
    path = queue_with_jobs(folders)
    if how is not None:
        damage(path, how)
    check = check_queue(folders, given="--config /etc/cutout.yaml")
    assert (check.name, check.status) == ("queue", status)
    if status != "ok":
        assert str(path) in check.detail and "cutout queue rebuild --config /etc/cutout.yaml" in check.fix


# --- The real daemon process --------------------------------------------------------------------------------
def _cli(daemon: harness.DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args, "--config", str(daemon.config)],
                          capture_output=True, text=True, timeout=120, check=False)


def _first_life(tmp_path: Path, model: Path, started: list[harness.DaemonProcess]) -> harness.DaemonProcess:
    """A daemon that made three cutouts and quarantined one file, then stopped cleanly."""
    daemon = harness.DaemonProcess(tmp_path / "d", model=str(model), settings={"pipeline": {"target_size": 256}})
    started.append(daemon)
    for name in ("a.jpg", "shoot/b.jpg", "shoot/c.png"):
        write_image(daemon.input / name, subject_image(300, 400, BOX))
    write_image(daemon.input / "dark.png", np.full((300, 400, 3), 20, np.uint8))
    daemon.start()
    daemon.wait_for(lambda: len(daemon.outputs()) == 3 and len(daemon.quarantined()) == 1, what="first life")
    assert daemon.stop() == 0
    return daemon


def _jobs_of(daemon: harness.DaemonProcess, path: str) -> list[dict[str, Any]]:
    return [event for event in daemon.jobs() if event.get("path") == path]


def _new_life_processes_only_new_files(daemon: harness.DaemonProcess) -> None:
    before, lives = len(daemon.jobs()), daemon.started_count()
    daemon.start(wait=False)  # the harness counts refused starts too: wait for this one's own event
    daemon.wait_for(lambda: daemon.started_count() == lives + 1, what="daemon_started")
    write_image(daemon.input / "new.jpg", subject_image(300, 400, BOX))
    # the job event follows the published output: wait for the event, not the file
    daemon.wait_for(lambda: bool(_jobs_of(daemon, "new.jpg")), what="the new file's job")
    assert "new.png" in daemon.outputs()
    assert [e["path"] for e in daemon.jobs()[before:]] == ["new.jpg"]  # nothing of the first life redone


@pytest.mark.slow
def test_garbage_in_one_page_stops_the_daemon_and_a_rebuild_loses_nothing(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    daemon = _first_life(tmp_path, torchscript_model, started)
    damage(daemon.state / "queue.sqlite3", "page")
    daemon.start(wait=False)
    assert daemon.wait_for_exit() == QueueDamaged.exit_status
    assert "Traceback" not in daemon.log.read_text()
    assert f"Run: cutout queue rebuild --config {daemon.config}" in daemon.log.read_text()
    status = _cli(daemon, "status")
    assert status.returncode == QueueDamaged.exit_status and "is damaged" in status.stderr
    assert "Traceback" not in status.stderr

    rebuilt = _cli(daemon, "queue", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "3 done (kept, not redone), 1 quarantined" in rebuilt.stdout
    (aside,) = daemon.state.glob("queue.sqlite3.damaged-*Z")  # the damaged file, kept (its -wal, -shm beside it)
    assert f"moved to {aside}" in rebuilt.stdout

    _new_life_processes_only_new_files(daemon)
    again = _cli(daemon, "retry", "--all")
    assert again.returncode == 0 and "queued again: dark.png" in again.stdout
    daemon.wait_for(lambda: len(_jobs_of(daemon, "dark.png")) == 2, what="the retried file's second job")
    assert daemon.stop() == 0
    assert [len(_jobs_of(daemon, name)) for name in ("a.jpg", "shoot/b.jpg", "shoot/c.png")] == [1, 1, 1]


@pytest.mark.slow
def test_header_damage_exits_78_without_a_traceback_and_0_for_launchd(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _first_life(tmp_path, torchscript_model, started)
    damage(daemon.state / "queue.sqlite3", "header")
    daemon.start(wait=False)
    assert daemon.wait_for_exit() == 78
    monkeypatch.setenv("CUTOUT_MUST_ACT_STATUS", "0")  # what the LaunchAgent sets
    daemon.start(wait=False)
    assert daemon.wait_for_exit() == 0
    log = daemon.log.read_text()
    assert "Traceback" not in log and log.count("file is not a database") == 2
    assert daemon.started_count() == 1  # neither refused start got as far as the model


@pytest.mark.slow
@pytest.mark.parametrize("how", ["zero", "missing"])
def test_a_queue_truncated_to_zero_or_deleted_is_rebuilt_at_start_and_nothing_is_redone(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess], how: Damage
) -> None:
    daemon = _first_life(tmp_path, torchscript_model, started)
    damage(daemon.state / "queue.sqlite3", how)
    _new_life_processes_only_new_files(daemon)
    (rebuilt,) = daemon.events("queue_rebuilt")
    assert (rebuilt["done"], rebuilt["quarantined"]) == (3, 1)
    assert daemon.stop() == 0
    assert json.loads(_cli(daemon, "status", "--json").stdout)["counts"]["done"] == 4


# --- Cut-outs whose originals are gone ------------------------------------------------------------
def test_a_rebuild_keeps_the_names_of_cut_outs_whose_originals_are_gone(folders: Folders) -> None:
    """`originals: delete` (or archive) took x.jpg away after its cut-out x.png was made. After a
    rebuild a new input that maps to x.png (x.tif, or a new x.jpg) gets the next free name: the
    only cut-out of the deleted original is never written over."""
    cutout_of(folders, "x.jpg")
    cutout_of(folders, "shoot/y.jpg")
    (folders.input / "x.jpg").unlink()  # deleted after success
    report = rebuild_queue(folders)
    assert (report.done, report.held) == (1, 1)
    assert any("1 files in the output folder belong to no input" in line for line in report.lines())
    queue = JobQueue(queue_path(folders.state))
    for name in ("x.tif", "x.jpg"):
        write_image(folders.input / name, subject_image(120, 160, (30, 20, 120, 90)))
        assert offer_again(queue, folders, name) == "queued"
    assert {job.source.as_posix(): job.output.as_posix() for job in queue.jobs(state="pending")} == {
        "x.tif": "x.tif.png", "x.jpg": "x.jpg.png"}
    queue.close()


@pytest.mark.slow
def test_after_an_automatic_rebuild_a_new_file_never_overwrites_the_cut_out_of_a_deleted_original(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    daemon = harness.DaemonProcess(tmp_path / "d", model=str(torchscript_model),
                                   settings={"pipeline": {"target_size": 256}, "originals": "delete"})
    started.append(daemon)
    write_image(daemon.input / "x.jpg", subject_image(300, 400, BOX))
    daemon.start()
    daemon.wait_for(lambda: daemon.outputs() == ["x.png"] and not (daemon.input / "x.jpg").exists(),
                    what="the cut-out, and the original deleted")
    assert daemon.stop() == 0
    first = (daemon.output / "x.png").read_bytes()
    damage(daemon.state / "queue.sqlite3", "missing")  # rebuilt at the next start
    daemon.start()
    write_image(daemon.input / "x.tif", subject_image(300, 400, (40, 40, 200, 160)))
    daemon.wait_for(lambda: bool(_jobs_of(daemon, "x.tif")), what="the new file's job")
    assert sorted(daemon.outputs()) == ["x.png", "x.tif.png"] and (daemon.output / "x.png").read_bytes() == first
    assert daemon.stop() == 0
