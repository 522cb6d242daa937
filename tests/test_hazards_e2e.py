"""Studio hazards against the real `cutout watch` process: foreign names, readers that
used to make it spin, writers that pause, kills at start-up and a NAS that drops."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests import harness
from tests.conftest import subject_image, write_image

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="Linux file names and mounts")]

FAST: dict[str, object] = {"pipeline": {"target_size": 256}}
SMALL = (60, 80, (20, 15, 60, 45))


def _daemon(started: list[harness.DaemonProcess], root: Path, model: Path, **settings: Any) -> harness.DaemonProcess:
    daemon = harness.DaemonProcess(root, model=str(model), settings={**FAST, **settings})
    started.append(daemon)
    return daemon


def _drop(folder: Path, count: int, prefix: str = "") -> list[str]:
    names = [f"{prefix}{index:03d}.png" for index in range(count)]
    for name in names:
        write_image(folder / name, subject_image(*SMALL[:2], SMALL[2]))
    return names


def _states(daemon: harness.DaemonProcess) -> dict[str, int]:
    with sqlite3.connect(daemon.state / "queue.sqlite3") as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_non_utf8_name_is_quarantined_and_files_after_it_are_processed(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    daemon = _daemon(started, tmp_path / "d", torchscript_model).start()
    source = write_image(tmp_path / "x.png", subject_image(*SMALL[:2], SMALL[2]))
    os.rename(os.fsencode(source), os.fsencode(daemon.input) + b"/caf\xe9.png")
    names = _drop(daemon.input, 3, prefix="after-")
    daemon.wait_for(lambda: daemon.outputs() == names, what="the files after the bad name")
    daemon.wait_for(lambda: bool(daemon.quarantined()), what="the bad name in quarantine")
    assert daemon.quarantined() == {"caf\ufffd.png": "invalid_name"}
    status = subprocess.run([sys.executable, "-m", "daemon", "status", "--state", str(daemon.state)],
                            capture_output=True, text=True, check=True).stdout
    assert "caf\ufffd.png: invalid_name" in status
    assert not daemon.events("watch_error") and daemon.stop() == 0


def test_reading_the_kept_originals_leaves_the_daemon_idle(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    daemon = _daemon(started, tmp_path / "d", torchscript_model).start()
    names = _drop(daemon.input, 60)
    daemon.wait_for(lambda: daemon.outputs() == names, what="every output")
    time.sleep(1.0)
    for path in daemon.input.iterdir():  # a backup job reading every original
        path.read_bytes()
    assert daemon.process is not None
    before = _cpu_seconds(daemon.process.pid)
    time.sleep(5.0)
    used = _cpu_seconds(daemon.process.pid) - before
    print(f"daemon CPU over 5 s after a read pass of {len(names)} files: {used:.2f} s")
    assert used < 1.0, f"the daemon kept working after a read pass: {used:.2f} s of CPU in 5 s"
    assert daemon.stop() == 0


def test_a_writer_that_creates_the_file_then_pauses_gets_its_cutout_not_quarantine(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    daemon = _daemon(started, tmp_path / "d", torchscript_model).start()
    image = write_image(tmp_path / "image.png", subject_image(*SMALL[:2], SMALL[2]))
    target = daemon.input / "paused.png"
    subprocess.run(["bash", "-c", f"exec 3>'{target}'; sleep 3; cat '{image}' >&3"], check=True)
    daemon.wait_for(lambda: daemon.outputs() == ["paused.png"], what="the paused writer's cutout")
    assert daemon.quarantined() == {} and daemon.stop() == 0


def test_kills_at_start_up_quarantine_no_innocent_file(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    daemon = _daemon(started, tmp_path / "d", torchscript_model, worker={"in_flight": 6})
    names = _drop(daemon.input, 40)
    daemon.start()  # killed mid-batch, with several images decoding at once
    daemon.wait_for(lambda: _running_in_a_stage(daemon) > 1, what="jobs inside stages", timeout=60)
    daemon.kill9()
    for _ in range(4):  # then launchd's stop timeout, the OOM killer, a power cut: at each start-up
        daemon.start()
        daemon.kill9()
    daemon.start()
    daemon.wait_for(lambda: _states(daemon) == {"done": 40}, what="every job done")
    assert daemon.outputs() == names and daemon.quarantined() == {} and daemon.stop() == 0


def _running_in_a_stage(daemon: harness.DaemonProcess) -> int:
    try:
        with sqlite3.connect(daemon.state / "queue.sqlite3", timeout=0.1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM jobs WHERE stage IS NOT NULL").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root; the replaced-folder case runs everywhere")
def test_a_nas_share_that_drops_and_returns_changes_no_job_and_resumes_at_once(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    share = tmp_path / "nas-share"
    share.mkdir()
    names = _drop(share, 150)
    daemon = _daemon(started, tmp_path / "d", torchscript_model, watch={"reconcile_interval_seconds": 3600})
    subprocess.run(["mount", "--bind", str(share), str(daemon.input)], check=True)
    try:
        daemon.start()
        daemon.wait_for(lambda: len(daemon.outputs()) >= 5, what="some outputs")
        subprocess.run(["umount", "-l", str(daemon.input)], check=True)  # the share drops; the mount point stays
        daemon.wait_for(lambda: bool(daemon.events("hot_folder_unavailable")), what="the pause")
        time.sleep(1.0)
        paused = _states(daemon)
        assert "failed" not in paused and paused.get("pending", 0) > 0
        time.sleep(1.0)
        assert _states(daemon) == paused  # nothing changes while the share is gone
        _drop(share, 2, prefix="while-down-")
        subprocess.run(["mount", "--bind", str(share), str(daemon.input)], check=True)
        every = sorted(names + ["while-down-000.png", "while-down-001.png"])
        daemon.wait_for(lambda: _states(daemon) == {"done": len(every)}, what="every job after the return", timeout=120)
        assert daemon.outputs() == every and daemon.events("hot_folder_back") and daemon.quarantined() == {}
        assert daemon.stop() == 0
    finally:
        daemon.kill_if_running()
        subprocess.run(["umount", "-l", str(daemon.input)], check=False, capture_output=True)
