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


def _held(folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock, name: str) -> Path:
    """One doubtful file, made by the worker and waiting for review: the review folder."""
    _drop(folders, queue, name, foggy=True)
    _run(_worker(folders, queue, settings, clock), queue)
    assert folders.review is not None
    return folders.review


def _files(root: Path) -> list[str]:
    """The images under `root` (not the daemon's own `.cutout-` claim and approve marks)."""
    found = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.name.startswith(".cutout-"))
    return sorted(found) if root.exists() else []


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
    _held(folders, queue, settings, clock, "shoot/foggy.png")
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
    _held(folders, queue, settings, clock, "shoot/foggy.png")
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
    _held(folders, queue, settings, clock, "foggy.png")
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
    _held(folders, queue, settings, clock, "foggy.png")
    assert folders.review is not None
    (folders.review / "foggy.png").unlink()
    [line] = review.approve(folders, target=None, policy="keep", queue_settings=settings)
    assert line.startswith("skipped: cannot approve foggy.png") and "cutout review redo" in line
    job = queue.get(P("foggy.png"))
    assert job is not None and job.state == "review"


# --- a kill during an approve ---------------------------------------------------------------------
_APPROVE_KILLED_AFTER = """
import os, signal, sys
from daemon.folders import review
from daemon.cli.main import main

moves, real = [0], review.move_beneath

def killed_after_enough(*args, **kwargs):
    real(*args, **kwargs)
    moves[0] += 1
    if moves[0] >= int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)  # as a power cut or kill -9 would, between two moves

review.move_beneath = killed_after_enough
sys.exit(main(sys.argv[2:]))
"""
"""`cutout review approve` in a real process that SIGKILLs itself after its Nth file move."""


def _config(tmp_path: Path, folders: Folders, settings: QueueSettings) -> Path:
    import yaml

    assert folders.review is not None
    queue = {"store": settings.store, **({"url": settings.url} if settings.url else {})}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "folders": {"input": str(folders.input), "output": str(folders.output), "state": str(folders.state),
                    "quarantine": str(folders.quarantine), "archive": str(folders.archive)},
        "review": {"folder": str(folders.review)}, "queue": queue, "originals": "archive",
        "recipes": {"default": {"mask": "also"}},  # two files a job: a kill can fall between them
    }))
    return config


@pytest.mark.parametrize("kill_after", [1, 2, 3])
def test_a_kill_during_an_approve_loses_and_duplicates_nothing_and_approving_again_finishes_it(
    tmp_path: Path, folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock, kill_after: int
) -> None:
    import subprocess
    import sys

    from daemon.settings import load_settings, routing

    config = _config(tmp_path, folders, settings)
    rules = routing(load_settings(config))
    queue.name_outputs(rules.name_deriver)
    for name in ("a.png", "b.png"):
        _drop(folders, queue, name, foggy=True)
    worker = Worker(model=BrightModel(), params=PipelineParams(target_size=128), folders=folders, queue=queue,
                    queue_settings=settings, policy="archive", in_flight=2, cpu_threads=2, clock=clock,
                    routing=rules, review_above=0.5)
    _run(worker, queue)
    assert folders.review is not None
    expected = ["a-mask.png", "a.png", "b-mask.png", "b.png"]
    assert _files(folders.review) == expected
    killed = subprocess.run([sys.executable, "-c", _APPROVE_KILLED_AFTER, str(kill_after), "review", "approve",
                             "--all", "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    # Every file whole in exactly one place: none lost, none in both.
    assert sorted(_files(folders.review) + _files(folders.output)) == expected
    assert not set(_files(folders.review)) & set(_files(folders.output))
    jobs = [job for name in ("a.png", "b.png") if (job := queue.get(P(name))) is not None]
    waiting = [job.id for job in jobs if job.state == "review"]
    assert len(waiting) == (2 if kill_after <= 2 else 1)  # the third move is the second job's: the first committed
    marks = [int(p.name.split("-")[2]) for p in folders.review.glob(".cutout-approving-*")]
    assert len(marks) == 1 and marks[0] in waiting  # the cut-short approve left its mark
    again = subprocess.run([sys.executable, "-m", "daemon", "review", "approve", "--all", "--config", str(config)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _files(folders.output) == expected and _files(folders.review) == []
    assert list(folders.review.glob(".cutout-approving-*")) == []  # committed: the marks are gone
    assert {queue.get(P(name)).state for name in ("a.png", "b.png")} == {"done"}  # type: ignore[union-attr]
    assert _files(folders.archive) == ["a.png", "b.png"] and _files(folders.input) == []


@pytest.mark.slow
def test_a_real_daemon_holds_a_doubtful_file_for_review_delivers_a_clean_one_and_cutout_review_approves(
    tmp_path: Path, torchscript_model: Path
) -> None:
    import subprocess
    import sys

    from tests.harness import DaemonProcess

    held = tmp_path / "d" / "review"
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model),
                           settings={"review": {"folder": str(held)}, "originals": "archive"})
    try:
        daemon.start()
        write_image(daemon.input / "shoot" / "clean.png", subject_image(300, 400, (100, 80, 300, 220)))
        write_image(daemon.input / "shoot" / "foggy.png", foggy_image(300, 400))
        daemon.wait_for(lambda: len(daemon.jobs()) == 2, what="both files")
        assert daemon.outputs() == ["shoot/clean.png"]
        assert _files(held) == ["shoot/foggy.png"] and (held / ".cutout-claim.json").is_file()  # claimed too
        assert _files(daemon.input) == ["shoot/foggy.png"]  # archived once delivered; the doubtful one waits
        [waiting] = daemon.jobs("review")
        assert waiting["path"] == "shoot/foggy.png" and float(str(waiting["doubt"])) > 0.5
        listed = subprocess.run([sys.executable, "-m", "daemon", "review", "list", "--config", str(daemon.config)],
                                capture_output=True, text=True, timeout=60, check=True).stdout
        assert str(held / "shoot/foggy.png") in listed and "fog" in listed
        approved = subprocess.run([sys.executable, "-m", "daemon", "review", "approve", str(held / "shoot/foggy.png"),
                                   "--config", str(daemon.config)], capture_output=True, text=True, timeout=60)
        assert approved.returncode == 0 and approved.stdout.startswith("approved: shoot/foggy.png"), approved.stderr
        assert daemon.outputs() == ["shoot/clean.png", "shoot/foggy.png"] and _files(daemon.input) == []
        assert daemon.stop() == 0
    finally:
        daemon.kill_if_running()


def test_a_rebuilt_queue_finds_the_cut_outs_waiting_in_the_review_folder(
    folders: Folders, clock: FakeClock
) -> None:
    from daemon.store.rebuild import rebuild_queue
    from daemon.store.statedir import QUEUE_FILE

    settings = QueueSettings()
    queue = open_store(settings, state=folders.state, clock=clock)
    _drop(folders, queue, "shoot/foggy.png", foggy=True)
    _drop(folders, queue, "shoot/clean.png", foggy=False)
    _run(_worker(folders, queue, settings, clock), queue)
    queue.close()
    for path in folders.state.glob(QUEUE_FILE + "*"):
        path.unlink()  # the queue lost: only the folders remember
    report = rebuild_queue(folders)
    assert (report.done, report.waiting, report.not_done) == (1, 1, 0)
    assert any("1 waiting for review" in line for line in report.lines())
    assert [job for job, _ in review.waiting(folders)][0].source == P("shoot/foggy.png")
    [line] = review.approve(folders, target=None, policy="keep")
    assert line.startswith("approved: shoot/foggy.png")
    assert _files(folders.output) == ["shoot/clean.png", "shoot/foggy.png"]


def test_redo_with_another_recipe_makes_its_files_and_approve_delivers_them_all(
    folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock
) -> None:
    from daemon.folders.routing import Routing
    from daemon.pipeline.recipe import Recipe

    rules = Routing(recipes={"default": Recipe(), "matte": Recipe(mask="also", suffix="-m")})
    queue.name_outputs(rules.name_deriver)
    _drop(folders, queue, "foggy.png", foggy=True)
    worker = Worker(model=BrightModel(), params=PipelineParams(target_size=128), folders=folders, queue=queue,
                    queue_settings=settings, policy="keep", in_flight=2, cpu_threads=2, clock=clock,
                    routing=rules, review_above=0.5)
    _run(worker, queue)
    assert folders.review is not None and _files(folders.review) == ["foggy.png"]
    with pytest.raises(ConfigError, match="no recipe named 'nope'"):
        review.redo(folders, target=None, recipe="nope", queue_settings=settings, routing=rules)
    assert review.redo(folders, target=None, recipe="matte", queue_settings=settings, routing=rules) == [
        "queued again with the recipe matte: foggy.png"]
    again = Worker(model=BrightModel(), params=PipelineParams(target_size=128), folders=folders, queue=queue,
                   queue_settings=settings, policy="keep", in_flight=2, cpu_threads=2, clock=clock,
                   routing=rules, review_above=0.5)
    _run(again, queue)
    job = queue.get(P("foggy.png"))
    assert job is not None and job.state == "review" and job.recipes == ("matte",)
    assert _files(folders.review) == ["foggy-m-mask.png", "foggy-m.png"]  # the old recipe's file went at the redo
    [line] = review.approve(folders, target=None, policy="keep", queue_settings=settings, routing=rules)
    assert line == f"approved: foggy.png -> {folders.output / 'foggy-m.png'}"
    assert _files(folders.output) == ["foggy-m-mask.png", "foggy-m.png"]


def test_an_older_delivered_cut_out_of_the_same_name_is_never_taken_for_an_approved_one(
    folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock
) -> None:
    """The file was delivered once; new content waits for review; its cut-out is deleted by hand.
    The old cut-out in the output folder is not this one: approving must not mark it done (and
    delete the new original)."""
    path = _drop(folders, queue, "a.png", foggy=False)
    _run(_worker(folders, queue, settings, clock), queue)
    write_image(path, foggy_image(180, 240))
    queue.offer(P("a.png"), Fingerprint.of(path))
    _run(_worker(folders, queue, settings, clock), queue)
    assert folders.review is not None and _files(folders.review) == ["a.png"] and _files(folders.output) == ["a.png"]
    (folders.review / "a.png").unlink()
    [line] = review.approve(folders, target=None, policy="delete", queue_settings=settings)
    assert line.startswith("skipped: cannot approve a.png") and path.is_file()
    job = queue.get(P("a.png"))
    assert job is not None and job.state == "review"


def test_a_name_that_is_one_files_original_and_anothers_cut_out_is_refused_as_ambiguous(
    folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock
) -> None:
    for name in ("a.jpg", "a.png"):  # a.jpg is held as a.png, a.png as a.png.png
        _drop(folders, queue, name, foggy=True)
    _run(_worker(folders, queue, settings, clock), queue)
    with pytest.raises(ConfigError, match="names 2 waiting cut-outs"):
        review.reject(folders, target=Path("a.png"), queue_settings=settings)
    assert folders.review is not None
    [line] = review.reject(folders, target=folders.review / "a.png", queue_settings=settings)
    assert line.startswith("rejected: a.jpg")


def test_a_recipe_removed_from_the_config_after_a_redo_chose_it_gives_the_routes_their_say(
    folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock
) -> None:
    from daemon.folders.routing import Routing
    from daemon.pipeline.recipe import Recipe

    before = Routing(recipes={"default": Recipe(), "matte": Recipe(mask="also", suffix="-m")})
    queue.name_outputs(before.name_deriver)
    _held(folders, queue, settings, clock, "foggy.png")
    review.redo(folders, target=None, recipe="matte", queue_settings=settings, routing=before)
    after = Routing(recipes={"default": Recipe()})  # the config lost `matte`
    queue.name_outputs(after.name_deriver)
    job = queue.claim()
    assert job is not None and job.recipes == ("matte",)
    assert [file.path for file in after.files(job.source, claimed=job.output, chosen=job.recipes)] == [P("foggy.png")]
    queue.release(job)
    worker = Worker(model=BrightModel(), params=PipelineParams(target_size=128), folders=folders, queue=queue,
                    queue_settings=settings, policy="keep", in_flight=2, cpu_threads=2, clock=clock,
                    routing=after, review_above=1.0)
    _run(worker, queue)
    assert _files(folders.output) == ["foggy.png"]


def test_a_reject_after_an_approve_was_cut_short_is_refused_until_the_approve_is_finished(
    folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock
) -> None:
    from daemon.folders.review import approve_mark

    _held(folders, queue, settings, clock, "foggy.png")
    job = queue.get(P("foggy.png"))
    assert job is not None and folders.review is not None
    mark = approve_mark(folders, job_id=job.id, token=job.token)
    mark.write_bytes(b"")  # as an approve killed after its first move leaves it
    [line] = review.reject(folders, target=None, queue_settings=settings)
    assert line.startswith("skipped: foggy.png: an approve of it was cut short") and (folders.input / "foggy.png").is_file()
    [line] = review.approve(folders, target=None, policy="keep", queue_settings=settings)
    assert line.startswith("approved: foggy.png") and not mark.exists()


# --- redo with another model -------------------------------------------------------------------------
def test_redo_with_another_model_runs_that_model_at_its_own_size_and_scores_again(
    folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock
) -> None:
    """The daemon's model is unsure of the fog; a person redoes it with another model (here one
    whose threshold sits below the fog, so it is sure of it): delivered, and only that file ran it."""
    from daemon.work.shelf import ModelShelf

    loaded: list[str] = []
    surer = BrightModel(threshold=0.3)

    def load(name: str) -> BrightModel:
        loaded.append(name)
        return surer

    shelf = ModelShelf(model=BrightModel(), params=PipelineParams(target_size=128), load=load,
                       params_of=lambda name: PipelineParams(target_size=160))
    _held(folders, queue, settings, clock, "foggy.png")
    assert review.redo(folders, target=None, model="birefnet-hr", queue_settings=settings) == [
        "queued again with the model birefnet-hr: foggy.png"]
    job = queue.get(P("foggy.png"))
    assert job is not None and job.model == "birefnet-hr"
    _drop(folders, queue, "other.png", foggy=True)  # not chosen for: the daemon's own model, so it waits
    worker = Worker(model=shelf.model, params=shelf.params, folders=folders, queue=queue, queue_settings=settings,
                    policy="keep", in_flight=2, cpu_threads=2, clock=clock, review_above=0.5, models=shelf)
    _run(worker, queue)
    assert loaded == ["birefnet-hr"] and surer.calls == 1
    assert _files(folders.output) == ["foggy.png"] and folders.review is not None
    assert _files(folders.review) == ["other.png"]
    done = queue.get(P("foggy.png"))
    assert done is not None and done.state == "done" and (done.doubt or 0) < 0.5
    assert queue.offer(P("foggy.png"), Fingerprint(1, 2)) == "requeued"  # new content: the daemon's model again
    again = queue.get(P("foggy.png"))
    assert again is not None and again.model is None


def test_a_chosen_model_that_cannot_be_loaded_quarantines_that_file_saying_which_model(
    folders: Folders, queue: JobStore, settings: QueueSettings, clock: FakeClock
) -> None:
    from daemon.errors import ModelLoadError
    from daemon.work.shelf import ModelShelf

    def load(name: str) -> BrightModel:
        raise ModelLoadError(f"{name} is not in the local cache and model.offline is true")

    shelf = ModelShelf(model=BrightModel(), params=PipelineParams(target_size=128), load=load,
                       params_of=lambda name: PipelineParams(target_size=128))
    _held(folders, queue, settings, clock, "foggy.png")
    review.redo(folders, target=None, model="birefnet-hr", queue_settings=settings)
    worker = Worker(model=shelf.model, params=shelf.params, folders=folders, queue=queue, queue_settings=settings,
                    policy="keep", in_flight=2, cpu_threads=2, clock=clock, review_above=0.5, models=shelf)
    _run(worker, queue)
    failed = queue.get(P("foggy.png"))
    assert failed is not None and failed.state == "failed" and failed.reason == "model_error"
    assert failed.message is not None and "the model birefnet-hr chosen for this file could not be loaded" in failed.message
    assert (folders.quarantine / "foggy.png").is_file()
    assert folders.review is not None and _files(folders.review) == []  # its waiting cut-out went with it


def test_the_shelf_holds_one_other_model_at_a_time() -> None:
    from daemon.work.shelf import ModelShelf

    made: list[str] = []
    shelf = ModelShelf(model=BrightModel(), params=PipelineParams(),
                       load=lambda name: made.append(name) or BrightModel(threshold=0.4))  # type: ignore[func-returns-value]
    assert shelf.model_for(None) is shelf.model and shelf.params_for(None) is shelf.params
    first = shelf.model_for("a")
    assert shelf.model_for("a") is first and made == ["a"]
    shelf.model_for("b")
    shelf.model_for("a")  # "a" was let go for "b": loaded again
    assert made == ["a", "b", "a"] and shelf.loads == 3


def test_review_redo_refuses_a_model_name_it_could_not_load(
    tmp_path: Path, folders: Folders, settings: QueueSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon.cli.main import main

    config = _config(tmp_path, folders, settings)
    assert main(["review", "redo", "--all", "--model", "birefnet-huge", "--config", str(config)]) == 2
    assert "--model birefnet-huge:" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_daemon_loads_the_model_a_redo_chose_for_that_file_alone(tmp_path: Path, torchscript_model: Path) -> None:
    import subprocess
    import sys

    from tests import tiny_models
    from tests.harness import DaemonProcess

    other = tiny_models.build_torchscript_model(tmp_path / "other.torchscript")
    held = tmp_path / "d" / "review"
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings={"review": {"folder": str(held)}})
    try:
        daemon.start()
        write_image(daemon.input / "foggy.png", foggy_image(300, 400))
        daemon.wait_for(lambda: len(daemon.jobs("review")) == 1, what="the foggy file waiting")
        redo = subprocess.run([sys.executable, "-m", "daemon", "review", "redo", "foggy.png", "--model", str(other),
                               "--config", str(daemon.config)], capture_output=True, text=True, timeout=60)
        assert redo.stdout == f"queued again with the model {other}: foggy.png\n", redo.stderr
        daemon.wait_for(lambda: len(daemon.jobs("review")) == 2, what="the redone file")
        again = daemon.jobs("review")[-1]
        assert again["model"] == str(other)  # the same rule, as unsure: it waits again, made by the chosen model
        loads = [e for e in daemon.events("model_loaded") if e.get("for_files_that_chose_it")]
        assert [e["model"] for e in loads] == [str(other)]
        assert _files(held) == ["foggy.png"] and daemon.stop() == 0
    finally:
        daemon.kill_if_running()
