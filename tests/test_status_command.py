"""`cutout status` and `cutout retry` against a queue the worker filled."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from daemon.cli.main import main
from daemon.folders.outputs import Folders
from daemon.store.sqlite import JobQueue
from daemon.testing import FakeClock
from tests.test_worker import add, drain, make_worker


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Folders, list[str]]:
    folders = Folders(
        input=tmp_path / "in", output=tmp_path / "out", quarantine=tmp_path / "q",
        archive=tmp_path / "a", state=tmp_path / "state",
    )
    for path in (folders.input, folders.output, folders.quarantine, folders.state):
        path.mkdir()
    clock = FakeClock(time.time())
    queue = JobQueue(folders.state / "queue.sqlite3", clock=clock)
    add(folders, queue, "good.jpg")
    add(folders, queue, "sub/dark.png", np.full((100, 100, 3), 20, np.uint8))
    worker = make_worker(folders, queue, clock)
    drain(worker, queue)
    worker.close()
    add(folders, queue, "waiting.jpg")
    queue.close()
    flags = ["--input", str(folders.input), "--output", str(folders.output),
             "--quarantine", str(folders.quarantine), "--state", str(folders.state)]
    return folders, flags


def test_status_json_counts_states_and_lists_failures_with_reasons(
    filled: tuple[Folders, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    folders, flags = filled
    assert main(["status", "--json", *flags]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"pending": 1, "running": 0, "done": 1, "failed": 1, "review": 0}
    assert report["failures"] == [{
        "file": "sub/dark.png", "reason": "no_foreground", "message": report["failures"][0]["message"],
        "quarantined_as": str(folders.quarantine / "sub" / "dark.png"),
    }]
    assert report["daemon_pid"] is None and report["oldest_pending_age"] >= 0


def test_status_text_says_whether_a_daemon_runs(filled: tuple[Folders, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    _, flags = filled
    assert main(["status", *flags]) == 0
    out = capsys.readouterr().out
    assert "daemon: not running" in out and "pending 1" in out and "sub/dark.png: no_foreground" in out


def test_retry_moves_the_file_back_and_queues_it(filled: tuple[Folders, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    folders, flags = filled
    assert main(["retry", str(folders.quarantine / "sub" / "dark.png"), *flags]) == 0
    assert "queued again: sub/dark.png" in capsys.readouterr().out
    assert (folders.input / "sub" / "dark.png").exists()
    queue = JobQueue(folders.state / "queue.sqlite3")
    assert queue.counts()["pending"] == 2


def test_retry_all_of_one_reason_leaves_the_other_reasons(
    filled: tuple[Folders, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    folders, flags = filled
    assert main(["retry", "--all", "--reason", "truncated", *flags]) == 0
    assert capsys.readouterr().out == "nothing in quarantine for the reason truncated\n"  # dark.png stays
    assert (folders.quarantine / "sub" / "dark.png").exists()
    assert main(["retry", "--all", "--reason", "no_foreground", *flags]) == 0
    assert "queued again: sub/dark.png" in capsys.readouterr().out
    assert main(["retry", "sub/dark.png", "--reason", "x", *flags]) == 2
    assert "--reason goes with --all" in capsys.readouterr().err


def test_retry_of_an_unknown_file_is_a_clear_error(filled: tuple[Folders, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    _, flags = filled
    assert main(["retry", "nope.jpg", *flags]) == 2
    assert "is not a quarantined file" in capsys.readouterr().err


def test_status_without_a_queue_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    assert main(["status", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                 "--state", str(tmp_path / "s")]) == 2
    assert "no queue" in capsys.readouterr().err


def test_a_retry_reason_that_is_no_reason_code_fails_and_lists_the_codes_and_what_is_held(
    filled: tuple[Folders, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    folders, flags = filled
    assert main(["retry", "--all", "--reason", "no-foreground", *flags]) == 2
    said = capsys.readouterr().err
    assert "--reason no-foreground is no reason code" in said and "no_foreground, " in said
    assert "(in quarantine now: no_foreground 1)" in said
    assert (folders.quarantine / "sub" / "dark.png").exists()  # nothing moved
    assert main(["retry", "--all", "--reason", "undecodable", *flags]) == 0  # a real code, nothing held: fine
    assert "nothing in quarantine for the reason undecodable" in capsys.readouterr().out


def test_reprocess_of_a_path_that_is_not_in_the_hot_folder_fails_and_says_so(
    filled: tuple[Folders, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    folders, flags = filled
    assert main(["reprocess", "typo/path", *flags]) == 2
    assert "typo/path is neither a file nor a folder of the hot folder" in capsys.readouterr().err
    assert main(["reprocess", "good.jpg", *flags]) == 0
    assert "queued again: 1 file" in capsys.readouterr().out


def test_status_lists_the_doubtful_cut_outs_with_the_parts_that_made_them_doubtful(
    filled: tuple[Folders, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import PurePosixPath

    from daemon.store.jobs import Fingerprint

    folders, flags = filled
    queue = JobQueue(folders.state / "queue.sqlite3")
    good = queue.get(PurePosixPath("good.jpg"))
    assert good is not None and good.doubt is not None and good.doubt < 0.5  # the worker stored its score
    queue.offer(PurePosixPath("foggy.jpg"), Fingerprint(1, 1))
    waiting, job = queue.claim(), queue.claim()  # waiting.jpg was queued first
    assert waiting is not None and job is not None and job.source == PurePosixPath("foggy.jpg")
    queue.release(waiting)
    queue.finish(job, content_hash="h", fingerprint=Fingerprint(1, 1), publish=lambda: None, doubt=0.83,
                 doubt_parts={"fog": 0.8, "pieces": 0.15, "area": 0.0})
    queue.offer(PurePosixPath("held.jpg"), Fingerprint(1, 1))
    waiting, held = queue.claim(), queue.claim()
    assert waiting is not None and held is not None and held.source == PurePosixPath("held.jpg")
    queue.release(waiting)
    queue.finish(held, content_hash="h", fingerprint=Fingerprint(1, 1), publish=lambda: None, doubt=0.6,
                 doubt_parts={"borders": 0.6}, review=True)
    queue.close()
    assert main(["status", *flags]) == 0
    out = capsys.readouterr().out
    assert "doubtful cut-outs (doubt over 0.5" in out and "foggy.jpg: doubt 0.83 (fog 0.80, pieces 0.15)" in out
    assert "held.jpg: doubt 0.60 (borders 0.60, waits for review)" in out and "WAITING FOR REVIEW: 1 cut-out " in out
    assert "good.jpg: doubt" not in out
    assert main(["status", "--json", *flags]) == 0
    doubtful = json.loads(capsys.readouterr().out)["doubtful"]
    assert doubtful == [{"file": "held.jpg", "output": "held.png", "doubt": 0.6, "parts": {"borders": 0.6},
                         "waits_for_review": True},
                        {"file": "foggy.jpg", "output": "foggy.png", "doubt": 0.83,
                         "parts": {"area": 0.0, "fog": 0.8, "pieces": 0.15}, "waits_for_review": False}]
    config = folders.state.parent / "stricter.yaml"
    config.write_text("review:\n  threshold: 0.7\n")  # the config's threshold decides what is doubtful
    assert main(["status", "--config", str(config), *flags]) == 0
    out = capsys.readouterr().out
    assert "doubt over 0.7" in out and "foggy.jpg: doubt 0.83" in out and "held.jpg: doubt" not in out
