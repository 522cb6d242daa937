"""Workers of a fleet on one PostgreSQL store, in-process: fencing seen from the worker's side.

A worker that froze past its lease finds its job taken by another machine: whatever it
finishes afterwards is dropped, and the output is the other machine's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.folders.outputs import Folders
from daemon.pipeline.constants import PipelineParams
from daemon.settings import QueueSettings
from daemon.store.jobs import Fingerprint, Job
from daemon.store.postgres import MIGRATIONS, PostgresStore
from daemon.testing import BrightModel, FakeClock, wait_until
from daemon.work.worker import Worker
from tests.conftest import subject_image, write_image
from tests.test_runner import Running, folders  # noqa: F401  (the fixture: folders as `cutout watch` makes them)

P = PurePosixPath
LEASE = 30.0


class FreezingModel(BrightModel):
    """Says it is inside the model, then stops there until thawed: SIGSTOP, a long GC pause, a
    network partition."""

    def __init__(self, inside: threading.Event, thaw: threading.Event) -> None:
        super().__init__()
        self.inside, self.thaw = inside, thaw

    def predict(self, batch: Any) -> Any:
        self.inside.set()
        self.thaw.wait(30)
        return super().predict(batch)


def worker_on(store: PostgresStore, folders: Folders, model: Any) -> Worker:
    return Worker(model=model, params=PipelineParams(target_size=64), folders=folders, queue=store,
                  queue_settings=QueueSettings(store="postgresql", url="postgresql://x@y/z"), policy="keep",
                  in_flight=1, cpu_threads=1)


@dataclass
class Frozen:
    """A worker frozen inside the model on `a.png` past its lease, and the machine that took its job."""

    path: Path
    other: PostgresStore
    taken: Job
    outcomes: list[str] = field(default_factory=list)
    """The frozen worker's `job` events, once it has thawed and ended."""


@contextmanager
def frozen_past_its_lease(
    folders: Folders, url: str, clock: FakeClock, *, store: type[PostgresStore] = PostgresStore
) -> Iterator[Frozen]:
    """The body runs as the other machine, holding the job; the frozen worker thaws on the way out."""
    inside, thaw = threading.Event(), threading.Event()
    path = write_image(folders.input / "a.png", subject_image(60, 80, (20, 15, 60, 45)))
    frozen_store = store(url, worker="frozen", clock=clock, lease_seconds=LEASE)
    other = PostgresStore(url, worker="other", clock=clock, lease_seconds=LEASE)
    frozen_store.offer(P("a.png"), Fingerprint.of(path))
    frozen = worker_on(frozen_store, folders, FreezingModel(inside, thaw))
    try:
        with capture_logs() as logs:
            runner = threading.Thread(target=frozen.run_once)
            runner.start()
            wait_until(inside.is_set, what="the frozen worker inside the model")
            clock.advance(LEASE + 1)
            taken = other.claim()
            assert taken is not None and taken.attempts == 2
            state = Frozen(path=path, other=other, taken=taken)
            yield state
            assert frozen.heartbeat() != []  # its lease is gone
            thaw.set()
            runner.join(timeout=30)
            wait_until(lambda: frozen.stages.idle, what="the frozen worker's end")
        state.outcomes += [e["outcome"] for e in logs if e["event"] == "job"]
    finally:
        thaw.set()
        frozen.close()
        frozen_store.close()
        other.close()


def test_a_worker_frozen_past_its_lease_publishes_nothing_and_the_later_claim_wins(
    folders: Folders, postgres_url: str, clock: FakeClock
) -> None:
    with frozen_past_its_lease(folders, postgres_url, clock) as frozen:
        assert frozen.other.finish(
            frozen.taken, content_hash="b", fingerprint=Fingerprint.of(frozen.path),
            publish=lambda: (folders.output / "a.png").write_bytes(b"the other machine's cutout"))
        done = frozen.other.get(P("a.png"))
    assert (folders.output / "a.png").read_bytes() == b"the other machine's cutout"
    assert frozen.outcomes == ["claim_lost"]
    assert not [p for p in folders.output.iterdir() if p.name.startswith(".")]  # no temp file left
    assert done is not None and (done.state, done.content_hash) == ("done", "b")


def test_a_worker_whose_claim_was_lost_never_stages_a_file_in_the_output_folder(
    folders: Folders, postgres_url: str, clock: FakeClock
) -> None:
    """The late worker's result is dropped before it touches the output folder, so no reader
    (nor a check of the folder right after the fleet is done) ever sees its temp file."""
    seen_at_publish: list[list[str]] = []

    class WatchedStore(PostgresStore):
        def finish(self, job: Any, **kwargs: Any) -> bool:
            seen_at_publish.append(sorted(p.name for p in folders.output.iterdir()))
            return super().finish(job, **kwargs)

    with frozen_past_its_lease(folders, postgres_url, clock, store=WatchedStore) as frozen:
        pass  # the other machine holds the job and has not finished it
    assert frozen.outcomes == ["claim_lost"]
    assert not any(name.startswith(".cutout-") for names in seen_at_publish for name in names)
    assert list(folders.output.iterdir()) == []


def _config(tmp_path: Path, url: str, folders: Folders) -> Path:
    import yaml

    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump({
        "folders": {"input": str(folders.input), "output": str(folders.output),
                    "quarantine": str(folders.quarantine), "state": str(folders.state)},
        "queue": {"store": "postgresql", "url": url},
        "watch": {"settle_seconds": 0.05}, "pipeline": {"target_size": 64},
    }))
    return config


def test_queue_init_creates_the_tables_once_and_status_reads_the_shared_queue(
    folders: Folders, postgres_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon.cli.main import main
    from tests.pgserver import fresh_store_url

    config = _config(tmp_path, fresh_store_url(postgres_server), folders)
    assert main(["status", "--config", str(config)]) == 2
    assert "run `cutout queue init" in capsys.readouterr().err
    assert main(["queue", "init", "--config", str(config)]) == 0
    assert f"schema version {len(MIGRATIONS)} (was 0)" in capsys.readouterr().out
    assert main(["queue", "init", "--config", str(config)]) == 0
    assert "(already current)" in capsys.readouterr().out
    assert main(["status", "--config", str(config), "--json"]) == 0
    assert '"pending": 0' in capsys.readouterr().out


def test_the_daemon_runs_on_the_postgresql_store(folders: Folders, postgres_url: str, tmp_path: Path) -> None:
    from daemon.settings import load_settings
    from daemon.watch.runner import Daemon

    settings = load_settings(_config(tmp_path, postgres_url, folders))
    daemon = Daemon(settings=settings, folders=folders, model=BrightModel())
    with Running(daemon) as running:
        for name in ("a.png", "shoot/b.png"):
            write_image(folders.input / name, subject_image(60, 80, (20, 15, 60, 45)))
        wait_until(lambda: len(list(folders.output.rglob("*.png"))) == 2, what="both cutouts")
        running.signal(2)
        assert running.finished() == 0
    store = PostgresStore(postgres_url)
    assert store.counts()["done"] == 2
    store.close()


def test_status_lists_every_daemon_of_the_fleet(folders: Folders, postgres_url: str) -> None:
    import io

    from daemon.cli.status import collect_status, print_status
    from daemon.store.jobs import WorkerInfo

    queue = QueueSettings(store="postgresql", url=postgres_url)
    store = PostgresStore(postgres_url)
    store.report_worker(WorkerInfo(worker="mini:/s", host="mac-mini", pid=7, device="mps", model="birefnet@abc",
                                   started_at=0.0, seen_at=0.0, done=12, current="shoot/a.jpg", leader=True))
    store.close()
    report = collect_status(folders.state, queue_settings=queue)
    out = io.StringIO()
    print_status(report, out=out)
    assert "fleet: 1 daemons" in out.getvalue()
    assert "mac-mini pid 7 (watcher, mps, birefnet@abc): 12 done, on shoot/a.jpg" in out.getvalue()


def test_status_shows_a_daemon_not_heard_from_for_a_lease_as_gone_never_as_the_watcher(
    folders: Folders, postgres_url: str
) -> None:
    import io

    from daemon.cli.status import collect_status, print_status
    from daemon.store.jobs import WorkerInfo

    clock = FakeClock(1000.0)
    store = PostgresStore(postgres_url, clock=clock)
    for worker, pid in (("killed:/s", 7), ("new:/s", 8)):  # the killed one last beat more than a lease (60 s) ago
        store.report_worker(WorkerInfo(worker=worker, host="mac-mini", pid=pid, device="mps", model="m",
                                       started_at=0.0, seen_at=0.0, done=0, current=None, leader=True))
        clock.advance(61.0 if pid == 7 else 1.0)
    store.close()
    out = io.StringIO()
    print_status(collect_status(folders.state, queue_settings=QueueSettings(store="postgresql", url=postgres_url),
                                now=clock()), out=out)
    shown = out.getvalue()
    assert "mac-mini pid 7: not heard from for 62 s (stopped or dead" in shown
    assert "mac-mini pid 8 (watcher" in shown and shown.count("watcher") == 1


def test_doctor_checks_the_shared_store_and_names_the_fix(postgres_server: str, postgres_url: str) -> None:
    from daemon.cli.doctor import check_shared_store
    from tests.pgserver import fresh_store_url

    ok = check_shared_store(QueueSettings(store="postgresql", url=postgres_url))
    assert ok.status == "ok" and "pending 0" in ok.detail
    bare = check_shared_store(QueueSettings(store="postgresql", url=fresh_store_url(postgres_server)))
    assert bare.status == "FAIL" and bare.fix == "cutout queue init --config F"


def test_status_with_the_store_away_says_so_and_since_when_this_machine_lost_it(
    folders: Folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from daemon.cli.main import main
    from daemon.store.session import SessionRecord
    from daemon.store.statedir import acquire_lock

    url = f"postgresql://cutout@/cutout?host={tmp_path}&port=1&connect_timeout=1"
    config = _config(tmp_path, url, folders)
    folders.state.mkdir()
    lock = acquire_lock(folders.state)  # this machine's daemon runs, and lost the store at 10:02
    session = SessionRecord(folders.state)
    session.begin(now=0.0)
    session.publish_live(waiting=[], volume_problem=None, now=0.0,
                         store_problem="unreachable since 2026-11-30 10:02:11: server closed the connection")
    try:
        assert main(["status", "--config", str(config)]) == 5
    finally:
        lock.close()
    out = capsys.readouterr().out
    assert "STORE UNREACHABLE: the PostgreSQL job store" in out and "unreachable since 2026-11-30 10:02:11" in out


@pytest.mark.slow
def test_a_rescan_longer_than_the_lease_never_hands_this_workers_job_to_another(
    folders: Folders, postgres_url: str, tmp_path: Path
) -> None:
    """The watch thread spends 3 s in each rescan of a (slow, large) NAS tree, the lease is 1.5 s,
    the model takes 3 s: the heartbeat runs on its own thread, so another machine never gets the
    job while this one works on it."""
    import time

    from daemon.settings import load_settings
    from daemon.watch.runner import Daemon
    from daemon.watch.settle import reconcile
    from tests.test_runner import Running

    def slow_scan(**kwargs: Any) -> int:
        time.sleep(3.0)
        return reconcile(**kwargs)

    class SlowModel(BrightModel):
        def predict(self, batch: Any) -> Any:
            if batch.shape[-1] == 64 and batch.any():  # not the blank warm-up
                time.sleep(3.0)
            return super().predict(batch)

    settings = load_settings(overrides={
        "folders.input": folders.input, "folders.output": folders.output, "folders.quarantine": folders.quarantine,
        "folders.state": folders.state, "watch.settle_seconds": 0.05, "watch.reconcile_interval_seconds": 0.1,
        "pipeline.target_size": 64, "queue.store": "postgresql", "queue.url": postgres_url, "queue.lease_seconds": 1.5,
    })
    other = PostgresStore(postgres_url, worker="other-machine", lease_seconds=1.5)
    daemon = Daemon(settings=settings, folders=folders, model=SlowModel(), scan=slow_scan)
    taken = []
    with capture_logs() as logs, Running(daemon):
        write_image(folders.input / "a.png", subject_image(60, 80, (20, 15, 60, 45)))
        wait_until(lambda: other.counts()["running"] == 1, what="the job claimed", timeout=30)
        while other.counts()["running"] == 1:
            taken.append(other.claim())  # the lease held by the heartbeat: nothing to take
            time.sleep(0.2)
        wait_until(lambda: (folders.output / "a.png").exists(), what="the cut-out", timeout=30)
    job = other.get(P("a.png"))
    other.close()
    assert taken and all(job is None for job in taken)
    assert job is not None and job.state == "done" and job.attempts == 1
    assert [e for e in logs if e["event"] == "claim_lost"] == []
