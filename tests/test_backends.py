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
CLOSE = {"onnxruntime": 1e-4, "openvino": 1e-4}
"""How near each runtime's matte is to PyTorch's on the tiny model, whose logits are steep (40 x).
OpenVINO's was 2e-3 off while its export stored float16 weights."""


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


@pytest.mark.parametrize("backend", RUNTIMES)
def test_once_on_a_runtime_the_eager_module_it_was_checked_against_can_be_let_go(
    backend: Backend, tmp_path: Path, hf_model_dir: Path
) -> None:
    """`cutout watch` keeps only what runs the model: nothing the runtime holds may keep the eager
    module's weights alive (0.2 GB for Swin-T, 0.9 GB for Swin-L)."""
    import gc
    import weakref

    loaded = _loaded(f"hf:{hf_model_dir}")
    runner = with_backend(loaded, backend=backend, exports=tmp_path).matte_model
    module = weakref.ref(loaded.model.module)
    del loaded
    gc.collect()
    assert module() is None
    image = np.random.default_rng(2).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)
    assert runner.predict(image).shape == (SIZE, SIZE)


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


def test_an_openvino_export_is_keyed_by_its_form_and_a_killed_exports_temp_files_go(
    hf_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new form of OpenVINO's graph (its deformable convolutions) is a new key, float32 and INT8
    alike, so an export of the older form is never used; ONNX Runtime's key does not move. The
    hidden temp files an export killed midway left (one of them the size of the model) go with
    the next export of that model."""
    import daemon.models.backends as backends

    loaded = _loaded(f"hf:{hf_model_dir}")
    kinds: list[tuple[Backend, bool]] = [("openvino", False), ("openvino", True), ("onnxruntime", False)]
    before = [export_key(loaded, backend=backend, int8=int8) for backend, int8 in kinds]
    monkeypatch.setattr(backends, "IR_FORM", "another form of the graph")
    after = [export_key(loaded, backend=backend, int8=int8) for backend, int8 in kinds]
    assert before[0] != after[0] and before[1] != after[1] and before[2] == after[2]
    key = Path(before[2])
    left = [tmp_path / f".{key.stem}-killed.onnx", tmp_path / f".{key.stem}-killed.xml"]
    for path in left:
        path.write_bytes(b"half an export")
    made = exported(loaded, backend="onnxruntime", exports=tmp_path)
    assert made.is_file() and not any(path.exists() for path in left)


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
    without_nncf = ("import sys; sys.modules['nncf'] = None\n"
                    "from daemon.pipeline.runtimes import quantizer_module\n"
                    "try:\n    quantizer_module()\nexcept Exception as exc:\n    print(exc)\n")
    said = subprocess.run([sys.executable, "-c", without_nncf], capture_output=True, text=True, check=True).stdout
    assert ("model.precision: int8 needs nncf, which is not installed: pip install -e '.[int8]' (in the cutout "
            "checkout), or use model.precision: float32") in said


@pytest.mark.parametrize(("settings", "refused"), [
    ({"model": {"backend": "onnxruntime", "device": "mps"}}, "runs on the CPU, and model.device is mps"),
    ({"model": {"backend": "openvino", "precision": "float16"}}, r"runs the float32 export: model.precision: float32 "
                                                                 r"\(or int8\)"),
    ({"model": {"backend": "onnxruntime", "precision": "int8"}}, "int8 is OpenVINO's quantized export"),
    ({"model": {"backend": "torch", "precision": "int8"}}, "set model.backend: openvino"),
    ({"model": {"backend": "auto", "precision": "int8"}}, "set model.backend: openvino"),
    ({"model": {"backend": "openvino", "precision": "int8", "compile": True}}, "model.compile: false go with it"),
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


# --- model.precision: int8 (OpenVINO, quantized by NNCF) ------------------------------------------
class _SmallConvNet(torch.nn.Module):
    """Two convolutions: what NNCF quantizes (the tiny models' brightness rule has no weights to)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


def test_int8_quantization_puts_int8_operations_in_the_graph_and_keeps_its_output_near_float32(
    tmp_path: Path,
) -> None:
    import openvino

    from daemon.pipeline.calibration import CALIBRATION_PHOTOS, calibration_batches
    from daemon.pipeline.export import onnx_to_openvino, quantized_openvino
    from daemon.pipeline.runtimes import logits_runner

    net = _SmallConvNet().eval()
    float32 = onnx_to_openvino(export_onnx(net, out=tmp_path / "net.onnx", size=SIZE), out=tmp_path / "net.xml")
    photos = calibration_batches(SIZE)
    assert len(photos) == CALIBRATION_PHOTOS and all(photo.shape == (1, 3, SIZE, SIZE) for photo in photos)
    int8 = quantized_openvino(float32, out=tmp_path / "net-int8.xml", calibration=photos)
    kinds = {op.get_type_name() for op in openvino.Core().read_model(str(int8)).get_ops()}
    assert "FakeQuantize" in kinds and "FakeQuantize" not in {
        op.get_type_name() for op in openvino.Core().read_model(str(float32)).get_ops()}
    image = np.random.default_rng(3).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        eager = net(torch.from_numpy(image)).numpy()
    found = np.asarray(logits_runner(int8, backend="openvino")(image)).reshape(eager.shape)
    spread = float(eager.std())
    assert 0 < float(np.abs(found - eager).mean()) < 0.1 * spread  # quantized (not equal), and close


def _conv_model(tmp_path: Path) -> LoadedModel:
    """The two-convolution net as a TorchScript model: a model with weights for NNCF to quantize."""
    import warnings

    path = tmp_path / "convnet.torchscript"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript, which we still read
        torch.jit.save(torch.jit.script(_SmallConvNet().eval()), str(path))
    return _loaded(str(path))


def _ops(graph: Path) -> set[str]:
    import openvino

    return {op.get_type_name() for op in openvino.Core().read_model(str(graph)).get_ops()}


def test_an_int8_export_is_quantized_keyed_apart_and_made_from_the_float32_one_which_it_leaves_as_it_found_it(
    tmp_path: Path
) -> None:
    loaded = _conv_model(tmp_path)
    int8_key = export_key(loaded, backend="openvino", int8=True)
    assert "-int8-" in int8_key and int8_key != export_key(loaded, backend="openvino")
    alone = with_backend(loaded, backend="openvino", exports=tmp_path / "alone", int8=True)
    assert alone.export is not None and alone.export.name == int8_key and "FakeQuantize" in _ops(alone.export)
    assert sorted(path.name for path in (tmp_path / "alone").iterdir()) == sorted(
        [int8_key, int8_key.replace(".xml", ".bin")])  # the float32 export it was made from: not kept
    float32 = exported(loaded, backend="openvino", exports=tmp_path / "alone")
    assert "FakeQuantize" not in _ops(float32) and alone.export.is_file()  # each kind keeps the other
    both = tmp_path / "both"
    on_onnx = exported(loaded, backend="onnxruntime", exports=both)
    float32 = exported(loaded, backend="openvino", exports=both)
    quantized = exported(loaded, backend="openvino", exports=both, int8=True)
    assert on_onnx.is_file() and float32.is_file() and quantized.is_file()  # another runtime's export stays
    newer = exported(dataclasses.replace(loaded, revision="e" * 40), backend="openvino", exports=both, int8=True)
    assert newer.is_file() and not quantized.exists() and not float32.exists()  # stale: both kinds go
    assert on_onnx.is_file()


def test_an_openvino_export_keeps_float32_weights_and_int8_is_refused_on_another_runtime(tmp_path: Path) -> None:
    """Float16 weights (OpenVINO's default when it saves) put the logits 1e-3 off PyTorch's."""
    from daemon.pipeline.calibration import calibration_batches
    from daemon.pipeline.precision import probe_batch

    loaded = _conv_model(tmp_path)
    graph = exported(loaded, backend="openvino", exports=tmp_path)
    assert 'element_type="f16"' not in graph.read_text() and 'element_type="f32"' in graph.read_text()
    assert not any(np.array_equal(photo, probe_batch(SIZE)) for photo in calibration_batches(SIZE))
    with pytest.raises(ModelLoadError, match="int8 is OpenVINO's quantized export, not onnxruntime's"):
        with_backend(loaded, backend="onnxruntime", exports=tmp_path, int8=True)


def test_an_int8_graph_whose_matte_differs_from_pytorchs_is_refused_with_the_numbers(
    hf_model_dir: Path, tmp_path: Path
) -> None:
    from daemon.pipeline.export import onnx_to_openvino

    loaded = _loaded(f"hf:{hf_model_dir}")
    wrong = onnx_to_openvino(export_onnx(torch.nn.Conv2d(3, 1, 1), out=tmp_path / "wrong.onnx", size=SIZE),
                             out=tmp_path / "exports" / export_key(loaded, backend="openvino", int8=True))
    with pytest.raises(ModelLoadError, match=r"model.backend: openvino in INT8 gives another matte than PyTorch on the "
                                             r"probe image \(mean [0-9.]+.*use model.precision: float32"):
        with_backend(loaded, backend="openvino", exports=wrong.parent, int8=True)


def test_int8_through_the_config_cuts_out_like_pytorch_and_model_export_and_doctor_name_it(
    tmp_path: Path, hf_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    write_image(tmp_path / "in" / "a.png", subject_image(120, 160, (30, 20, 130, 100)))
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  name: 'hf:{hf_model_dir}'\n  backend: openvino\n  precision: int8\n"
                      f"folders:\n  state: '{tmp_path / 'state'}'\n")
    assert main(["model", "export", "--format", "openvino", "--config", str(config)]) == 0
    [made] = (tmp_path / "state" / EXPORTS_DIR).glob("*.xml")
    assert "-int8-" in made.name and capsys.readouterr().out.startswith(f"{made} (openvino, INT8, 1088x1088")
    assert main(["process", str(tmp_path / "in"), str(tmp_path / "int8"), "--config", str(config)]) == 0
    assert main(["process", str(tmp_path / "in"), str(tmp_path / "torch"), "--model", f"hf:{hf_model_dir}"]) == 0
    ours, theirs = (np.asarray(Image.open(tmp_path / name / "a.png")) for name in ("torch", "int8"))
    assert ours.shape == theirs.shape and int(np.abs(ours.astype(int) - theirs.astype(int)).max()) <= 1
    assert [path.name for path in (tmp_path / "state" / EXPORTS_DIR).glob("*.xml")] == [made.name]  # used, not remade
    capsys.readouterr()
    main(["doctor", "--config", str(config)])
    assert "on the CPU, INT8 (quantized by NNCF " in (doctor := capsys.readouterr().out) and made.name in doctor
