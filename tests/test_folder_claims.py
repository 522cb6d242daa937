"""One daemon (or one fleet) per hot and output folder: the claim files on the folders themselves."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.errors import ConfigError
from daemon.folders.claims import CLAIM_FILE, REFRESH_SECONDS, STALE_SECONDS, Claimant, FolderClaims
from daemon.testing import FakeClock
from tests import harness
from tests.conftest import subject_image, write_image

BOX = (100, 80, 300, 220)


@pytest.fixture
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    made = {"hot": tmp_path / "in", "output": tmp_path / "out"}
    for folder in made.values():
        folder.mkdir()
    return made


def me(what: str = "cutout watch", **changes: object) -> Claimant:
    return replace(Claimant.this_process(what=what, state=Path("/state/one")), **changes)  # type: ignore[arg-type]


def _plant(folder: Path, holder: Claimant, *, age: float = 0.0) -> Path:
    path = folder / CLAIM_FILE
    path.write_text(json.dumps(holder.__dict__))
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_a_claim_is_taken_on_both_folders_and_removed_on_release(folders: dict[str, Path]) -> None:
    with FolderClaims(folders, claimant=me()):
        for folder in folders.values():
            held = json.loads((folder / CLAIM_FILE).read_text())
            assert (held["pid"], held["host"], held["what"]) == (os.getpid(), socket.gethostname(), "cutout watch")
    assert not any((folder / CLAIM_FILE).exists() for folder in folders.values())


def test_a_second_daemon_is_refused_with_a_message_naming_the_first(folders: dict[str, Path], tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _plant(folders["output"], me(pid=sleeper.pid, state=str(tmp_path / "other-state")))
        with pytest.raises(ConfigError) as caught:
            FolderClaims(folders, claimant=me()).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    message = str(caught.value)
    assert f"the output folder {folders['output']} is already claimed by cutout watch (pid {sleeper.pid}" in message

    assert str(tmp_path / "other-state") in message and "process every file twice" in message
    assert not (folders["hot"] / CLAIM_FILE).exists()  # all or none: the hot folder's claim was given back


def test_the_check_before_a_model_loads_refuses_the_same_and_changes_nothing(folders: dict[str, Path]) -> None:
    claim = _plant(folders["output"], me(host="another-mac", pid=1))
    before = claim.read_bytes()
    with pytest.raises(ConfigError, match="is already claimed by cutout watch \\(pid 1 on another-mac"):
        FolderClaims(folders, claimant=me()).check()
    assert claim.read_bytes() == before and not (folders["hot"] / CLAIM_FILE).exists()
    FolderClaims({"hot": folders["hot"]}, claimant=me()).check()  # a free folder: nothing said, nothing made
    assert not (folders["hot"] / CLAIM_FILE).exists()


def test_a_claim_whose_process_died_on_this_machine_is_taken_over(folders: dict[str, Path], dead_pid: int) -> None:
    _plant(folders["hot"], me(pid=dead_pid))
    with FolderClaims(folders, claimant=me()):
        assert json.loads((folders["hot"] / CLAIM_FILE).read_text())["pid"] == os.getpid()


def test_another_machines_claim_holds_until_nobody_refreshed_it_for_the_stale_time(folders: dict[str, Path]) -> None:
    other = me(host="another-mac", pid=1)
    _plant(folders["output"], other)
    with pytest.raises(ConfigError, match="another-mac"):
        FolderClaims(folders, claimant=me()).acquire()
    _plant(folders["output"], other, age=STALE_SECONDS + 5)
    with FolderClaims(folders, claimant=me()):
        assert json.loads((folders["output"] / CLAIM_FILE).read_text())["host"] == socket.gethostname()


def test_the_daemons_of_one_fleet_share_the_claim_and_none_removes_it_on_exit(folders: dict[str, Path]) -> None:
    first = _plant(folders["hot"], me(host="another-mac", pid=1, fleet="f1"))
    with FolderClaims(folders, claimant=me(fleet="f1")):
        assert json.loads(first.read_text())["host"] == "another-mac"
    assert first.exists()  # the other machine still runs on it
    with pytest.raises(ConfigError, match="fleet f1"):
        FolderClaims(folders, claimant=me(fleet="f2")).acquire()


def test_a_held_claim_is_refreshed_and_a_released_one_never_removes_a_newer_holders(
    folders: dict[str, Path], clock: FakeClock
) -> None:
    claims = FolderClaims(folders, claimant=me(), clock=clock)
    claims.acquire()
    path = folders["hot"] / CLAIM_FILE
    os.utime(path, (1, 1))
    claims.refresh()
    assert path.stat().st_mtime == 1  # not due yet
    clock.advance(REFRESH_SECONDS + 1)
    claims.refresh()
    assert time.time() - path.stat().st_mtime < 60
    _plant(folders["hot"], me(pid=1, host="taker"))  # thought stale and taken over meanwhile
    claims.release()
    assert json.loads(path.read_text())["host"] == "taker" and not (folders["output"] / CLAIM_FILE).exists()


# --- the real commands ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_watch_on_the_same_folders_is_refused_and_cutout_process_too(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    first = harness.DaemonProcess(tmp_path / "one", model=str(torchscript_model),
                                  settings={"pipeline": {"target_size": 256}})
    started.append(first)
    first.start()
    second = harness.DaemonProcess(tmp_path / "two", model=str(torchscript_model), settings={
        "pipeline": {"target_size": 256},
        "folders": {"input": str(first.input), "output": str(first.output), "quarantine": str(first.quarantine),
                    "state": str(tmp_path / "two" / "state"), "archive": str(first.archive)}})
    started.append(second)
    second.start(wait=False)
    assert second.wait_for_exit() == ConfigError.exit_status
    said = second.log.read_text()
    assert f"is already claimed by cutout watch (pid {first.process.pid}" in said and "Traceback" not in said
    write_image(first.input / "a.jpg", subject_image(300, 400, BOX))
    first.wait_for(lambda: first.outputs() == ["a.png"], what="the first daemon's cut-out")
    batch_in = tmp_path / "batch"
    write_image(batch_in / "a.jpg", subject_image(300, 400, (10, 10, 100, 100)))
    batch = subprocess.run([sys.executable, "-m", "daemon", "process", str(batch_in), str(first.output), "--force",
                            "--model", str(torchscript_model), "--device", "cpu"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert batch.returncode == ConfigError.exit_status and "is already claimed by cutout watch" in batch.stderr
    assert first.stop() == 0
    assert not (first.output / CLAIM_FILE).exists() and not (first.input / CLAIM_FILE).exists()
