"""What one job costs the store: its transactions (and, on PostgreSQL, its statements), counted
as a real worker takes a real file through the stages, on both stores.

The targets are issue 22's: at most 5 transactions and 15 statements per job on PostgreSQL.
Every `db()` block is a transaction; on PostgreSQL a block that is not `single` also sends
BEGIN and COMMIT, so it counts two statements more (what pg_stat_statements sees in
`benchmarks/fleet.py`). The counts are of a second job, once the first has read the
database clock and swept the lost leases: what a job costs in a stream of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from daemon.folders.outputs import Folders
from daemon.pipeline import PipelineParams
from daemon.settings import QueueSettings
from daemon.store.jobs import Fingerprint, JobStore
from daemon.store.postgres import CLOCK_JUMP_SECONDS, DatabaseClock
from daemon.store.sqlite import JobQueue
from daemon.testing import BrightModel, FakeClock, wait_until
from daemon.work import stages
from daemon.work.worker import Worker
from tests.conftest import Work, counted, open_store, subject_image, write_image

LEASE = 60.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[JobStore]:
    # The database's own clock, as a fleet runs: reading it is part of what a job costs.
    made = open_store(request, tmp_path, clock, database_clock=True, worker="cost", lease_seconds=LEASE)
    yield made
    made.close()


@pytest.fixture
def worker(tmp_path: Path, store: JobStore, clock: FakeClock) -> Iterator[Worker]:
    folders = Folders(input=tmp_path / "in", output=tmp_path / "out", quarantine=tmp_path / "q",
                      archive=tmp_path / "archive", state=tmp_path / "state")
    for path in (folders.input, folders.output, folders.quarantine, folders.state):
        path.mkdir(exist_ok=True)
    made = Worker(model=BrightModel(), params=PipelineParams(), folders=folders, queue=store,
                  queue_settings=QueueSettings(lease_seconds=LEASE), policy="keep", in_flight=1,
                  cpu_threads=2, clock=clock)
    yield made
    made.close()


def _offer(worker: Worker, name: str) -> None:
    path = write_image(worker.folders.input / name, subject_image(120, 160, (40, 30, 120, 90)))
    assert worker.queue.offer(PurePosixPath(name), Fingerprint.of(path)) == "queued"


def _one_job(worker: Worker, name: str, *, before_the_model: Callable[[], object] = lambda: None) -> None:
    """Offer `name`, claim it, let its decode end, then the model and the finish: the order
    of a worker whose model is the bottleneck (each image decoded before the model is free)."""
    _offer(worker, name)
    worker.stages.top_up()
    wait_until(lambda: worker.stages._ready[0].prepared.done(), what="the decode")
    before_the_model()
    assert worker.stages.infer_next()
    wait_until(lambda: worker.stages.idle, what="the finish")
    assert (worker.folders.output / name).with_suffix(".png").exists()


def _work_of(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> Work:
    _one_job(worker, "warm-up.png")  # the first job reads the database clock and sweeps leases
    postgres = not isinstance(worker.queue, JobQueue)
    return counted(worker.queue, monkeypatch, begin_and_commit=2 if postgres else 0)


def test_a_job_decoded_before_the_model_is_free_costs_five_transactions_and_at_most_12_statements(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = _work_of(worker, monkeypatch)
    _one_job(worker, "a.png")
    # The offer, the claim (into decode), out of the stages while it waits, into the model, the finish.
    assert work.transactions == 5
    if not isinstance(worker.queue, JobQueue):  # issue 22's target is 15; the claim's own statement alone gives 12
        assert work.statements <= 12, work


def test_a_job_the_model_already_waits_for_costs_three_transactions_no_stage_marks(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = _work_of(worker, monkeypatch)
    decode_may_end, prepare = threading.Event(), stages.prepare

    def slow_prepare(*args: Any, **kwargs: Any) -> Any:
        decode_may_end.wait(10)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(stages, "prepare", slow_prepare)
    _offer(worker, "a.png")
    worker.stages.top_up()
    task, model = worker.stages._ready[0], threading.Thread(target=worker.stages.infer_next)
    model.start()  # the model waits on the decode: the job goes from one stage into the next
    wait_until(task.awaited.is_set, what="the model waiting for the image")
    decode_may_end.set()
    model.join(10)
    wait_until(lambda: worker.stages.idle, what="the finish")
    assert (worker.folders.output / "a.png").exists()
    assert work.transactions == 3  # the offer, the claim (into decode), the finish


def test_a_lease_renewed_long_ago_is_renewed_again_before_the_finish(
    worker: Worker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = _work_of(worker, monkeypatch)
    # A third of a lease since the claim: another worker could take it over before long, so the
    # finish is preceded by a heartbeat that proves the claim still holds.
    _one_job(worker, "a.png", before_the_model=lambda: clock.advance(LEASE / 3 + 1))
    assert work.transactions == 6


# --- The database clock, read twice a minute -------------------------------------------------------
class _Clocks:
    def __init__(self) -> None:
        self.monotonic, self.wall, self.database, self.reads = 100.0, 1_000_000.0, 5_000.0, 0

    def read(self) -> float:
        self.reads += 1
        return self.database

    def tick(self, seconds: float, *, wall: float | None = None) -> None:
        self.monotonic += seconds
        self.wall += seconds if wall is None else wall
        self.database += seconds


@pytest.fixture
def clocks() -> _Clocks:
    return _Clocks()


def _clock(clocks: _Clocks, *, refresh: float = 30.0) -> DatabaseClock:
    return DatabaseClock(refresh_seconds=refresh, monotonic=lambda: clocks.monotonic, wall=lambda: clocks.wall)


def test_the_database_clock_is_read_once_and_carried_forward_by_the_monotonic_clock(clocks: _Clocks) -> None:
    clock = _clock(clocks)
    assert clock.now(clocks.read) == 5_000.0
    clocks.tick(12.5)
    assert clock.now(clocks.read) == 5_012.5
    assert clocks.reads == 1


def test_the_database_clock_is_read_again_after_the_refresh_interval(clocks: _Clocks) -> None:
    clock = _clock(clocks, refresh=30.0)
    clock.now(clocks.read)
    clocks.tick(29.0)
    clock.now(clocks.read)
    assert clocks.reads == 1
    clocks.database += 0.25  # the two clocks drifted apart: the next read corrects it
    clocks.tick(1.0)
    assert clock.now(clocks.read) == clocks.database and clocks.reads == 2


def test_a_machine_that_slept_or_had_its_wall_clock_set_reads_the_database_clock_again(clocks: _Clocks) -> None:
    clock = _clock(clocks)
    clock.now(clocks.read)
    clocks.tick(1.0, wall=1.0 + CLOCK_JUMP_SECONDS / 2)  # ordinary jitter between the two clocks
    clock.now(clocks.read)
    assert clocks.reads == 1
    clocks.tick(1.0, wall=3_600.0)  # asleep for an hour: monotonic time stood still
    clocks.database += 3_599.0
    assert clock.now(clocks.read) == clocks.database and clocks.reads == 2
