"""The memory guard: a daemon too large, or done with its share of images, starts afresh,
losing and charging nothing (the guard's rule here; a real daemon restarting itself below)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.testing import FakeClock
from daemon.watch.guard import MemoryGuard
from tests.conftest import subject_image, write_image

MB = 2**20


def test_the_guard_waits_for_the_first_image_and_then_the_ceiling_or_the_count() -> None:
    clock, resident = FakeClock(), [100 * MB]
    guard = MemoryGuard(ceiling_mb=200, after_images=0, measure=lambda: resident[0], clock=clock, check_seconds=5)
    guard.start()
    resident[0] = 250 * MB
    assert guard.due(done=0) is None  # never before its first image
    why = guard.due(done=1)
    assert why is not None and "250 MB reached worker.memory_ceiling_mb (200 MB)" in why
    counting = MemoryGuard(ceiling_mb=0, after_images=3, measure=lambda: 10**12, clock=clock)
    counting.start()
    assert counting.due(done=2) is None and "3 images done" in str(counting.due(done=3))


def test_the_memory_is_read_at_most_every_few_seconds() -> None:
    clock, reads = FakeClock(), []

    def measure() -> int:
        reads.append(1)
        return 10 * MB

    guard = MemoryGuard(ceiling_mb=200, after_images=0, measure=measure, clock=clock, check_seconds=5)
    guard.start()
    for _ in range(10):
        assert guard.due(done=1) is None
    clock.advance(5)
    guard.due(done=1)
    assert len(reads) == 3  # start, the first look, one more after five seconds


def test_a_ceiling_below_the_daemons_size_at_rest_is_said_once_and_not_applied() -> None:
    guard = MemoryGuard(ceiling_mb=1, after_images=0, measure=lambda: 500 * MB, clock=FakeClock())
    with capture_logs() as logs:
        guard.start()
    assert [entry["event"] for entry in logs] == ["memory_ceiling_below_start"]
    assert guard.due(done=5) is None  # no restart after every image


def test_the_resident_memory_is_read_now_not_its_peak() -> None:
    """In a fresh process: one that ran the model may serve 200 MB from memory it already holds."""
    import subprocess
    import sys

    measure = ("from daemon.watch.guard import resident_now\n"
               "before = resident_now(); held = b'\\x01' * (200 * 2**20); grown = resident_now()\n"
               "del held; print(before, grown, resident_now())\n")
    found = subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True, check=True).stdout
    before, grown, after = (int(value) for value in found.split())
    assert before > 10 * MB and grown > before + 150 * MB
    assert after < grown - 150 * MB  # the peak would stay


@pytest.mark.slow
def test_a_daemon_restarts_itself_after_its_images_losing_and_charging_nothing(
    tmp_path: Path, torchscript_model: Path
) -> None:
    from tests.harness import DaemonProcess

    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model),
                           settings={"worker": {"restart_after_images": 2}})
    try:
        daemon.start()
        pid = daemon.process.pid if daemon.process else None
        expected: list[str] = []
        for batch in range(2):  # each batch runs past the count: a restart after each
            names = [f"b{batch}-{index}.png" for index in range(3)]
            for name in names:
                write_image(daemon.input / name, subject_image(120, 160, (30, 20, 130, 100)))
            expected = sorted(expected + names)
            daemon.wait_for(lambda: daemon.outputs() == expected, what=f"batch {batch}")
            daemon.wait_for(lambda: daemon.started_count() >= batch + 2, what=f"the restart after batch {batch}")
        done = daemon.jobs("done")
        assert sorted(str(job["path"]) for job in done) == expected  # each once
        assert {job["attempt"] for job in done} == {1}  # no job charged by a restart
        restarts = daemon.events("restarting")
        assert restarts and all("images done (worker.restart_after_images: 2)" in str(e["why"]) for e in restarts)
        assert daemon.process is not None and daemon.process.poll() is None and daemon.process.pid == pid
        assert not [e for e in daemon.events() if e.get("event") == "previous_process_crashed"]
        assert daemon.stop() == 0
    finally:
        daemon.kill_if_running()
