"""The model leaves eager PyTorch: a graph at the pipeline's fixed size, for an inference runtime.

    export_onnx(module, out=..., size=...)      ONNX, the logits alone (opset OPSET)
    export_openvino(module, out=..., size=...)  OpenVINO's IR (.xml and .bin), through ONNX with
                                                DeformConv nodes (opset DEFORMABLE_OPSET)
    onnx_to_openvino(onnx_file, out=...)        OpenVINO's IR of an ONNX file
    quantized_openvino(ir_file, out=..., calibration=[batch, ...])   that IR in INT8 (NNCF)

Each writes under a temp name and renames, so a file that exists is whole. The size is baked
in: the pipeline pads every image to one square (`pipeline.target_size`), so one shape is all
the graph ever sees, and a runtime can plan its memory once.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from daemon.pipeline.birefnet.ops import deformable_nodes
from daemon.pipeline.matte import FloatArray
from daemon.pipeline.model import LogitsOnly
from daemon.pipeline.runtimes import quantizer_module, runtime_module

OPSET = 17
"""GridSample and LayerNormalization are there (16, 17); ONNX Runtime and OpenVINO read it."""
DEFORMABLE_OPSET = 19
"""DeformConv is there (19): the graph made for OpenVINO has its deformable convolutions as such."""


def export_onnx(module: torch.nn.Module, *, out: Path, size: int, deformable_as_nodes: bool = False) -> Path:
    """`module` (on the CPU, float32) traced at (1, 3, size, size) to ONNX at `out`: one input
    `image`, one output `logits`. With `deformable_as_nodes`, each deformable convolution is one
    DeformConv node (`export_openvino`); ONNX Runtime runs the GridSample form faster (its own
    DeformConv took 1.9 s for the 7x7 branch of Swin-T's first decoder block at 1024)."""
    ready = module.float().cpu().eval()
    # A TorchScript file is already a graph of the logits alone (`cutout model export`), and a
    # traced graph cannot be traced again inside a wrapper: it goes as it is.
    wrapper = ready if isinstance(ready, torch.jit.ScriptModule) else LogitsOnly(ready).eval()
    example = torch.zeros(1, 3, size, size, dtype=torch.float32)
    with _written(out) as temp, torch.no_grad(), warnings.catch_warnings(), \
            (deformable_nodes() if deformable_as_nodes else nullcontext()):
        # The tracer warns that Python values become constants: they are, at the one fixed size.
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), str(temp), dynamo=False,
                          opset_version=DEFORMABLE_OPSET if deformable_as_nodes else OPSET,
                          # No folding: it would store each shifted Swin block's attention mask and
                          # position bias at the full size (Swin-L at 1024: past 2 GB, in hundreds
                          # of files); the runtimes fold them in memory when they load the graph.
                          input_names=["image"], output_names=["logits"], do_constant_folding=False)
    return out


def export_openvino(module: torch.nn.Module, *, out: Path, size: int) -> Path:
    """OpenVINO's IR of `module` at `out` (.xml, weights beside it in .bin), its deformable
    convolutions OpenVINO's own DeformableConvolution: it samples and multiplies in one pass,
    where the GridSample form wrote every sampled column out first and read it back for the
    product (0.61 s against about 1.3 s for the 7x7 branch of Swin-T's first decoder block at
    1024; BENCHMARKS.md). The ONNX file it goes through, under a temp name beside `out`, is removed.
    A TorchScript model goes as it is traced already, with whatever form it has."""
    onnx = _temp_beside(out, suffix=".onnx")
    try:
        return onnx_to_openvino(export_onnx(module, out=onnx, size=size, deformable_as_nodes=True), out=out)
    finally:
        onnx.unlink(missing_ok=True)


def onnx_to_openvino(onnx_file: Path, *, out: Path) -> Path:
    """OpenVINO's IR of an exported ONNX file: `out` (.xml) with its weights beside it (.bin)."""
    openvino = runtime_module("openvino")
    onnx_frontend = importlib.import_module("openvino.frontend.onnx")
    deform_conv = onnx_frontend.ConversionExtension("DeformConv", _deformable_convolution)
    return _saved_ir(openvino.convert_model(str(onnx_file), extension=[deform_conv]), out=out)


def _deformable_convolution(node: Any) -> list[Any]:
    """ONNX's DeformConv (image, weight, offset, optional bias and mask) as OpenVINO's
    DeformableConvolution, plus the bias; missing attributes take the ONNX defaults.
    `bilinear_interpolation_pad`: a tap less than a pixel outside the map still reads its border
    pixels, weighted against zeros beyond, as torchvision's (and grid_sample's) zero padding does."""
    opset = importlib.import_module("openvino.opset8")
    inputs = [node.get_input(index) for index in range(node.get_input_size())]
    image, weight, offset = inputs[:3]
    spatial = len(weight.get_partial_shape()) - 2
    pads = node.get_attribute("pads", [0] * 2 * spatial)
    convolved = opset.deformable_convolution(
        image, offset, weight, node.get_attribute("strides", [1] * spatial), pads[:spatial], pads[spatial:],
        node.get_attribute("dilations", [1] * spatial), mask=inputs[4] if len(inputs) > 4 else None,
        group=node.get_attribute("group", 1), deformable_group=node.get_attribute("offset_group", 1),
        bilinear_interpolation_pad=True)
    if len(inputs) < 4:
        return [convolved.output(0)]
    return [opset.add(convolved, opset.unsqueeze(inputs[3], [0, *range(2, 2 + spatial)])).output(0)]


def quantized_openvino(ir_file: Path, *, out: Path, calibration: Sequence[FloatArray]) -> Path:
    """The IR at `ir_file` with INT8 weights and activations (NNCF's post-training quantization),
    its activation ranges measured on `calibration` (normalised batches at the graph's size)."""
    openvino, nncf = runtime_module("openvino"), quantizer_module()
    graph = openvino.Core().read_model(str(ir_file))
    # TRANSFORMER: NNCF's recipe for attention blocks (SmoothQuant, softmax and norms left in
    # float32), which the Swin backbone is; the convolutional decoder quantizes as usual.
    quantized = nncf.quantize(graph, nncf.Dataset(list(calibration)), subset_size=len(calibration),
                              model_type=nncf.ModelType.TRANSFORMER)
    return _saved_ir(quantized, out=out)


def _saved_ir(graph: Any, *, out: Path) -> Path:
    openvino = runtime_module("openvino")
    with _written(out) as temp:
        # float32 weights: OpenVINO stores float16 by default, which moved the logits by 1e-3
        # (measured on Swin-T) where the float32 weights keep them within 2e-6 of PyTorch's.
        openvino.save_model(graph, str(temp), compress_to_fp16=False)
        os.replace(temp.with_suffix(".bin"), out.with_suffix(".bin"))  # the weights first: the .xml names them
    return out


@contextmanager
def _written(out: Path) -> Iterator[Path]:
    """A temp path beside `out`, renamed onto it when the block ends well, removed otherwise."""
    temp = _temp_beside(out, suffix=out.suffix)
    try:
        yield temp
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
        temp.with_suffix(".bin").unlink(missing_ok=True)


def _temp_beside(out: Path, *, suffix: str) -> Path:
    """A new, empty, hidden file beside `out`, named after it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=suffix, dir=out.parent)
    os.close(handle)
    return Path(name)
