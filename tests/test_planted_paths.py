"""Links planted in the daemon's own folders are never followed, and a folder where an output
goes is a reason code, not a loop: the real daemon in-process (real queue, observer, threads).

Whoever can write in a shared output or quarantine folder could plant `out/shop -> /elsewhere`;
a daemon that followed it would write, move and overwrite outside its folders.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
from structlog.testing import capture_logs

from daemon.folders.outputs import Folders
from daemon.store.sqlite import JobQueue
from daemon.store.statedir import QUEUE_FILE
from daemon.testing import BrightModel, wait_until
from daemon.watch.runner import Daemon
from tests.conftest import write_image
from tests.test_runner import Running, drop, folders, settings_for  # noqa: F401  (the fixture)

FAST_RETRIES = {"queue.retry_base_seconds": 0.01, "queue.retry_max_seconds": 0.02}


def _job(folders: Folders, rel: str) -> tuple[str, str | None, str | None]:
    queue = JobQueue(folders.state / QUEUE_FILE)
    try:
        job = queue.get(PurePosixPath(rel))
        return ("", None, None) if job is None else (job.state, job.reason, job.message)
    finally:
        queue.close()


def _elsewhere(tmp_path: Path) -> Path:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"someone else's file")
    return outside


def test_a_link_planted_in_the_output_folder_is_never_written_through(folders: Folders, tmp_path: Path) -> None:
    outside = _elsewhere(tmp_path)
    (folders.output / "shop").symlink_to(outside)
    daemon = Daemon(settings=settings_for(folders, **FAST_RETRIES), folders=folders, model=BrightModel())
    with Running(daemon):
        drop(folders, "shop/x.jpg", "y.jpg")
        # the row says failed before the move: wait for the report, written last
        wait_until(lambda: (folders.quarantine / "shop" / "x.jpg.error.json").exists()
                   and (folders.output / "y.png").exists(), what="the blocked file quarantined, the other one done",
                   timeout=30)
    assert sorted(p.name for p in outside.iterdir()) == ["x.png"] and (outside / "x.png").read_bytes() == b"someone else's file"
    state, reason, message = _job(folders, "shop/x.jpg")
    assert reason == "output_blocked" and f"{folders.output / 'shop'} is a symbolic link" in str(message)
    assert (folders.quarantine / "shop" / "x.jpg").exists()  # the quarantine's own folder: a real one


def test_a_link_planted_in_the_quarantine_folder_is_never_moved_through(folders: Folders, tmp_path: Path) -> None:
    outside = _elsewhere(tmp_path)
    (folders.quarantine / "bad").symlink_to(outside)
    daemon = Daemon(settings=settings_for(folders), folders=folders, model=BrightModel())
    with Running(daemon):
        write_image(folders.input / "bad" / "dark.png", np.full((60, 80, 3), 20, np.uint8))
        wait_until(lambda: (folders.quarantine / "bad__dark.png.error.json").exists(), what="the dark file quarantined",
                   timeout=30)
    assert sorted(p.name for p in outside.iterdir()) == ["x.png"]
    assert (folders.quarantine / "bad__dark.png").exists() and (folders.quarantine / "bad__dark.png.error.json").exists()
    assert _job(folders, "bad/dark.png")[1] == "no_foreground"


def test_a_link_planted_in_the_archive_is_never_moved_through(folders: Folders, tmp_path: Path) -> None:
    outside = _elsewhere(tmp_path)
    folders.archive.mkdir()
    (folders.archive / "shop").symlink_to(outside)
    daemon = Daemon(settings=settings_for(folders, originals="archive"), folders=folders, model=BrightModel())
    with Running(daemon):
        drop(folders, "shop/x.jpg")
        wait_until(lambda: (folders.archive / "shop__x.jpg").exists(), what="the original archived", timeout=30)
    assert sorted(p.name for p in outside.iterdir()) == ["x.png"] and (folders.output / "shop" / "x.png").exists()


def test_a_folder_named_like_an_output_quarantines_the_file_after_the_usual_attempts_and_publishes_nothing(
    folders: Folders,
) -> None:
    """`in/z-mask.png/inner.jpg` made the folder `out/z-mask.png/`; then `z.jpg` with a mask recipe
    would write `out/z-mask.png`: neither its cut-out nor its mask is published, it is not retried
    forever, and the reason says what is in the way."""
    settings = settings_for(folders, **FAST_RETRIES, recipes={"mask": {"mask": "also"}},
                            routes=[{"match": "z.jpg", "recipes": ["mask"]}])
    daemon = Daemon(settings=settings, folders=folders, model=BrightModel())
    with Running(daemon):
        drop(folders, "z-mask.png/inner.jpg")
        wait_until(lambda: (folders.output / "z-mask.png" / "inner.png").exists(), what="the folder's cut-out")
        drop(folders, "z.jpg")
        wait_until(lambda: (folders.quarantine / "z.jpg.error.json").exists(), what="z.jpg quarantined", timeout=30)
    state, reason, message = _job(folders, "z.jpg")
    assert reason == "output_blocked" and f"{folders.output / 'z-mask.png'} is a folder" in str(message)
    assert not (folders.output / "z.png").exists()  # all or none
    queue = JobQueue(folders.state / QUEUE_FILE)
    job = queue.get(PurePosixPath("z.jpg"))
    queue.close()
    assert job is not None and job.attempts == 3  # the usual attempts, then quarantine


def test_an_original_whose_check_missed_the_hot_folder_is_deleted_at_the_next_rescan(folders: Folders) -> None:
    """`originals: delete`: the hot folder is renamed away while the job finishes, so the check
    after it cannot find the original (`original_changed_during_processing`) and leaves it. Once
    the folder is back, the next rescan deletes it: no restart needed."""
    import os
    import threading
    from typing import Any

    away, back = threading.Event(), threading.Event()

    class RenamingModel(BrightModel):
        def predict(self, batch: Any) -> Any:
            if batch.any() and not away.is_set():  # not the blank warm-up
                os.rename(folders.input, folders.input.with_name("in-away"))
                away.set()
                back.wait(10)  # renamed back only after the job's end looked for its original
            return super().predict(batch)

    settings = settings_for(folders, originals="delete", **{"watch.reconcile_interval_seconds": 0.5})
    daemon = Daemon(settings=settings, folders=folders, model=RenamingModel())
    with capture_logs() as logs, Running(daemon):
        drop(folders, "x.jpg")
        assert away.wait(30)
        back.set()
        wait_until(lambda: (folders.output / "x.png").exists(), what="the cut-out")
        wait_until(lambda: any(e["event"] == "original_changed_during_processing" for e in logs),
                   what="the end's check, run against the missing folder")
        os.rename(folders.input.with_name("in-away"), folders.input)
        wait_until(lambda: not (folders.input / "x.jpg").exists(), what="the original deleted by a rescan",
                   timeout=30)
    assert (folders.output / "x.png").exists()
    assert [e["path"] for e in logs if e["event"] == "original_changed_during_processing"] == ["x.jpg"]
