"""`model.backend`: the model exported once to ONNX Runtime or OpenVINO, cached by what made it,
checked against eager PyTorch at start, and the same cut-outs as PyTorch's; with the real tiny
models (a Hugging Face folder with its own code, a TorchScript file)."""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from daemon.cli.main import main
from daemon.errors import ConfigError, ModelLoadError
from daemon.models.backends import EXPORTS_DIR, export_key, exported, with_backend
from daemon.pipeline.export import export_onnx
from daemon.pipeline.model import DeviceChoice, LoadedModel, load_model
from daemon.pipeline.modelspec import parse_model_spec
from daemon.models.loading import device_and_backend
from daemon.pipeline.runtimes import Backend, resolve_backend
from daemon.settings import ModelSettings, load_settings
from tests.conftest import subject_image, write_image

SIZE = 64
RUNTIMES: tuple[Backend, ...] = ("onnxruntime", "openvino")
CLOSE = {"onnxruntime": 1e-4, "openvino": 2e-3}
"""How near each runtime's matte is to PyTorch's on the tiny model, whose logits are steep (40 x):
ONNX Runtime runs the same float32 kernels; OpenVINO's own (its convolutions, its exp) drift a little."""


def _loaded(model: str, *, size: int = SIZE) -> LoadedModel:
    return load_model(parse_model_spec(model), device=DeviceChoice(torch.device("cpu"), "test"), size=size)


@pytest.mark.parametrize("backend", RUNTIMES)
def test_a_runtime_gives_pytorchs_matte_and_its_export_is_made_once(
    backend: Backend, tmp_path: Path, hf_model_dir: Path
) -> None:
    loaded = _loaded(f"hf:{hf_model_dir}")
    on_runtime = with_backend(loaded, backend=backend, exports=tmp_path)
    assert on_runtime.backend == backend and on_runtime.export is not None and on_runtime.export.is_file()
    image = np.random.default_rng(1).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)
    gap = np.abs(on_runtime.matte_model.predict(image) - loaded.model.predict(image))
    assert float(gap.max()) < CLOSE[backend]
    made = on_runtime.export.stat().st_mtime_ns
    again = with_backend(loaded, backend=backend, exports=tmp_path)
    assert again.export == on_runtime.export and again.export.stat().st_mtime_ns == made  # reused, not made again


def test_torch_is_the_model_as_it_is(hf_model_dir: Path, tmp_path: Path) -> None:
    loaded = _loaded(f"hf:{hf_model_dir}")
    assert with_backend(loaded, backend="torch", exports=tmp_path) is loaded and loaded.matte_model is loaded.model
    assert list(tmp_path.iterdir()) == []


def test_an_export_is_keyed_by_model_revision_size_and_patch_order_and_a_stale_one_goes(
    hf_model_dir: Path, tmp_path: Path
) -> None:
    loaded = _loaded(f"hf:{hf_model_dir}")
    first = export_key(loaded, backend="onnxruntime")
    changes = [dataclasses.replace(loaded, revision="b" * 40), dataclasses.replace(loaded, patch_order="legacy"),
               dataclasses.replace(loaded, revision="c" * 40, patch_order="einops")]
    assert len({first, *(export_key(other, backend="onnxruntime") for other in changes)}) == 4
    assert export_key(loaded, backend="openvino") != first and export_key(loaded, backend="onnxruntime") == first
    old = exported(loaded, backend="onnxruntime", exports=tmp_path)
    newer = exported(dataclasses.replace(loaded, revision="d" * 40), backend="onnxruntime", exports=tmp_path)
    assert newer != old and newer.is_file() and not old.exists()  # the stale export is gone, never used


def test_a_runtime_whose_matte_differs_from_pytorchs_is_refused_with_the_numbers(
    hf_model_dir: Path, tmp_path: Path
) -> None:
    loaded = _loaded(f"hf:{hf_model_dir}")
    wrong = torch.nn.Conv2d(3, 1, 1)  # another graph where the export should be: as a broken export would be
    export_onnx(wrong, out=tmp_path / export_key(loaded, backend="onnxruntime"), size=SIZE)
    with pytest.raises(ModelLoadError, match=r"gives another matte than PyTorch on the probe image \(mean [0-9.]+, "
                                             r"99.9th percentile [0-9.]+; allowed: mean 0.01"):
        with_backend(loaded, backend="onnxruntime", exports=tmp_path)


def test_a_torchscript_model_exports_too(torchscript_model: Path, tmp_path: Path) -> None:
    loaded = _loaded(str(torchscript_model), size=1088)
    on_runtime = with_backend(loaded, backend="onnxruntime", exports=tmp_path)
    assert on_runtime.export is not None and on_runtime.export.name.startswith("tiny-torchscript-1088-")


def test_a_missing_runtime_says_how_to_install_it() -> None:
    blocked = ("import sys; sys.modules['onnxruntime'] = None; sys.modules['openvino'] = None\n"
               "from daemon.pipeline.runtimes import runtime_module\n"
               "for backend in ('onnxruntime', 'openvino'):\n"
               "    try:\n        runtime_module(backend)\n    except Exception as exc:\n        print(exc)\n")
    said = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, check=True).stdout
    assert "model.backend: onnxruntime needs onnxruntime, which is not installed: pip install -e '.[onnx]'" in said
    assert "model.backend: openvino needs openvino, which is not installed: pip install -e '.[openvino]'" in said


@pytest.mark.parametrize(("settings", "refused"), [
    ({"model": {"backend": "onnxruntime", "device": "mps"}}, "runs on the CPU, and model.device is mps"),
    ({"model": {"backend": "openvino", "precision": "float16"}}, "runs the float32 export"),
    ({"model": {"backend": "tensorrt"}}, "model.backend"),
])
def test_a_runtime_is_refused_with_what_cannot_go_with_it(
    tmp_path: Path, settings: dict[str, object], refused: str
) -> None:
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(settings))
    with pytest.raises(ConfigError, match=refused):
        load_settings(config)


@pytest.mark.parametrize("backend", RUNTIMES)
def test_cutout_process_on_a_runtime_writes_pytorchs_cut_outs_and_keeps_the_export(
    backend: str, tmp_path: Path, hf_model_dir: Path
) -> None:
    from PIL import Image

    write_image(tmp_path / "in" / "a.png", subject_image(120, 160, (30, 20, 130, 100)))
    common = ["--model", f"hf:{hf_model_dir}", "--state", str(tmp_path / "state")]
    assert main(["process", str(tmp_path / "in"), str(tmp_path / "torch"), *common]) == 0
    assert main(["process", str(tmp_path / "in"), str(tmp_path / backend), *common, "--backend", backend]) == 0
    exports = list((tmp_path / "state" / EXPORTS_DIR).iterdir())
    assert exports and all(path.name.startswith("tiny-birefnet-1088-") for path in exports)
    ours, theirs = (np.asarray(Image.open(tmp_path / name / "a.png")) for name in ("torch", backend))
    assert ours.shape == theirs.shape and int(np.abs(ours.astype(int) - theirs.astype(int)).max()) <= 1


def test_cutout_model_export_makes_the_export_the_daemon_then_uses_and_doctor_names_it(
    tmp_path: Path, hf_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--model", f"hf:{hf_model_dir}", "--state", str(tmp_path / "state")]
    assert main(["model", "export", "--format", "onnx", *common]) == 0
    said = capsys.readouterr().out
    [made] = list((tmp_path / "state" / EXPORTS_DIR).iterdir())
    assert said.startswith(f"{made} (onnx, 1088x1088, checked against torch)")
    assert main(["model", "export", "--format", "onnx", "--out", str(tmp_path / "x.onnx"), *common]) == 2
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  name: 'hf:{hf_model_dir}'\n  backend: onnxruntime\nfolders:\n  state: '{tmp_path / 'state'}'\n")
    main(["doctor", "--config", str(config)])
    doctor = capsys.readouterr().out
    assert "onnxruntime 1." in doctor and f"exports cached: {made.name}" in doctor


@pytest.mark.parametrize("tuning", ["backend: auto", "backend: openvino", "precision: float16", "compile: true"])
def test_a_torchscript_export_traces_the_plain_eager_model_whatever_the_settings(
    tuning: str, tmp_path: Path, hf_model_dir: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  name: 'hf:{hf_model_dir}'\n  {tuning}\nfolders:\n  state: '{tmp_path / 'state'}'\n")
    out = tmp_path / "tiny.torchscript"
    assert main(["model", "export", "--format", "torchscript", "--out", str(out), "--input-res", "64",
                 "--config", str(config)]) == 0
    assert load_model(parse_model_spec(str(out)), device=DeviceChoice(torch.device("cpu"), "test"), size=64)
    assert not (tmp_path / "state" / EXPORTS_DIR).exists() or not any((tmp_path / "state" / EXPORTS_DIR).iterdir())


# --- model.backend: auto ----------------------------------------------------------------------
@pytest.mark.parametrize(("device", "machine", "tuned", "installed", "picked", "why"), [
    ("cpu", "x86_64", False, True, "openvino", "the model runs on an x86-64 CPU"),
    ("cpu", "AMD64", False, True, "openvino", "the model runs on an x86-64 CPU"),  # Windows spells it so
    ("cpu", "arm64", False, True, "torch", "no runtime was measured faster than eager PyTorch on a arm64 CPU"),
    ("mps", "arm64", False, True, "torch", "the model runs on mps"),
    ("cuda", "x86_64", False, True, "torch", "the model runs on cuda"),
    ("cpu", "x86_64", True, True, "torch", "a tuned eager model"),
    ("cpu", "x86_64", False, False, "torch", "OpenVINO, measured faster on x86-64 CPUs, is not installed "
                                             "(pip install -e '.[openvino]')"),
])
def test_auto_picks_openvino_only_on_an_x86_cpu_where_it_was_measured_faster_and_is_installed(
    device: str, machine: str, tuned: bool, installed: bool, picked: str, why: str
) -> None:
    backend, reason = resolve_backend("auto", device=device, machine=machine, tuned=tuned,
                                      installed=lambda module: installed and module == "openvino")
    assert backend == picked and why in reason and reason.startswith("auto: ")


@pytest.mark.parametrize("named", ["torch", "onnxruntime", "openvino"])
def test_a_named_backend_is_used_as_named(named: Backend) -> None:
    assert resolve_backend(named, device="cpu", machine="arm64", tuned=False)[0] == named


def test_auto_on_this_cpu_loads_on_the_cpu_and_runs_openvino_and_doctor_says_why(
    tmp_path: Path, hf_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("auto picks OpenVINO on x86-64 CPUs only")
    settings = ModelSettings(name=f"hf:{hf_model_dir}", device="cpu", backend="auto")
    chosen, backend, why = device_and_backend(settings)
    assert (chosen.device.type, backend) == ("cpu", "openvino") and why.startswith("auto: the model runs on an x86-64 CPU")
    assert device_and_backend(dataclasses.replace(settings, precision="float16"))[1] == "torch"
    write_image(tmp_path / "in" / "a.png", subject_image(120, 160, (30, 20, 130, 100)))
    common = ["--model", f"hf:{hf_model_dir}", "--state", str(tmp_path / "state")]
    assert main(["process", str(tmp_path / "in"), str(tmp_path / "out"), *common, "--device", "cpu",
                 "--backend", "auto"]) == 0
    assert [path.suffix for path in (tmp_path / "state" / EXPORTS_DIR).glob("*.xml")] == [".xml"]  # OpenVINO's
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  name: 'hf:{hf_model_dir}'\n  device: cpu\n  backend: auto\n"
                      f"folders:\n  state: '{tmp_path / 'state'}'\n")
    main(["doctor", "--config", str(config)])
    assert "openvino 20" in (doctor := capsys.readouterr().out) and "auto: the model runs on an x86-64 CPU" in doctor
