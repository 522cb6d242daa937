"""The session record: one file for the daemon's life, read by status, the dashboard, the monitor and the next start."""

from __future__ import annotations

import json
import os
from pathlib import Path

from daemon.store.session import SCHEMA, SESSION_FILE, SessionRecord, Waiting, read_live, read_session


def test_a_restart_after_a_crash_or_a_kill_is_told_and_a_clean_stop_is_not(tmp_path: Path) -> None:
    first = SessionRecord(tmp_path)
    assert first.begin(now=1.0) is None  # never ran
    first.end(now=2.0)  # ... a clean stop of that life
    record = SessionRecord(tmp_path)
    assert record.begin(now=3.0) is None  # stopped cleanly
    # ... and then the process died: no stopped_at
    assert "did not stop cleanly: it was killed or the machine lost power" in (SessionRecord(tmp_path).begin(now=4.0) or "")
    (tmp_path / "crash-report.txt").write_text("Fatal Python error: Segmentation fault\n\nThread 0x1 ...")
    told = SessionRecord(tmp_path).begin(now=5.0) or ""
    assert "it crashed (Fatal Python error: Segmentation fault)" in told and f"pid {os.getpid()}" in told
    session = read_session(tmp_path)
    assert session is not None and session.previous_end == told  # kept for whoever reads the record


def test_one_record_holds_the_life_what_is_held_back_and_the_figures_with_a_schema(tmp_path: Path) -> None:
    record = SessionRecord(tmp_path)
    record.begin(now=10.0)
    record.publish_live(waiting=[Waiting("a.jpg", 5, 1.0, True)], volume_problem="gone", now=11.0)
    assert record.publish_telemetry({"pid": 1, "outcomes": {"done": 3}})
    data = json.loads((tmp_path / SESSION_FILE).read_text())
    assert data["schema"] == SCHEMA and data["pid"] == os.getpid() and data["started_at"] == 10.0
    assert data["stopped_at"] is None and data["telemetry"]["outcomes"] == {"done": 3}
    live = read_live(tmp_path)
    assert live is not None and live.volume_problem == "gone" and live.waiting == [Waiting("a.jpg", 5, 1.0, True)]
    record.end(now=12.0)
    session = read_session(tmp_path)
    assert session is not None and session.stopped_at == 12.0 and session.live is None  # nothing held back now
    assert session.telemetry == {"pid": 1, "outcomes": {"done": 3}}  # the last figures stay for the dashboard
    assert sorted(path.name for path in tmp_path.iterdir()) == [SESSION_FILE]


def test_an_unchanged_live_state_is_not_written_again(tmp_path: Path) -> None:
    record = SessionRecord(tmp_path)
    record.begin(now=0.0)
    record.publish_live(waiting=[Waiting("a.jpg", 5, 1.0, False)], volume_problem=None, now=1.0)
    first = (tmp_path / SESSION_FILE).stat().st_mtime_ns, read_live(tmp_path)
    record.publish_live(waiting=[Waiting("a.jpg", 5, 9.0, False)], volume_problem=None, now=9.0)  # only older
    assert ((tmp_path / SESSION_FILE).stat().st_mtime_ns, read_live(tmp_path)) == first


def test_an_earlier_versions_files_are_read_once_and_removed(tmp_path: Path) -> None:
    """live.json, telemetry.json and the schema-less session.json marker of a daemon that died."""
    (tmp_path / "live.json").write_text(json.dumps({"updated": 1, "waiting": [], "volume_problem": None}))
    (tmp_path / "telemetry.json").write_text(json.dumps({"pid": 7, "model": "m"}))
    (tmp_path / SESSION_FILE).write_text(json.dumps({"pid": 4100, "started_at": 1.0}))
    assert read_session(tmp_path) is None  # not this version's record: nobody shows it
    told = SessionRecord(tmp_path).begin(now=2.0) or ""
    assert "the daemon (pid 4100, started" in told and "did not stop cleanly" in told  # the marker, read once
    assert sorted(path.name for path in tmp_path.iterdir()) == [SESSION_FILE]
    assert SessionRecord(tmp_path).begin(now=3.0) is not None  # this life (no clean stop) now speaks, not the old one
    session = read_session(tmp_path)
    assert session is not None and f"pid {os.getpid()}" in (session.previous_end or "")


def test_a_record_that_cannot_be_read_tells_nothing_and_breaks_no_reader(tmp_path: Path) -> None:
    (tmp_path / SESSION_FILE).write_text('{"schema": 1, "pid": "x"')
    assert read_session(tmp_path) is None and read_live(tmp_path) is None
    assert "did not stop cleanly" in (SessionRecord(tmp_path).begin(now=1.0) or "")  # a torn record: no clean stop


def test_a_start_that_fails_part_way_still_leaves_later_writes_a_whole_record(tmp_path: Path) -> None:
    import pytest

    (tmp_path / "live.json").mkdir()  # an earlier version's file that cannot be removed
    record = SessionRecord(tmp_path)
    with pytest.raises(OSError):
        record.begin(now=1.0)
    record.publish_live(waiting=[], volume_problem="gone", now=2.0)
    session = read_session(tmp_path)
    assert session is not None and session.pid == os.getpid() and session.started_at == 1.0
    assert session.live is not None and session.live.volume_problem == "gone"
