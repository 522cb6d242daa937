"""`cutout process` end to end, with both tiny real models, on real folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon.cli.main import main
from tests.conftest import subject_image, write_image

BOX = (100, 80, 300, 220)
"""Subject in a 300x400 image; its cutout is 300x240 (50 px padding, clamped)."""


def _tree(root: Path) -> None:
    """Good images in nested folders, plus the bad cases a studio really produces."""
    write_image(root / "a.jpg", subject_image(300, 400, BOX), IMWRITE_JPEG_QUALITY=95)
    write_image(root / "shoot" / "day1" / "b.png", subject_image(300, 400, BOX))
    write_image(root / "shoot" / "c.TIF", subject_image(300, 400, BOX))
    write_image(root / "dark.png", np.full((300, 400, 3), 20, np.uint8))
    (root / "garbage.jpg").write_bytes(b"not an image")
    (root / "empty.png").write_bytes(b"")
    whole = write_image(root / "cut.jpg", subject_image(300, 400, BOX)).read_bytes()
    (root / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (root / ".hidden.jpg").write_bytes(whole)
    (root / "._a.jpg").write_bytes(b"AppleDouble")
    (root / "readme.txt").write_text("not an image")


def _rgba(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.shape[2] == 4, path
    return image


@pytest.fixture(params=["torchscript", "hf"])
def model_arg(request: pytest.FixtureRequest, torchscript_model: Path, hf_model_dir: Path) -> str:
    return str(torchscript_model) if request.param == "torchscript" else f"hf:{hf_model_dir}"


def test_process_mirrors_the_tree_and_reports_every_failure(
    tmp_path: Path, model_arg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _tree(tmp_path / "in")
    code = main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model", model_arg, "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 1
    outputs = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert outputs == ["a.png", "shoot/c.png", "shoot/day1/b.png"]
    for name in outputs:
        assert _rgba(tmp_path / "out" / name).shape == (240, 300, 4)
    assert "done: 3  failed: 4" in out
    for failure in ("dark.png: no_foreground", "garbage.jpg: undecodable", "empty.png: undecodable", "cut.jpg: truncated"):
        assert f"FAILED {failure}" in out
    assert f"left in place: {tmp_path / 'in' / 'cut.jpg'}" in out


def test_process_is_deterministic_byte_for_byte(tmp_path: Path, torchscript_model: Path) -> None:
    write_image(tmp_path / "in" / "a.jpg", subject_image(300, 400, BOX))
    for run in ("one", "two"):
        assert main(["process", str(tmp_path / "in"), str(tmp_path / run), "--model", str(torchscript_model)]) == 0
    assert (tmp_path / "one" / "a.png").read_bytes() == (tmp_path / "two" / "a.png").read_bytes()


def test_inputs_sharing_a_stem_do_not_overwrite_each_other(tmp_path: Path, torchscript_model: Path) -> None:
    write_image(tmp_path / "in" / "x.jpg", subject_image(300, 400, BOX))
    write_image(tmp_path / "in" / "x.png", subject_image(200, 300, (50, 50, 250, 150)))
    assert main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(torchscript_model)]) == 0
    assert _rgba(tmp_path / "out" / "x.png").shape == (240, 300, 4)
    assert _rgba(tmp_path / "out" / "x.png.png").shape == (200, 300, 4)


def test_a_bad_model_is_refused_clearly_with_the_model_load_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    assert main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(tmp_path / "nope.pt")]) == 3
    assert "does not exist" in capsys.readouterr().err


def test_model_export_writes_a_torchscript_file_that_process_can_use(
    tmp_path: Path, hf_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "tiny.torchscript"
    assert main(["model", "export", "--out", str(exported), "--model", f"hf:{hf_model_dir}", "--input-res", "1088"]) == 0
    assert f"wrote {exported}" in capsys.readouterr().out
    write_image(tmp_path / "in" / "a.jpg", subject_image(300, 400, BOX))
    assert main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(exported)]) == 0
    assert _rgba(tmp_path / "out" / "a.png").shape == (240, 300, 4)


def test_doctor_reports_the_device_and_where_the_model_loads_from(
    torchscript_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--model", str(torchscript_model)]) == 0
    out = capsys.readouterr().out
    assert "torch 2." in out and "transformers" in out and "opencv-python-headless" in out
    assert "[ok] device: cpu (auto: no MPS or CUDA GPU found" in out
    assert f"[ok] model: {torchscript_model} loads on cpu from TorchScript file" in out


def test_doctor_fails_with_a_fix_when_the_model_cannot_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--model", "hf:cutout-tests/absent", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] model" in out and "fix:" in out


@pytest.mark.slow
def test_the_console_entry_point_runs_as_python_dash_m_daemon(tmp_path: Path, torchscript_model: Path) -> None:
    write_image(tmp_path / "in" / "deep" / "a.jpg", subject_image(300, 400, BOX))
    completed = subprocess.run(
        [sys.executable, "-m", "daemon", "process", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(torchscript_model)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "done: 1  failed: 0" in completed.stdout
    assert _rgba(tmp_path / "out" / "deep" / "a.png").shape == (240, 300, 4)


def test_the_overlapped_batch_writes_the_same_bytes_as_sequential_process_image(
    tmp_path: Path, torchscript_model: Path
) -> None:
    from daemon.pipeline import choose_device, load_model, parse_model_spec, process_image

    for index in range(5):
        write_image(tmp_path / "in" / f"{index}.jpg", subject_image(280 + 10 * index, 400, BOX))
    assert main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(torchscript_model)]) == 0
    model = load_model(parse_model_spec(str(torchscript_model)), device=choose_device("cpu")).model
    for index in range(5):
        expected = process_image(tmp_path / "in" / f"{index}.jpg", model=model).cutout.png
        assert (tmp_path / "out" / f"{index}.png").read_bytes() == expected


def test_process_honours_the_output_and_limits_settings(tmp_path: Path, torchscript_model: Path) -> None:
    deep = np.zeros((300, 400, 3), np.uint16)
    deep[80:220, 100:300] = 60_000
    (tmp_path / "in").mkdir()
    assert cv2.imwrite(str(tmp_path / "in" / "deep.png"), deep)
    write_image(tmp_path / "in" / "big.png", subject_image(300, 400, BOX))
    config = tmp_path / "config.yaml"
    config.write_text("output:\n  bit_depth: source\nlimits:\n  max_pixels: 100000\n")
    code = main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(torchscript_model),
                 "--config", str(config)])
    assert code == 1  # both 120,000-pixel images are above the limit: too_large
    config.write_text("output:\n  bit_depth: source\n")
    assert main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(torchscript_model),
                 "--config", str(config)]) == 0
    assert cv2.imread(str(tmp_path / "out" / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_a_read_only_output_folder_is_refused_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real read-only mount (a small tmpfs, remounted ro: needs root, as CI runs). The model
    named does not exist: the folder's refusal comes first, so nothing was loaded or run."""
    from tests.conftest import small_tmpfs

    write_image(tmp_path / "in" / "a.jpg", subject_image(300, 400, BOX))
    with small_tmpfs(tmp_path / "out", read_only=True) as out:
        code = main(["process", str(tmp_path / "in"), str(out), "--model", str(tmp_path / "no-such.torchscript")])
    assert code == 2 and f"the output folder: {out} is locked" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_during_a_batch_prints_the_summary_and_how_to_resume_without_a_traceback(tmp_path: Path) -> None:
    import signal
    import time

    from tests.tiny_models import build_slow_hf_model_dir

    slow = build_slow_hf_model_dir(tmp_path / "slow-model", seconds=0.5)
    for index in range(12):
        write_image(tmp_path / "in" / f"{index:02d}.jpg", subject_image(300, 400, BOX))
    batch = subprocess.Popen([sys.executable, "-m", "daemon", "process", str(tmp_path / "in"), str(tmp_path / "out"),
                              "--model", f"hf:{slow}", "--device", "cpu"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not list((tmp_path / "out").glob("*.png")) and time.monotonic() < deadline:
        time.sleep(0.1)
    batch.send_signal(signal.SIGINT)
    out, err = batch.communicate(timeout=60)
    assert batch.returncode == 130, err
    assert "Traceback" not in err and "done: " in out
    assert "not done; every file written is whole. To do the rest, run the same command again with --skip-existing" in out
    done = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert 0 < len(done) < 12 and all(name.endswith(".png") for name in done)  # no temp file, no claim left


def test_review_folder_takes_the_doubtful_cut_outs_and_the_summary_says_where(
    tmp_path: Path, torchscript_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import foggy_image

    write_image(tmp_path / "in" / "clean.png", subject_image(200, 200, (40, 40, 160, 160)))
    write_image(tmp_path / "in" / "shoot" / "foggy.png", foggy_image(200, 200))
    folders = [str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(torchscript_model)]
    assert main(["process", *folders, "--review-folder", str(tmp_path / "look")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == ["clean.png"]
    assert (tmp_path / "look" / "shoot" / "foggy.png").is_file()
    out = capsys.readouterr().out
    assert "DOUBTFUL shoot/foggy.png: doubt" in out and f"in {tmp_path / 'look'}, not delivered" in out
    assert main(["process", *folders, "--review-folder", str(tmp_path / "look")]) == 2  # both are there: a rerun is a decision
    assert f"already in {tmp_path / 'out'} (first: clean.png)" in capsys.readouterr().err
    assert main(["process", *folders, "--review-folder", str(tmp_path / "in" / "look")]) == 2  # inside the input folder
    assert "--review-folder" in capsys.readouterr().err
