"""Temp files: every one says who writes it, and a sweep removes only what a dead writer left.

Several daemons of a fleet share one output folder, and each sweeps it when it starts: a
sweep that took every temp file would pull a live peer's staged cutout from under it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.atomic import HOST_TAG, STALE_TEMP_SECONDS, is_temp_name, staged, sweep_temp_files, write_atomic


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A real process that is alive for the test."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a real process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _temp(folder: Path, writer: str, *, age: float = 0.0) -> Path:
    path = folder / f".cutout-{writer}-abc123xy.tmp"
    path.write_bytes(b"half a cutout")
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def test_a_staged_file_is_named_after_its_writer_and_goes_when_the_block_ends(tmp_path: Path) -> None:
    with staged(tmp_path / "a.png", b"png") as temp:
        assert is_temp_name(temp.name) and temp.name.startswith(f".cutout-{os.getpid()}@{HOST_TAG}-")
        assert temp.read_bytes() == b"png"
    assert list(tmp_path.iterdir()) == []
    write_atomic(tmp_path / "b.png", b"b")
    assert [p.name for p in tmp_path.iterdir()] == ["b.png"]


def test_the_sweep_removes_what_a_dead_writer_on_this_machine_left(tmp_path: Path, dead_pid: int) -> None:
    left = _temp(tmp_path, f"{dead_pid}@{HOST_TAG}")
    (tmp_path / "sub").mkdir()
    deeper = _temp(tmp_path / "sub", f"{dead_pid}@{HOST_TAG}")
    assert sweep_temp_files(tmp_path) == 2 and not left.exists() and not deeper.exists()


def test_the_sweep_keeps_the_file_a_live_writer_is_writing(tmp_path: Path, live_pid: int) -> None:
    mine, peers = _temp(tmp_path, f"{os.getpid()}@{HOST_TAG}"), _temp(tmp_path, f"{live_pid}@{HOST_TAG}")
    assert sweep_temp_files(tmp_path) == 0 and mine.exists() and peers.exists()


def test_another_machines_temp_file_goes_only_once_it_is_stale(tmp_path: Path) -> None:
    fresh = _temp(tmp_path, "123@another-mac")
    stale = _temp(tmp_path, "124@another-mac", age=STALE_TEMP_SECONDS + 60)
    assert sweep_temp_files(tmp_path) == 1 and fresh.exists() and not stale.exists()


def test_a_stale_temp_file_goes_even_if_its_pid_is_alive_again(tmp_path: Path, live_pid: int) -> None:
    """A pid is reused after a reboot or a long uptime: age settles it."""
    reused = _temp(tmp_path, f"{live_pid}@{HOST_TAG}", age=STALE_TEMP_SECONDS + 60)
    assert sweep_temp_files(tmp_path) == 1 and not reused.exists()


def test_an_untagged_temp_file_of_an_earlier_version_is_swept_and_final_names_never(tmp_path: Path) -> None:
    old = tmp_path / ".cutout-k2j3h4g5.tmp"
    old.write_bytes(b"x")
    kept = [tmp_path / "a.png", tmp_path / ".cutout-notes.txt", tmp_path / "b.tmp"]
    for path in kept:
        path.write_bytes(b"y")
    assert sweep_temp_files(tmp_path) == 1 and not old.exists() and all(path.exists() for path in kept)
