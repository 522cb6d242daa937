"""A fleet for real: several `cutout watch` processes, one PostgreSQL store, one hot folder.

Temp folders stand in for the NAS share; each daemon has its own state folder, as each
machine would. Kills, freezes (SIGSTOP past the lease), the watcher's death and a database
restart: every file still ends with exactly one output, and nothing good is quarantined.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from daemon.atomic import is_temp_name
from daemon.folders.claims import CLAIM_FILE
from daemon.store.postgres import migrate
from tests.pgserver import TempPostgres, fresh_store_url, postgres_bindir
from tests import harness, tiny_models
from tests.conftest import subject_image, write_image

pytestmark = pytest.mark.slow

LEASE = 3.0
SMALL = (60, 80, (20, 15, 60, 45))


class Nas:
    """The shared hot, output and quarantine folders."""

    def __init__(self, root: Path) -> None:
        self.input, self.output, self.quarantine = root / "in", root / "out", root / "quarantine"
        self.input.mkdir(parents=True)

    def drop(self, count: int, *, prefix: str = "") -> list[str]:
        names = [f"{prefix}{index:03d}.png" for index in range(count)]
        for name in names:
            write_image(self.input / name, subject_image(*SMALL[:2], SMALL[2]))
        return names

    def outputs(self) -> list[str]:
        found = self.output.rglob("*") if self.output.exists() else iter(())
        return sorted(p.name for p in found if p.is_file() and p.name != CLAIM_FILE)

    def quarantined(self) -> list[str]:
        return sorted(p.name for p in self.quarantine.rglob("*")) if self.quarantine.exists() else []

    def temp_files(self) -> list[Path]:
        return [p for folder in (self.input, self.output) if folder.exists() for p in folder.rglob("*")
                if is_temp_name(p.name)]


def _daemons(
    started: list[harness.DaemonProcess], tmp_path: Path, nas: Nas, *, url: str, model: str, count: int,
    **settings: Any,
) -> list[harness.DaemonProcess]:
    made = []
    for n in range(count):
        root = tmp_path / f"machine-{n}"
        folders = {"input": str(nas.input), "output": str(nas.output), "quarantine": str(nas.quarantine),
                   "state": str(root / "state")}
        daemon = harness.DaemonProcess(root, model=model, settings={
            "folders": folders, "pipeline": {"target_size": 256},
            "queue": {"store": "postgresql", "url": url, "lease_seconds": LEASE, **settings.pop("queue", {})},
            **settings,
        })
        started.append(daemon)
        made.append(daemon.start())
    return made


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM cutout_jobs GROUP BY state").fetchall())


def _wait(condition: Any, *, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def store_url(postgres_server: str) -> str:
    url = fresh_store_url(postgres_server)
    migrate(url)
    return url


def test_four_daemons_share_400_files_each_once_and_every_daemon_works(
    tmp_path: Path, store_url: str, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    nas = Nas(tmp_path / "nas")
    fleet = _daemons(started, tmp_path, nas, url=store_url, model=str(torchscript_model), count=4)
    names = nas.drop(400)
    _wait(lambda: _counts(store_url) == {"done": 400}, what="400 jobs done", timeout=300)
    assert nas.outputs() == names and nas.temp_files() == [] and nas.quarantined() == []
    done_by = [len(daemon.jobs("done")) for daemon in fleet]
    assert sum(done_by) == 400 and all(done_by), done_by
    assert sum(bool(d.events("watcher_changed")) and d.events("watcher_changed")[-1]["watcher"] for d in fleet) == 1
    assert all(daemon.stop() == 0 for daemon in fleet)


@pytest.mark.timeout(480)  # several daemon restarts, each loading torch: slow on a busy 2-core machine
def test_kills_and_a_freeze_past_the_lease_leave_exactly_one_output_per_file(
    tmp_path: Path, store_url: str, started: list[harness.DaemonProcess]
) -> None:
    slow = tiny_models.build_slow_hf_model_dir(tmp_path / "slow-model", seconds=1.5)
    nas = Nas(tmp_path / "nas")
    fleet = _daemons(started, tmp_path, nas, url=store_url, model=f"hf:{slow}", count=2,
                     worker={"in_flight": 1, "cpu_threads": 1})
    # Enough work that some is left once the restarts are over, however slowly they load torch:
    # a queue drained during them leaves no daemon working on a job to freeze.
    names = nas.drop(60)
    chance = random.Random(7)
    for _ in range(3):  # kill -9 at random points, and the service manager restarts the daemon
        time.sleep(chance.uniform(0.5, 2.5))
        victim = chance.choice(fleet)
        victim.kill9()
        victim.start()
    # Whichever daemon is working on a job first is frozen (on a busy machine one of them may
    # still be loading torch after its restart while the other works through the queue).
    inside: list[harness.DaemonProcess] = []
    _wait(lambda: bool(inside.extend(d for d in fleet if _working_on_a_job(store_url, d)) or inside),
          what="a daemon working on a job")
    frozen = inside[0]
    other = next(daemon for daemon in fleet if daemon is not frozen)
    assert frozen.process is not None
    os.kill(frozen.process.pid, signal.SIGSTOP)  # frozen past its lease: the other takes its job
    time.sleep(LEASE + 3.0)
    os.kill(frozen.process.pid, signal.SIGCONT)
    _wait(lambda: _counts(store_url) == {"done": len(names)}, what="every job done", timeout=300)
    assert nas.outputs() == names and nas.temp_files() == [] and nas.quarantined() == []
    _wait(lambda: bool(frozen.jobs("claim_lost")), what="the frozen daemon's late finish, rejected", timeout=30)
    lost = str(frozen.jobs("claim_lost")[0]["path"])
    assert lost in [str(job["path"]) for job in other.jobs("done")]  # the output is the later claim's
    assert all(daemon.stop() == 0 for daemon in fleet)


def _working_on_a_job(url: str, daemon: harness.DaemonProcess) -> str | None:
    """The job `daemon` has inside its stages (the store marks going in, not each stage: with
    one in flight and a 1.5 s model that is almost always the model)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT source FROM cutout_jobs WHERE state = 'running' AND stage IS NOT NULL"
                           " AND owner LIKE %s", (f"%:{daemon.state}",)).fetchone()
    return None if row is None else str(row[0])


def test_when_the_watcher_dies_another_daemon_watches_and_queues_new_files(
    tmp_path: Path, store_url: str, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    nas = Nas(tmp_path / "nas")
    fleet = _daemons(started, tmp_path, nas, url=store_url, model=str(torchscript_model), count=2)
    _wait(lambda: any(_is_watcher(d) for d in fleet), what="a watcher")
    watcher = next(d for d in fleet if _is_watcher(d))
    other = next(d for d in fleet if d is not watcher)
    watcher.kill9()
    _wait(lambda: _is_watcher(other), what="the other daemon taking over", timeout=30)
    names = nas.drop(10, prefix="after-")
    _wait(lambda: _counts(store_url) == {"done": 10}, what="the files dropped after the failover")
    assert nas.outputs() == names and other.stop() == 0


def _is_watcher(daemon: harness.DaemonProcess) -> bool:
    changes = daemon.events("watcher_changed")
    return bool(changes) and bool(changes[-1]["watcher"])


def test_a_database_restart_mid_run_loses_and_quarantines_nothing(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries to restart")
    server = TempPostgres(bindir=bindir, port=54331).start()
    try:
        url = fresh_store_url(server.url)
        migrate(url)
        nas = Nas(tmp_path / "nas")
        fleet = _daemons(started, tmp_path, nas, url=url, model=str(torchscript_model), count=2)
        names = nas.drop(120)
        _wait(lambda: _counts(url).get("done", 0) >= 10, what="some jobs done")
        server.restart(pause=2.0)
        _wait(lambda: _counts(url) == {"done": 120}, what="every job after the restart", timeout=240)
        assert nas.outputs() == names and nas.quarantined() == [] and nas.temp_files() == []
        assert all(daemon.process is not None and daemon.process.poll() is None for daemon in fleet)
        assert all(daemon.stop() == 0 for daemon in fleet)
    finally:
        server.stop()


def test_a_file_that_kills_every_worker_is_quarantined_as_crashed_after_max_attempts(
    tmp_path: Path, store_url: str, started: list[harness.DaemonProcess]
) -> None:
    poison_model = tiny_models.build_poison_hf_model_dir(tmp_path / "poison-model")
    nas = Nas(tmp_path / "nas")
    poison = np.zeros((64, 64, 3), np.uint8)
    poison[:, :] = tiny_models.POISON_RGB
    write_image(nas.input / "poison.png", poison)
    fleet = _daemons(started, tmp_path, nas, url=store_url, model=f"hf:{poison_model}", count=2,
                     queue={"max_attempts": 2}, worker={"in_flight": 1})
    deadline = time.monotonic() + 180
    while _counts(store_url).get("failed", 0) == 0:  # launchd's KeepAlive, on every machine
        assert time.monotonic() < deadline, "the poison file was never quarantined"
        for daemon in fleet:
            if daemon.process is not None and daemon.process.poll() is not None:
                daemon.start()
        time.sleep(0.2)
    report = nas.quarantine / "poison.png.error.json"
    _wait(report.exists, what="the quarantine report")
    assert '"reason": "crashed"' in report.read_text()
    assert sum(len(d.events("previous_process_crashed")) for d in fleet) >= 1
