"""Files that arrive while the state folder's disk is full: kept, counted, alerted, and queued
once space returns, by the running daemon (no restart).

The disk is real: a small tmpfs mounted for the state folder (needs root, as CI runs), filled
until the kernel says ENOSPC, so SQLite's "database or disk is full" is its own.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.cli.status import collect_status, print_status
from daemon.companions.alerts import Alerts
from daemon.companions.monitor import DiskUsage, Monitor
from daemon.folders.outputs import Folders
from daemon.settings import AlertSettings, QueueSettings
from daemon.store.session import SessionRecord, Waiting, read_live
from daemon.store.view import open_view
from daemon.testing import BrightModel, FakeClock, wait_until
from daemon.watch.runner import Daemon
from tests.conftest import fill_disk, small_tmpfs
from tests.test_runner import Running, drop, outputs, settings_for


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "state-disk", size="2m") as mount:
        yield mount


def _fill(disk: Path) -> Path:
    return fill_disk(disk)


def _status(state: Path) -> str:
    out = io.StringIO()
    print_status(collect_status(state), out=out)
    return out.getvalue()


def test_a_file_dropped_while_the_state_disk_is_full_is_counted_then_queued_when_space_returns(
    tmp_path: Path, small_disk: Path
) -> None:
    folders = Folders(input=tmp_path / "in", output=tmp_path / "out", quarantine=tmp_path / "q",
                      archive=tmp_path / "archive", state=small_disk / "state")
    for folder in (folders.input, folders.output, folders.quarantine):
        folder.mkdir()
    daemon = Daemon(settings=settings_for(folders), folders=folders, model=BrightModel(), device="cpu")
    with capture_logs() as logs, Running(daemon):
        drop(folders, "before.png")
        wait_until(lambda: outputs(folders) == ["before.png"], what="the first cutout")
        filler = _fill(small_disk)
        drop(folders, "while-full.png")
        wait_until(lambda: _unqueued(folders.state) == ["while-full.png"], what="the file counted as not queued",
                   timeout=20)
        shown = _status(folders.state)
        assert "NOT QUEUED: 1 settled file" in shown and "while-full.png" in shown and "full" in shown
        assert outputs(folders) == ["before.png"]
        filler.unlink()
        wait_until(lambda: outputs(folders) == ["before.png", "while-full.png"], what="the cutout once space returned",
                   timeout=20)
        wait_until(lambda: "NOT QUEUED" not in _status(folders.state), what="status clear again")
    said = [entry["event"] for entry in logs]
    assert said.count("file_not_queued") == 1 and "store_writable_again" in said
    assert "file_set_aside" not in said


def _unqueued(state: Path) -> list[str]:
    live = read_live(state)
    return [w.path for w in live.waiting if w.unqueued] if live else []


def test_unqueued_files_are_alerted_once_until_every_one_is_queued(tmp_path: Path, clock: FakeClock) -> None:
    state = tmp_path / "state"
    state.mkdir()
    alerts = Alerts(AlertSettings(desktop=True, group_seconds=0), clock=clock)
    monitor = Monitor(settings=AlertSettings(), alerts=alerts, output=state, state=state, clock=clock,
                      open_view=lambda: open_view(QueueSettings(), state=state),
                      disk_usage=lambda path: DiskUsage(total=100, used=50, free=50))
    live = SessionRecord(state)
    live.begin(now=clock())
    full = Waiting("shoot/a.jpg", 10, 3.0, False, unqueued="database or disk is full")
    with capture_logs() as logs:
        for waiting in ([full], [full], [], [full]):
            live.publish_live(waiting=waiting, volume_problem=None, now=clock())
            monitor.tick()
            alerts.tick()
    said = [e["text"] for e in logs if e["event"] == "alert"]
    assert len(said) == 2 and "1 new file could not be queued (database or disk is full)" in said[0]
    monitor.close()


def test_the_session_record_is_written_over_in_place_when_the_disk_has_no_room_for_a_new_file(
    small_disk: Path
) -> None:
    live = SessionRecord(small_disk)
    live.begin(now=0.5)
    live.publish_live(waiting=[], volume_problem=None, now=1.0)
    _fill(small_disk)
    many = [Waiting(f"shoot/{index:03d}.jpg", 10, 1.0, False, unqueued="database or disk is full")
            for index in range(200)]
    live.publish_live(waiting=many, volume_problem=None, now=2.0)
    shown = read_live(small_disk)
    assert shown is not None and shown.updated == 2.0
    assert 0 < len(shown.waiting) < 200 and shown.waiting[0] == many[0]  # as many as the old file's room holds

