"""`model.backend`: the model on ONNX Runtime or OpenVINO, exported once, cached, and trusted
only after it gave eager PyTorch's matte on the probe image.

    with_backend(loaded, backend=..., exports=<state folder>/exports)   the model, running there

The export is keyed by everything that changes the graph: the model (its name and its pinned
revision, or a local file's size and time), the input size, the decoder's patch order, the
torch that traced it and the format; an INT8 export (`model.precision: int8`, OpenVINO) also
by its calibration photos and the NNCF that quantized it. A key that changed names a file that is not there, so a
stale export is never used; once a new one is written, the older exports of the same model go.

At every start the runtime's matte of the probe image is compared with eager PyTorch's, with
the precision check's tolerance (`daemon.pipeline.precision`): a runtime that computes another
matte is refused with the numbers, never used quietly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from pathlib import Path

import structlog
import torch

from daemon.errors import ModelLoadError
from daemon.pipeline.calibration import CALIBRATION_PHOTOS, CALIBRATION_SET, calibration_batches
from daemon.pipeline.export import export_onnx, export_openvino, quantized_openvino
from daemon.pipeline.model import LoadedModel
from daemon.pipeline.precision import Tolerance, difference, probe_batch
from daemon.pipeline.runtimes import (
    Backend, RuntimeMatteModel, quantizer_module, quantizer_version, runtime_module, runtime_version,
)

log = structlog.get_logger("cutout.model")

EXPORTS_DIR = "exports"
"""Beside the model pin, in the state folder."""
SUFFIXES: dict[Backend, str] = {"onnxruntime": ".onnx", "openvino": ".xml"}


IR_FORM = "ir-float32-weights;deformable-convolution-nodes"
"""What OpenVINO's export is made of, in its key, so an export of an older kind is never used:
float32 weights (it stored float16 before, 1e-3 off PyTorch's logits), and OpenVINO's own
deformable convolutions for the built-in model (it had their GridSample form before, slower;
a TorchScript model keeps the form it was traced in)."""


def export_key(loaded: LoadedModel, *, backend: Backend, int8: bool = False) -> str:
    """The file name of `loaded`'s export for `backend` (`int8`: quantized): readable, and
    unique to what made it."""
    made_from = [str(loaded.spec), loaded.revision or _local_identity(loaded), str(loaded.model.size),
                 loaded.patch_order or "-", torch.__version__, backend]
    if backend == "openvino":
        made_from.append(IR_FORM)
    if int8:
        made_from += ["int8", CALIBRATION_SET, runtime_version("openvino"), quantizer_version()]
    digest = hashlib.sha256("\n".join(made_from).encode()).hexdigest()[:16]
    kind = "-int8" if int8 else ""
    return f"{_slug(loaded)}-{loaded.model.size}{kind}-{digest}{SUFFIXES[backend]}"


def _slug(loaded: LoadedModel) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", loaded.spec.family or Path(loaded.spec.source).name).strip("-") or "model"


def _local_identity(loaded: LoadedModel) -> str:
    """A local model (a TorchScript file, an hf: folder) has no revision: its size and time stand in."""
    source = Path(loaded.spec.source)
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def exported(loaded: LoadedModel, *, backend: Backend, exports: Path, int8: bool = False) -> Path:
    """The export of `loaded` for `backend` (`int8`: quantized, OpenVINO only): the cached one,
    or made now (once per model and size)."""
    path = exports / export_key(loaded, backend=backend, int8=int8)
    if path.is_file():
        return path
    if int8:
        return _quantized(loaded, out=path, exports=exports)
    return _made(loaded, backend=backend, path=path)


def _made(loaded: LoadedModel, *, backend: Backend, path: Path) -> Path:
    """The float32 export of `loaded` for `backend`, made now at `path` (its key)."""
    started = time.monotonic()
    if backend == "openvino":
        export_openvino(loaded.model.module, out=path, size=loaded.model.size)
    else:
        export_onnx(loaded.model.module, out=path, size=loaded.model.size)
    log.info("model_exported", backend=backend, file=str(path), seconds=round(time.monotonic() - started, 1))
    _forget_older(path)
    return path


def _quantized(loaded: LoadedModel, *, out: Path, exports: Path) -> Path:
    """The INT8 graph, quantized from the float32 one (made for it, and let go after, unless
    it was there already: `model.backend: openvino` in float32 uses it too)."""
    source = exports / export_key(loaded, backend="openvino")
    kept = source.is_file()
    if not kept:
        _made(loaded, backend="openvino", path=source)
    started = time.monotonic()
    log.info("model_quantizing", file=str(out), photos=CALIBRATION_PHOTOS, note="minutes, once")
    quantized_openvino(source, out=out, calibration=calibration_batches(loaded.model.size))
    log.info("model_exported", backend="openvino", precision="int8", file=str(out),
             seconds=round(time.monotonic() - started, 1))
    if not kept:
        for part in (source, source.with_suffix(".bin")):
            part.unlink(missing_ok=True)
    _forget_older(out)
    return out


def _forget_older(kept: Path) -> None:
    """The other exports of the same model, size, runtime and kind (float32 or INT8): made for
    another revision, order or torch. Another runtime's export stays (a config may switch back)."""
    family = kept.stem.rsplit("-", 1)[0]
    files = (".onnx",) if kept.suffix == ".onnx" else (".xml", ".bin")
    for old in kept.parent.glob(f"{family}-*"):
        if old.stem.rsplit("-", 1)[0] == family and old.stem != kept.stem and old.suffix in files:
            old.unlink(missing_ok=True)
    for unfinished in kept.parent.glob(f".{family}-*"):  # a killed export's temp files: one of them is model-sized
        unfinished.unlink(missing_ok=True)


def with_backend(
    loaded: LoadedModel, *, backend: Backend, exports: Path, int8: bool = False, tolerance: Tolerance = Tolerance(),
) -> LoadedModel:
    """`loaded` running on `backend` (the export cached under `exports`; `int8`: quantized), after
    its probe matte matched eager PyTorch's; `torch`: as it is."""
    if backend == "torch":
        return loaded
    runtime_module(backend)  # a missing extra is said before minutes of exporting
    if int8 and backend != "openvino":
        raise ModelLoadError(f"model.precision: int8 is OpenVINO's quantized export, not {backend}'s: "
                             "set model.backend: openvino, or model.precision: float32")
    if int8:
        quantizer_module()
    if loaded.model.device.type != "cpu":
        raise ModelLoadError(f"model.backend: {backend} runs on the CPU, and the model was loaded on "
                             f"{loaded.model.device.type}: set model.device: cpu, or model.backend: torch")
    path = exported(loaded, backend=backend, exports=exports, int8=int8)
    runner = RuntimeMatteModel(path, backend=backend, size=loaded.model.size)
    probe = probe_batch(loaded.model.size)
    found = difference(loaded.model.predict(probe), runner.predict(probe))
    if not found.within(tolerance):
        what, instead = (f"{backend} in INT8", "model.precision: float32") if int8 else (backend, "model.backend: torch")
        raise ModelLoadError(
            f"model.backend: {what} gives another matte than PyTorch on the probe image ({found}; allowed: mean "
            f"{tolerance.mean}, 99.9th percentile {tolerance.p999}); its export is {path}: use {instead}"
        )
    log.info("model_backend", backend=backend, precision="int8" if int8 else "float32",
             version=runtime_version(backend), export=str(path), probe_difference=str(found))
    return dataclasses.replace(loaded, runner=runner, backend=backend, export=path)
