"""Faster arithmetic, trusted only after it proved itself on one image.

`model.precision: float16 | bfloat16` (CUDA, MPS) and `model.compile: true` change how the
forward pass computes, and a kernel that is broken on some machine would make every cutout
quietly wrong. So at start the model computes the matte of one probe image in float32
eager mode first; the faster variant must then give the same matte within `Tolerance`,
or the daemon refuses to start (precision) or keeps the eager model (compile), saying why.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from daemon.errors import ModelLoadError
from daemon.pipeline.constants import IMAGENET_MEAN, IMAGENET_STD
from daemon.pipeline.inference import TorchMatteModel
from daemon.pipeline.matte import FloatArray
from daemon.pipeline.modelspec import GPU_PRECISIONS, Precision

DTYPES: dict[Precision, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Tolerance:
    """How far a faster matte may be from float32's: on average, and at its worst 0.1 % of pixels.
    A 0.01 mean is below one 8-bit alpha step on average; 0.1 at the 99.9th percentile lets edge
    pixels move a little, never a region flip (which moves the matte by about 1)."""

    mean: float = 0.01
    p999: float = 0.1


@dataclass(frozen=True)
class MatteDifference:
    mean: float
    p999: float

    def within(self, tolerance: Tolerance) -> bool:
        return self.mean <= tolerance.mean and self.p999 <= tolerance.p999

    def __str__(self) -> str:
        return f"mean {self.mean:.4f}, 99.9th percentile {self.p999:.4f}"


def probe_batch(size: int) -> FloatArray:
    """A normalised test image: a lit disc on a graded background, so the matte has edges."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    disc = ((rows - 0.5) ** 2 + (cols - 0.45) ** 2 < 0.09).astype(np.float32)
    grey = 0.25 + 0.2 * cols + 0.6 * disc
    return normalised(np.stack([grey * 1.05, grey, grey * 0.9]).clip(0, 1))


def normalised(rgb: FloatArray) -> FloatArray:
    """A (3, S, S) image in 0..1 as the model's input: ImageNet statistics, a batch of one."""
    mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(3, 1, 1)
    std = np.asarray(IMAGENET_STD, np.float32).reshape(3, 1, 1)
    return ((rgb - mean) / std)[None].astype(np.float32)


def difference(reference: FloatArray, candidate: FloatArray) -> MatteDifference:
    gap = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return MatteDifference(float(gap.mean()), float(np.quantile(gap, 0.999)))


def with_precision(
    model: TorchMatteModel, *, precision: Precision, reference: FloatArray, tolerance: Tolerance = Tolerance()
) -> TorchMatteModel:
    """The model converted to `precision`, after its probe matte matched `reference` (float32's);
    float32 and int8 (which the runtime quantizes, not the eager model): as it is."""
    if precision not in GPU_PRECISIONS:
        return model
    faster = model.replaced(model.module.to(DTYPES[precision]), dtype=DTYPES[precision])
    found = difference(reference, faster.predict(probe_batch(model.size)))
    if not found.within(tolerance):
        raise ModelLoadError(
            f"model.precision: {precision} gives another matte than float32 on this {model.device.type} device "
            f"({found}; allowed: mean {tolerance.mean}, 99.9th percentile {tolerance.p999}): use float32"
        )
    return faster


def compiled(
    model: TorchMatteModel, *, reference: FloatArray, tolerance: Tolerance = Tolerance()
) -> tuple[TorchMatteModel, str]:
    """`torch.compile`d, if it compiles here and its probe matte matches `reference`; else the model
    as it was. The second value says which, and why, for the log."""
    try:
        with warnings.catch_warnings():  # torch's own deprecation notices while it compiles: not ours to act on
            warnings.simplefilter("ignore", DeprecationWarning)
            candidate = model.replaced(torch.compile(model.module))  # type: ignore[arg-type]
            found = difference(reference, candidate.predict(probe_batch(model.size)))
    except Exception as exc:  # any compiler failure (no C compiler, an unsupported op) means: stay eager
        return model, f"torch.compile failed on {model.device.type} ({type(exc).__name__}: {exc}); running uncompiled"
    if not found.within(tolerance):
        return model, f"the compiled model's matte differs from eager mode ({found}); running uncompiled"
    return candidate, f"compiled ({found} from eager mode on the probe image)"
