"""Tensor operations the model uses everywhere, written once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F

_in_onnx_export: Callable[[], bool] = getattr(torch.onnx, "is_in_onnx_export")  # untyped in torch's stubs


def exporting() -> bool:
    """Whether the model is being traced for an ONNX export (ONNX Runtime's and OpenVINO's graph):
    a few operations then take the form those runtimes run best, with the same numbers. A
    TorchScript export keeps eager's forms, which torch's own kernels are tuned for."""
    return bool(_in_onnx_export())


_deformable_nodes: ContextVar[bool] = ContextVar("deformable_nodes", default=False)


@contextmanager
def deformable_nodes() -> Iterator[None]:
    """Within it, an ONNX export writes each deformable convolution as one DeformConv node
    (OpenVINO's graph, which has a kernel of its own for it) instead of what it is made of."""
    token = _deformable_nodes.set(True)
    try:
        yield
    finally:
        _deformable_nodes.reset(token)


def exporting_deformable_nodes() -> bool:
    """Whether an ONNX export inside `deformable_nodes()` is tracing the model."""
    return exporting() and _deformable_nodes.get()


def static_size(x: torch.Tensor) -> tuple[int, ...]:
    """`x.shape` as plain Python ints.

    In eager mode and under `torch.export` that is what `x.shape` already is. The TorchScript
    tracer behind `torch.onnx.export(..., dynamo=False)` hands out sizes as 0-d tensors
    instead, so that arithmetic on them becomes graph nodes: window padding, window counts
    and sampling grids would then be rebuilt inside the exported graph from `Shape` nodes
    (ONNX Runtime refused the result), and the per-size caches, keyed by those tensors, never
    hit. Geometry is a function of the input size alone, and an export is made for one size,
    so the ints are baked in as constants."""
    return tuple(int(size) for size in x.shape)


def spatial_size(x: torch.Tensor) -> tuple[int, int]:
    """(H, W) of an NCHW map, as ints."""
    _, _, height, width = static_size(x)
    return height, width


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with align_corners=True, the reference's choice everywhere."""
    if spatial_size(x) == size:
        return x  # the reference interpolates to the same size too: an exact copy
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 convolution as a matrix product over channels-last pixels: (B, C, H, W) and an
    (out, C) or (out, C, 1, 1) weight -> (B, out, H, W), channels-last in memory. It lets
    one 1x1 convolution be applied in parts, to the pieces the reference concatenates first.
    Traced for an ONNX export it is a 1x1 convolution again: the runtimes run one without moving
    the map, where the two permutes would be two Transpose nodes, each a copy of it."""
    if exporting():
        return F.conv2d(x, weight.reshape(weight.shape[0], -1, 1, 1), bias)
    out: torch.Tensor = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias)
    return out.permute(0, 3, 1, 2)
