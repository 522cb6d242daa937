"""The photos `model.precision: int8` measures its activation ranges on, made here, the same on
every machine: quantization must not depend on what happens to be in a folder.

    calibration_batches(size)     CALIBRATION_PHOTOS normalised (1, 3, size, size) batches

Each is a subject over a backdrop, as the daemon's photos are: textured subjects of random
shape and colour over plain, graded and busy backdrops, with soft edges (the range a quantized
activation must hold comes from the edges and the textures, not from flat colour). Not the
probe image: the check at start runs on it, and must judge the quantized graph on a photo it
was not calibrated on. `CALIBRATION_SET` names this recipe in the export's key: a change to it
makes a new export.
"""

from __future__ import annotations

import cv2
import numpy as np

from daemon.pipeline.matte import FloatArray
from daemon.pipeline.precision import normalised

CALIBRATION_PHOTOS = 6
"""NNCF's statistics pass runs the float32 graph once per photo: about 20 s each for Swin-T at 1024
on two cores. Six gave a matte within the precision check's tolerance (BENCHMARKS.md)."""
CALIBRATION_SET = f"scenes-2-{CALIBRATION_PHOTOS}"
SEED = 2022


def calibration_batches(size: int) -> list[FloatArray]:
    """The scenes the INT8 graph's ranges are measured on, as the model's input."""
    rng = np.random.default_rng(SEED)
    return [normalised(_scene(size, rng=rng, busy=index % 2 == 1)) for index in range(CALIBRATION_PHOTOS)]


def _scene(size: int, *, rng: np.random.Generator, busy: bool) -> FloatArray:
    """A textured ellipse with a soft rim over a graded (or blotchy) backdrop: (3, size, size) in 0..1."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / size
    backdrop = rng.uniform(0.1, 0.9, (3, 1, 1)) + 0.3 * (cols - 0.5) * rng.uniform(-1, 1)
    if busy:
        backdrop = backdrop + 0.3 * _blotches(size, rng=rng)
    centre, radii = rng.uniform(0.35, 0.65, 2), rng.uniform(0.15, 0.35, 2)
    inside = (((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 < 1).astype(np.float32)
    soft = cv2.GaussianBlur(inside, (0, 0), sigmaX=max(1.0, size / 200))[None]
    subject = rng.uniform(0.0, 1.0, (3, 1, 1)) + 0.12 * rng.standard_normal((3, size, size))
    scene: FloatArray = np.clip(soft * subject + (1 - soft) * backdrop, 0, 1).astype(np.float32)
    return scene


def _blotches(size: int, *, rng: np.random.Generator) -> FloatArray:
    """Smooth colour noise: an 8 x 8 grid of random values, enlarged."""
    grid = rng.uniform(-1, 1, (8, 8, 3)).astype(np.float32)
    enlarged: FloatArray = np.asarray(cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC), np.float32)
    return np.moveaxis(enlarged, -1, 0)

