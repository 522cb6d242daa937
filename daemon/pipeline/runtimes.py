"""The model on an inference runtime instead of eager PyTorch: ONNX Runtime or OpenVINO.

On a machine without a fast GPU (an Intel Mac mini, a Linux server of a fleet) the runtimes
made for inference run the same graph faster than eager PyTorch. The graph is the model's
own, exported once at the pipeline's fixed size (`daemon.models.backends` exports, caches and
checks it against eager PyTorch at start); this module only runs it, behind the same
`MatteModel` Protocol as `TorchMatteModel`: a (1, 3, S, S) batch in, the sigmoid matte out.

Neither runtime is a dependency: each is an extra (`pip install -e '.[onnx]'`,
`'.[openvino]'`), imported only when `model.backend` names it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from daemon.errors import ModelError, ModelLoadError
from daemon.pipeline.matte import FloatArray

Backend = Literal["torch", "onnxruntime", "openvino"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnxruntime", "openvino")
BackendChoice = Literal["auto", "torch", "onnxruntime", "openvino"]
"""What `model.backend` may say: a backend, or `auto` (see `resolve_backend`)."""
BACKEND_CHOICES: tuple[BackendChoice, ...] = ("auto", *BACKENDS)
AUTO_OPENVINO_MACHINES = frozenset({"x86_64", "amd64"})
"""Where `auto` picks OpenVINO: x86-64 CPUs, where it was measured faster than eager PyTorch
(BENCHMARKS.md: 1.1-1.5 x the photos per hour, 0.64-0.84 x the forward time, two backbones,
three runs; 0.51-0.54 x for Swin-T and 0.59-0.67 x for Swin-L since the export uses OpenVINO's
own deformable convolution). Nowhere else was a runtime measured faster: there `auto` is
eager PyTorch."""
EXTRAS: dict[Backend, tuple[str, str]] = {
    "onnxruntime": ("onnxruntime", "onnx"),
    "openvino": ("openvino", "openvino"),
}
"""backend -> (the module it needs, the extra that installs it)."""


def runtime_module(backend: Backend) -> Any:
    """The runtime's module, or a refusal that says how to install it."""
    module, extra = EXTRAS[backend]
    return _imported(module, extra=extra, wanted_by=f"model.backend: {backend}", instead="model.backend: torch")


QUANTIZER = ("nncf", "int8")
"""model.precision: int8 -> (the module that quantizes, the extra that installs it)."""


def quantizer_module() -> Any:
    """NNCF, which quantizes the OpenVINO graph for `model.precision: int8`, or how to install it."""
    module, extra = QUANTIZER
    return _imported(module, extra=extra, wanted_by="model.precision: int8", instead="model.precision: float32")


def _imported(module: str, *, extra: str, wanted_by: str, instead: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelLoadError(
            f"{wanted_by} needs {module}, which is not installed: pip install -e '.[{extra}]' "
            f"(in the cutout checkout), or use {instead}"
        ) from exc


def resolve_backend(
    choice: BackendChoice, *, device: str, machine: str, tuned: bool,
    installed: Callable[[str], bool] = lambda module: importlib.util.find_spec(module) is not None,
) -> tuple[Backend, str]:
    """What runs the model for `model.backend: choice` on `device` (the one chosen) and
    `machine` (platform.machine()), and why; `tuned`: a float16/bfloat16 or compiled eager
    model was asked for, which only torch runs."""
    if choice != "auto":
        return choice, f"model.backend: {choice}"
    if device != "cpu":
        return "torch", f"auto: the model runs on {device}, where eager PyTorch uses the GPU"
    if tuned:
        return "torch", "auto: model.precision or model.compile asks for a tuned eager model"
    if machine.lower() not in AUTO_OPENVINO_MACHINES:
        return "torch", f"auto: no runtime was measured faster than eager PyTorch on a {machine} CPU"
    if not installed(EXTRAS["openvino"][0]):
        return "torch", ("auto: OpenVINO, measured faster on x86-64 CPUs, is not installed "
                         f"(pip install -e '.[{EXTRAS['openvino'][1]}]')")
    return "openvino", "auto: the model runs on an x86-64 CPU, where OpenVINO was measured faster than eager PyTorch"


def runtime_version(backend: Backend) -> str:
    return _version(runtime_module(backend))


def quantizer_version() -> str:
    return _version(quantizer_module())


def _version(module: Any) -> str:
    return str(getattr(module, "__version__", "unknown"))


class RuntimeMatteModel:
    """An exported graph on ONNX Runtime or OpenVINO, on the CPU, behind the `MatteModel` Protocol."""

    def __init__(self, graph: Path, *, backend: Backend, size: int) -> None:
        self.graph, self.backend, self.size = graph, backend, size
        self._run = logits_runner(graph, backend=backend)

    def predict(self, batch: FloatArray) -> FloatArray:
        """Run the graph, force (S, S), sigmoid: what `TorchMatteModel.predict` gives."""
        if batch.shape != (1, 3, self.size, self.size):
            raise ModelError(f"input batch has shape {batch.shape}, expected (1, 3, {self.size}, {self.size})")
        try:
            logits = np.asarray(self._run(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float32)
        except Exception as exc:  # the runtime's own error types: a failure on this image
            raise ModelError(f"the model failed on this image ({self.backend}): {exc}") from exc
        plane = logits.reshape(logits.shape[-2:])
        if tuple(plane.shape) != (self.size, self.size):
            raise ModelError(f"the exported model gave a {plane.shape} map, expected ({self.size}, {self.size})")
        matte: FloatArray = (1.0 / (1.0 + np.exp(-plane))).astype(np.float32)
        return matte


def logits_runner(graph: Path, *, backend: Backend) -> Callable[[FloatArray], Any]:
    """The exported graph loaded on `backend`, as the daemon runs it: a batch in, the logits out."""
    return _onnxruntime(graph) if backend == "onnxruntime" else _openvino(graph)


def _onnxruntime(graph: Path) -> Callable[[FloatArray], Any]:
    runtime = runtime_module("onnxruntime")
    options = runtime.SessionOptions()
    # Its threads would otherwise spin for a while after each image, taking the cores the
    # decode and encode of the next images need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = runtime.InferenceSession(str(graph), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def _openvino(graph: Path) -> Callable[[FloatArray], Any]:
    runtime = runtime_module("openvino")
    # f32 throughout: on CPUs with bf16 units OpenVINO would otherwise pick bf16 by itself.
    compiled = runtime.Core().compile_model(str(graph), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    output = compiled.output(0)
    return lambda batch: compiled(batch)[output]
