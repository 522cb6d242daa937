"""`cutout watch` as a real process: real observer, real SQLite, real signals and kills."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from tests import tiny_models
from tests.conftest import subject_image, write_image
from tests import harness

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    started: list[harness.DaemonProcess] = []

    class Tracked(harness.DaemonProcess):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(sys.modules[__name__], "DaemonProcess", Tracked)
    yield
    for daemon in started:
        daemon.kill_if_running()


DaemonProcess = harness.DaemonProcess

BOX = (100, 80, 300, 220)
FAST: dict[str, object] = {"pipeline": {"target_size": 256}}
"""The scripted tiny model takes any size: a small square keeps bursts quick."""


def _png_shape(path: Path) -> tuple[int, ...]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"{path} is not a readable PNG"
    return tuple(image.shape)


def _jpeg(tmp_path: Path, name: str = "source.jpg") -> bytes:
    return write_image(tmp_path / "sources" / name, subject_image(300, 400, BOX)).read_bytes()


def _write_slowly(path: Path, data: bytes, *, chunk: int, pause: float) -> threading.Thread:
    """Write in chunks with pauses shorter than the settle window, like a slow network copy."""

    def write() -> None:
        with open(path, "wb") as handle:
            for start in range(0, len(data), chunk):
                handle.write(data[start : start + chunk])
                handle.flush()
                time.sleep(pause)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_every_kind_of_arrival_becomes_exactly_one_output_and_bad_files_are_quarantined(
    tmp_path: Path, torchscript_model: Path
) -> None:
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings={
        "watch": {"settle_seconds": 0.5, "incomplete_timeout_seconds": 3.0},
    })
    write_image(daemon.input / "before" / "early.jpg", subject_image(300, 400, BOX))  # there before start
    daemon.start()
    data = _jpeg(tmp_path)
    write_image(daemon.input / "new" / "deep" / "nested.png", subject_image(300, 400, BOX))
    (daemon.input / "export.jpg.tmp").write_bytes(data)
    (daemon.input / "export.jpg.tmp").rename(daemon.input / "renamed.jpg")
    outside = tmp_path / "card" / "DCIM"
    outside.mkdir(parents=True)
    (outside / "moved.jpg").write_bytes(data)
    shutil.move(str(tmp_path / "card"), str(daemon.input / "card"))
    slow = _write_slowly(daemon.input / "slow.jpg", data, chunk=max(1, len(data) // 8), pause=0.2)
    write_image(daemon.input / "dark.png", np.full((300, 400, 3), 20, np.uint8))
    (daemon.input / "never-finished.jpg").write_bytes(data[: len(data) // 2])
    slow.join()
    expected = ["before/early.png", "card/DCIM/moved.png", "new/deep/nested.png", "renamed.png", "slow.png"]
    daemon.wait_for(lambda: daemon.outputs() == expected and len(daemon.quarantined()) == 2, what="all files")
    assert daemon.stop() == 0
    for name in expected:
        assert _png_shape(daemon.output / name) == (240, 300, 4)
    assert daemon.quarantined() == {"dark.png": "no_foreground", "never-finished.jpg": "truncated"}
    assert sorted(str(job["path"]) for job in daemon.jobs("done")) == sorted(
        name.replace(".png", ".jpg") if not name.startswith("new/") else name for name in expected
    )


def test_kill_9_at_several_points_loses_nothing_and_duplicates_nothing(tmp_path: Path, torchscript_model: Path) -> None:
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings=FAST)
    names = [f"batch/{index:03d}.png" for index in range(40)]
    for name in names:
        write_image(daemon.input / name, subject_image(60, 80, (20, 15, 60, 45)))
    for kill_after in (1, 8, 20):
        daemon.start()
        daemon.wait_for(lambda: len(daemon.outputs()) >= kill_after, what=f"{kill_after} outputs")
        daemon.kill9()
    daemon.start()
    daemon.wait_for(lambda: len(daemon.outputs()) == len(names), what="every output")
    assert daemon.stop() == 0
    assert daemon.outputs() == names
    for name in names:
        assert _png_shape(daemon.output / name) == (60, 80, 4)  # whole PNGs only: padding covers the image
    with sqlite3.connect(daemon.state / "queue.sqlite3") as conn:
        assert conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall() == [("done", 40)]
    assert not [p for p in daemon.output.rglob(".cutout-*")]


def test_a_restart_processes_what_arrived_while_down_and_redoes_nothing(tmp_path: Path, torchscript_model: Path) -> None:
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings=FAST)
    write_image(daemon.input / "first.png", subject_image(60, 80, (20, 15, 60, 45)))
    daemon.start()
    daemon.wait_for(lambda: daemon.outputs() == ["first.png"], what="first output")
    assert daemon.stop() == 0
    first_bytes_time = (daemon.output / "first.png").stat().st_mtime_ns
    write_image(daemon.input / "while-down.png", subject_image(60, 80, (20, 15, 60, 45)))
    daemon.start()
    daemon.wait_for(lambda: daemon.outputs() == ["first.png", "while-down.png"], what="second output")
    assert daemon.stop() == 0
    assert [job["path"] for job in daemon.jobs("done")] == ["first.png", "while-down.png"]
    assert (daemon.output / "first.png").stat().st_mtime_ns == first_bytes_time


def test_replacing_a_file_with_new_content_replaces_its_output_and_a_same_content_redrop_does_not(
    tmp_path: Path, torchscript_model: Path
) -> None:
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings=FAST)
    daemon.start()
    source = write_image(tmp_path / "a.png", subject_image(60, 80, (20, 15, 60, 45)))
    shutil.copy(source, daemon.input / "a.png")
    daemon.wait_for(lambda: len(daemon.jobs("done")) == 1, what="first cutout")
    (daemon.input / "a.png").unlink()
    shutil.copy(source, daemon.input / "a.png")  # same bytes again, new mtime
    write_image(daemon.input / "marker.png", subject_image(60, 80, (20, 15, 60, 45)))
    daemon.wait_for(lambda: len(daemon.jobs("done")) == 2, what="marker")
    write_image(daemon.input / "a.png", subject_image(100, 80, (10, 10, 70, 90)))  # new content
    daemon.wait_for(lambda: len(daemon.jobs("done")) == 3, what="replaced cutout")
    assert daemon.stop() == 0
    assert [job["path"] for job in daemon.jobs("done")] == ["a.png", "marker.png", "a.png"]
    assert _png_shape(daemon.output / "a.png") == (100, 80, 4)


def test_an_input_that_kills_the_process_is_quarantined_after_max_attempts(tmp_path: Path) -> None:
    model_dir = tiny_models.build_poison_hf_model_dir(tmp_path / "poison-model")
    daemon = DaemonProcess(tmp_path / "d", model=f"hf:{model_dir}", settings={
        **FAST, "queue": {"max_attempts": 2}, "worker": {"in_flight": 1},
    })
    poison = np.zeros((64, 64, 3), np.uint8)
    poison[:, :] = tiny_models.POISON_RGB
    write_image(daemon.input / "poison.png", poison)
    starts = 0
    while not daemon.quarantined() and starts < 6:  # launchd's KeepAlive, by hand
        daemon.start()
        starts += 1
        daemon.wait_for(lambda: daemon.process is not None and daemon.process.poll() is not None
                        or bool(daemon.quarantined()), what="death or quarantine", timeout=90)
    assert daemon.quarantined() == {"poison.png": "crashed"}
    assert starts == 3  # two deaths, then quarantined on the third start without running it
    assert len(daemon.events("previous_process_crashed")) == 2  # each death's traceback, logged at the next start
    write_image(daemon.input / "good.png", subject_image(60, 80, (20, 15, 60, 45)))
    daemon.wait_for(lambda: daemon.outputs() == ["good.png"], what="a good file after the poison")
    assert daemon.stop() == 0


def test_sigterm_exits_zero_with_the_queue_consistent(tmp_path: Path, torchscript_model: Path) -> None:
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings=FAST)
    for index in range(30):
        write_image(daemon.input / f"{index}.png", subject_image(60, 80, (20, 15, 60, 45)))
    daemon.start()
    daemon.wait_for(lambda: len(daemon.outputs()) >= 3, what="some outputs")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_for_exit(timeout=15) == 0
    with sqlite3.connect(daemon.state / "queue.sqlite3") as conn:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    assert "running" not in states and states.get("done", 0) == len(daemon.outputs())


def test_a_second_signal_exits_at_once_even_mid_inference_and_loses_nothing(tmp_path: Path) -> None:
    model_dir = tiny_models.build_slow_hf_model_dir(tmp_path / "slow-model", seconds=4.0)
    daemon = DaemonProcess(tmp_path / "d", model=f"hf:{model_dir}", settings=FAST)
    daemon.start()
    write_image(daemon.input / "a.png", subject_image(60, 80, (20, 15, 60, 45)))
    daemon.wait_for(lambda: bool(daemon.events("file_queued")), what="queued")
    time.sleep(0.5)  # the forward pass is now sleeping in the inference thread
    daemon.signal(signal.SIGTERM)
    daemon.wait_for(lambda: bool(daemon.events("stopping")), what="first signal handled", timeout=2)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_for_exit(timeout=2) == 130
    assert daemon.outputs() == []
    daemon.start()
    daemon.wait_for(lambda: daemon.outputs() == ["a.png"], what="the output after restart")
    assert daemon.stop() == 0


def test_a_model_that_cannot_run_at_the_configured_size_is_refused_at_start(tmp_path: Path) -> None:
    exported = tmp_path / "fixed.torchscript"
    from daemon.pipeline.model import export_torchscript

    class FixedSize(torch.nn.Module):
        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            return batch[:, :1].reshape(1, 1, 1088, 1088)  # only a 1088 input has this many elements

    export_torchscript(FixedSize(), out=exported)
    daemon = DaemonProcess(tmp_path / "d", model=str(exported), settings=FAST)
    completed = _refusal(daemon.config)
    assert completed.returncode == 3  # ModelLoadError.exit_status
    assert "the model does not run on a 256x256 input (pipeline.target_size)" in completed.stderr


def test_a_burst_of_500_files_is_processed_once_each(tmp_path: Path, torchscript_model: Path) -> None:
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings=FAST)
    daemon.start()
    staging = tmp_path / "staging"
    encoded = cv2.imencode(".png", cv2.cvtColor(subject_image(40, 40, (10, 10, 30, 30)), cv2.COLOR_RGB2BGR))[1]
    for index in range(500):
        (staging / f"{index // 100}").mkdir(parents=True, exist_ok=True)
        (staging / f"{index // 100}" / f"{index:03d}.png").write_bytes(encoded.tobytes())
    for folder in sorted(staging.iterdir()):
        shutil.move(str(folder), str(daemon.input / folder.name))
    daemon.wait_for(lambda: len(daemon.outputs()) == 500, what="500 outputs", timeout=300)
    assert daemon.stop() == 0
    done = [str(job["path"]) for job in daemon.jobs("done")]
    assert len(done) == 500 and len(set(done)) == 500


def _refusal(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "watch", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"folders": {"output": "{input}/out"}}, "folders.output ({input}/out) is inside folders.input ({input})"),
        ({"folders": {"quarantine": "{root}"}}, "folders.quarantine ({root}) contains folders.input ({input})"),
        ({"folders": {"input": "{root}/missing"}}, "hot folder {root}/missing does not exist"),
        ({"watch": {"settle_seconds": "soon"}}, "watch.settle_seconds: expected a number, got 'soon'"),
        ({"watch": {"settle": 1}}, "unknown setting 'watch.settle'"),
    ],
)
def test_start_up_refuses_bad_folders_and_configs_naming_the_problem(
    tmp_path: Path, torchscript_model: Path, change: dict[str, dict[str, str]], message: str
) -> None:
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model))
    names = {"input": str(daemon.input), "root": str(daemon.root)}
    settings = {s: {k: v.format(**names) if isinstance(v, str) else v for k, v in d.items()} for s, d in change.items()}
    refused = DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings=settings)
    completed = _refusal(refused.config)
    assert completed.returncode == 2
    assert message.format(**names) in completed.stderr


def test_a_second_daemon_on_the_same_state_folder_is_refused(tmp_path: Path, torchscript_model: Path) -> None:
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model)).start()
    completed = _refusal(daemon.config)
    assert daemon.stop() == 0
    assert completed.returncode == 2 and "already running" in completed.stderr
