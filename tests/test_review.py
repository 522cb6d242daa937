"""The review step: a doubtful cut-out waits in the review folder, and a person approves,
rejects or redoes it; in both stores, with real files and the worker that made it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest

from daemon.errors import ConfigError
from daemon.folders.outputs import Folders, OriginalsPolicy
from daemon.pipeline.constants import PipelineParams
from daemon.settings import QueueSettings
from daemon.store import review
from daemon.store.configured import open_store
from daemon.store.jobs import Fingerprint, JobStore
from daemon.store.steering import retry
from daemon.testing import BrightModel, FakeClock
from daemon.work.worker import Worker
from tests.conftest import foggy_image, subject_image, write_image

P = PurePosixPath


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    made = Folders(input=tmp_path / "in", output=tmp_path / "out", quarantine=tmp_path / "q",
                   archive=tmp_path / "archive", state=tmp_path / "state", review=tmp_path / "review")
    for path in (made.input, made.output, made.quarantine, made.state, tmp_path / "review"):
        path.mkdir()
    return made


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest) -> QueueSettings:
    if request.param == "sqlite":
        return QueueSettings(max_attempts=3, retry_base_seconds=5, retry_max_seconds=60)
    return QueueSettings(store="postgresql", url=request.getfixturevalue("postgres_url"))


@pytest.fixture
def queue(folders: Folders, settings: QueueSettings, clock: FakeClock) -> Iterator[JobStore]:
    store = open_store(settings, state=folders.state, clock=clock)
    yield store
    store.close()


def _worker(folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock, *,
            policy: OriginalsPolicy = "keep", review_above: float = 0.5) -> Worker:
    return Worker(model=BrightModel(), params=PipelineParams(target_size=128), folders=folders, queue=queue,
                  queue_settings=settings, policy=policy, in_flight=2, cpu_threads=2, clock=clock,
                  review_above=review_above)


def _drop(folders: Folders, queue: JobStore, name: str, *, foggy: bool) -> Path:
    image = foggy_image(200, 200) if foggy else subject_image(200, 200, (40, 40, 160, 160))
    path = write_image(folders.input / name, image)
    queue.offer(P(name), Fingerprint.of(path))
    return path


def _run(worker: Worker, queue: JobStore) -> None:
    for _ in range(300):
        worker.run_once(idle_wait=0.02)
        counts = queue.counts()
        if counts["running"] == 0 and counts["pending"] == 0:
            worker.close()
            return
    raise AssertionError(f"the worker did not finish: {queue.counts()}")


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_doubtful_cut_out_waits_for_review_with_its_original_and_a_clean_one_is_delivered(
    folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock
) -> None:
    _drop(folders, queue, "shoot/foggy.png", foggy=True)
    _drop(folders, queue, "shoot/clean.png", foggy=False)
    _run(_worker(folders, queue, settings, clock, policy="delete"), queue)
    assert folders.review is not None
    assert _files(folders.review) == ["shoot/foggy.png"]
    assert _files(folders.output) == ["shoot/clean.png"]
    assert _files(folders.input) == ["shoot/foggy.png"]  # deleted once delivered; the doubtful one waits
    held = queue.get(P("shoot/foggy.png"))
    assert held is not None and held.state == "review" and (held.doubt or 0) > 0.5 and held.doubt_parts
    [(job, paths)] = review.waiting(folders, queue_settings=settings)
    assert job.source == P("shoot/foggy.png") and paths == [folders.review / "shoot/foggy.png"]


def test_approve_delivers_the_waiting_cut_out_and_then_applies_the_originals_policy(
    folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock
) -> None:
    _drop(folders, queue, "shoot/foggy.png", foggy=True)
    _run(_worker(folders, queue, settings, clock), queue)
    assert folders.review is not None
    waiting = (folders.review / "shoot/foggy.png").read_bytes()
    lines = review.approve(folders, target=folders.review / "shoot/foggy.png", policy="archive",
                           queue_settings=settings)
    assert lines == [f"approved: shoot/foggy.png -> {folders.output / 'shoot/foggy.png'} (the original archived to "
                     f"{folders.archive / 'shoot/foggy.png'})"]
    assert (folders.output / "shoot/foggy.png").read_bytes() == waiting
    assert _files(folders.review) == [] and _files(folders.input) == []
    done = queue.get(P("shoot/foggy.png"))
    assert done is not None and done.state == "done"
    again = review.approve(folders, target=None, policy="keep", queue_settings=settings)
    assert again == []  # nothing waits any more
    with pytest.raises(ConfigError, match="no cut-out waiting for review"):
        review.approve(folders, target=Path("shoot/foggy.png"), policy="keep", queue_settings=settings)


def test_reject_quarantines_the_original_with_the_cut_out_beside_it_and_retry_brings_it_back(
    folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock
) -> None:
    _drop(folders, queue, "shoot/foggy.png", foggy=True)
    _run(_worker(folders, queue, settings, clock), queue)
    [line] = review.reject(folders, target=Path("shoot/foggy.png"), why="the hair is cut off", queue_settings=settings)
    assert line.startswith("rejected: shoot/foggy.png -> ") and "foggy.png.cutout-foggy.png" in line
    assert _files(folders.quarantine) == ["shoot/foggy.png", "shoot/foggy.png.cutout-foggy.png",
                                          "shoot/foggy.png.error.json"]
    assert "the hair is cut off" in (folders.quarantine / "shoot/foggy.png.error.json").read_text()
    assert '"reason": "rejected"' in (folders.quarantine / "shoot/foggy.png.error.json").read_text()
    assert folders.review is not None and _files(folders.review) == [] and _files(folders.input) == []
    failed = queue.get(P("shoot/foggy.png"))
    assert failed is not None and failed.state == "failed" and failed.reason == "rejected"
    assert retry(folders, target=Path("shoot/foggy.png"), every=False, queue_settings=settings) == [
        "queued again: shoot/foggy.png"]
    _run(_worker(folders, queue, settings, clock, review_above=1.0), queue)  # a person let it through this time
    assert _files(folders.output) == ["shoot/foggy.png"]
    assert _files(folders.quarantine) == []  # its report and the rejected cut-out went with its success


def test_redo_makes_the_cut_out_again_and_it_replaces_the_waiting_one_wherever_it_goes(
    folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock
) -> None:
    _drop(folders, queue, "foggy.png", foggy=True)
    _run(_worker(folders, queue, settings, clock), queue)
    assert review.redo(folders, target=Path("foggy.png"), queue_settings=settings) == ["queued again: foggy.png"]
    job = queue.get(P("foggy.png"))
    assert job is not None and job.state == "pending" and job.doubt is None
    _run(_worker(folders, queue, settings, clock), queue)  # as doubtful as before: waits again, once
    assert folders.review is not None and _files(folders.review) == ["foggy.png"] and _files(folders.output) == []
    review.redo(folders, target=None, queue_settings=settings)
    _run(_worker(folders, queue, settings, clock, review_above=1.0), queue)  # now judged good enough
    assert _files(folders.output) == ["foggy.png"] and _files(folders.review) == []
    done = queue.get(P("foggy.png"))
    assert done is not None and done.state == "done"


def test_the_review_commands_refuse_when_the_review_step_is_off(
    folders: Folders, settings: QueueSettings
) -> None:
    with pytest.raises(ConfigError, match="review.folder"):
        review.approve(replace(folders, review=None), target=None, policy="keep", queue_settings=settings)


def test_an_approve_whose_cut_out_was_deleted_by_hand_says_so_and_keeps_the_job_waiting(
    folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock
) -> None:
    _drop(folders, queue, "foggy.png", foggy=True)
    _run(_worker(folders, queue, settings, clock), queue)
    assert folders.review is not None
    (folders.review / "foggy.png").unlink()
    [line] = review.approve(folders, target=None, policy="keep", queue_settings=settings)
    assert line.startswith("skipped: cannot approve foggy.png") and "cutout review redo" in line
    job = queue.get(P("foggy.png"))
    assert job is not None and job.state == "review"
