"""What a model is to the rest of the program: `MatteModel`, an array in and a matte out.

A normalised (1, 3, S, S) float32 array in, an (S, S) float32 matte in [0, 1] out. Torch
lives behind it (`inference.TorchMatteModel`); the queue, worker and shutdown tests and
the benchmarks use plain-numpy models (`daemon.testing`) behind the same Protocol, and
nothing that only needs the Protocol pays for importing torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


class MatteModel(Protocol):
    """Anything that turns a normalised batch-1 image into a square matte."""

    def predict(self, batch: FloatArray) -> FloatArray:
        """(1, 3, S, S) float32 in, (S, S) float32 probabilities in [0, 1] out."""
        ...
