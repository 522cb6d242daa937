"""Edge colours without the old background: the `decontaminate` recipe option.

In the soft edge of a cut-out (hair, fur, motion blur, an out-of-focus rim) each pixel is a mix
of the subject and the backdrop, `I = a F + (1 - a) B`. The seed keeps `I` and only adds the
alpha `a`, so on a new background the edge still carries a halo of the old one. This module
replaces the colour of every partly transparent pixel with an estimate of `F`, the subject's
own colour there; opaque and fully transparent pixels keep their bytes.

The estimator is blur fusion (M. Forte and F. Pitie, "Approximate Fast Foreground Colour
Estimation", ICIP 2021; BiRefNet's `refine_foreground` uses it): with box averages `<.>_r`,

    F_avg = <F a>_r / <a>_r        B_avg = <B (1 - a)>_r / <1 - a>_r
    F     = clip(F_avg + a (I - a F_avg - (1 - a) B_avg))

run as a cascade of narrowing boxes from `F = B = I`, each pass starting from the last one's
`F` and `B_avg`: Forte and Pitie run two (90 and 6 pixels); the widths between (60, 30, 15)
halve the error on the benchmark's strands, fur and blur (BENCHMARKS.md). The correction term
puts back exactly what the averages miss, so `a F + (1 - a) B_avg` recomposes the photo.

Choices, and why:

- **sRGB-encoded values, not linear light.** Every viewer, browser and shop composites a
  transparent PNG in encoded values (and so does our own `background:`; see render.py), so
  the `F` that makes `a F + (1 - a) B'` look right on a new background `B'` is the one
  estimated in those values. It also needs no colour management: a photo in Adobe RGB or
  Display P3 keeps its values and its profile, and no transfer curve has to be known.
- **Only where it matters.** The coarse passes are computed at a quarter of the resolution
  (their averages are 15 to 90 pixels wide: little finer survives them) and sampled back
  bilinearly; the narrow pass and the result are computed only in 64-pixel tiles that hold
  edge pixels, so the cost follows the length of the edge, not the size of the photo.
- **Widths grow with the subject**: Forte and Pitie's widths suit a subject about 1500
  pixels long; a 24 MP photo's subject is three or four times that, and so are its soft
  bands, so the coarse widths scale with the crop's longer side (never below theirs).
- **8 and 16 bits alike**: the work is in floats in [0, 1]; the result is rounded to the
  colour's own depth, and only the pixels whose quantised alpha is strictly between 0 and
  the maximum are written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Plane = npt.NDArray[np.unsignedinteger[Any]]
Floats = npt.NDArray[np.float32]

CASCADE = (90, 60, 30, 15)
"""The coarse passes' box widths in pixels, widest first, for a subject up to REFERENCE_SIDE long."""
REFERENCE_SIDE = 1500
"""Forte and Pitie's widths suit photos of about this size; a larger crop scales them up."""
NARROW = 6
"""The last pass, at full resolution: its box is narrow enough to follow single strands."""
LOW_RES = 4
"""The coarse passes run at 1/LOW_RES of the size: their averages are wider than the detail lost."""
TILE = 64
MARGIN = NARROW // 2 + 1
"""Around each tile: what the narrow pass's box reaches beyond it."""
EPS = np.float32(1e-5)


def decontaminated(colour: Plane, alpha: Plane, *, keep: npt.NDArray[np.bool_] | None = None) -> Plane:
    """`colour` (H, W, 3) with each partly transparent pixel's colour replaced by the subject's
    own; `alpha` (H, W) is the output's quantised alpha at the colour's depth. Pixels marked in
    `keep` keep their colour whatever their alpha (the source's own transparency: a glass's
    colour is its own, not a mix with a backdrop)."""
    top = float(np.iinfo(colour.dtype).max)
    edge = (alpha > 0) & (alpha < top)
    if keep is not None:
        edge &= ~keep
    if not edge.any():
        return colour
    coarse = _coarse_passes(colour, alpha, top=top)
    out = colour.copy()
    for inner, outer in _tiles(edge):
        estimate = _narrow_pass(_unit(colour[outer], top), _unit(alpha[outer], top), coarse=coarse, at=outer)
        here = edge[inner]
        local = tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer, strict=True))
        out[inner][here] = np.rint(estimate[local][here] * top).astype(colour.dtype)
    return out


def _unit(values: Plane, top: float) -> Floats:
    return np.multiply(values, np.float32(1 / top), dtype=np.float32)


class _Coarse:
    """The coarse passes' subject and backdrop estimates, at low resolution."""

    def __init__(self, subject: Floats, backdrop: Floats, *, shape: tuple[int, int]) -> None:
        self.maps = np.concatenate([subject, backdrop], axis=2)
        # The reduction's true factors (a side that is no multiple of LOW_RES rounds up).
        self.factor_y, self.factor_x = shape[0] / subject.shape[0], shape[1] / subject.shape[1]

    def at(self, rows: slice, cols: slice) -> tuple[Floats, Floats]:
        """Both estimates sampled bilinearly at full-resolution pixels (centres aligned)."""
        ys = (np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5) / np.float32(self.factor_y) - 0.5
        xs = (np.arange(cols.start, cols.stop, dtype=np.float32) + 0.5) / np.float32(self.factor_x) - 0.5
        map_x, map_y = np.meshgrid(xs, ys)
        sampled = np.asarray(cv2.remap(self.maps, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
                             dtype=np.float32)
        return sampled[..., :3], sampled[..., 3:]


def _coarse_passes(colour: Plane, alpha: Plane, *, top: float) -> _Coarse:
    height, width = alpha.shape
    size = (max(1, -(-width // LOW_RES)), max(1, -(-height // LOW_RES)))
    image = _reduced(colour, size) / np.float32(top)
    a = (_reduced(alpha, size) / np.float32(top))[..., np.newaxis]
    scale = max(1.0, max(height, width) / REFERENCE_SIDE) / LOW_RES
    # Starting points weighted by coverage, so a strand thinner than the reduction still gives
    # its own colour (the plain reduction mixes it with the backdrop around it).
    covered = _reduced(_weighted(colour, alpha), size) / np.float32(top * top)
    subject = covered / (a + EPS)
    backdrop = (image - covered) / (1 - a + EPS)  # the reduction is linear: <I (1 - a)> = <I> - <I a>
    for box in CASCADE:
        subject, backdrop = _fusion(image, a, subject, backdrop, box=max(1, round(box * scale)))
    return _Coarse(subject, backdrop, shape=(height, width))


def _weighted(colour: Plane, weight: Plane) -> npt.NDArray[Any]:
    """colour x weight per channel, exactly: in 16-bit integers for 8-bit values, else in floats."""
    if colour.dtype == np.uint8:
        return np.asarray(cv2.multiply(colour, cv2.merge([weight] * 3), dtype=cv2.CV_16U))
    return np.multiply(colour, weight[..., np.newaxis], dtype=np.float32)


def _reduced(values: npt.NDArray[Any], size: tuple[int, int]) -> Floats:
    return np.asarray(cv2.resize(values, size, interpolation=cv2.INTER_AREA), dtype=np.float32)


def _narrow_pass(image: Floats, a: Floats, *, coarse: _Coarse, at: tuple[slice, slice]) -> Floats:
    """The coarse estimate at full resolution in one tile, refined by the narrow pass."""
    subject, backdrop = coarse.at(*at)
    return _fusion(image, a[..., np.newaxis], subject, backdrop, box=NARROW)[0]


def _fusion(image: Floats, a: Floats, subject: Floats, backdrop: Floats, *, box: int) -> tuple[Floats, Floats]:
    """One pass: the box averages of subject and backdrop, plus what they miss of the photo,
    F = F_avg + a (I - a F_avg - (1 - a) B_avg) = F_avg + a ((I - B_avg) - a (F_avg - B_avg)).
    Returns (F, B_avg). In place where it can: at 24 MP the temporaries cost more than the blurs."""
    size = (box, box)
    mean_a = cv2.blur(a, size).reshape(a.shape)
    subject_avg = _blurred(np.multiply(subject, a, dtype=np.float32), size)
    subject_avg /= mean_a + EPS
    clear = np.float32(1) - a
    backdrop_avg = _blurred(np.multiply(backdrop, clear, dtype=np.float32), size)
    backdrop_avg /= np.float32(1) + EPS - mean_a
    fused = np.subtract(image, backdrop_avg, dtype=np.float32)
    difference = np.subtract(subject_avg, backdrop_avg, dtype=np.float32)
    difference *= a
    fused -= difference
    fused *= a
    fused += subject_avg
    np.clip(fused, 0.0, 1.0, out=fused)
    return fused, backdrop_avg


def _blurred(values: Floats, size: tuple[int, int]) -> Floats:
    return np.asarray(cv2.blur(values, size), dtype=np.float32)


def _tiles(edge: npt.NDArray[np.bool_]) -> Iterator[tuple[tuple[slice, slice], tuple[slice, slice]]]:
    """(inner, outer) for each TILE x TILE square holding edge pixels; outer adds MARGIN around it."""
    height, width = edge.shape
    rows, cols = -(-height // TILE), -(-width // TILE)
    padded = np.zeros((rows * TILE, cols * TILE), bool)
    padded[:height, :width] = edge
    busy = padded.reshape(rows, TILE, cols, TILE).any(axis=(1, 3))
    for row, col in zip(*np.nonzero(busy), strict=True):
        top, left = int(row) * TILE, int(col) * TILE
        inner = (slice(top, min(height, top + TILE)), slice(left, min(width, left + TILE)))
        outer = (slice(max(0, top - MARGIN), min(height, top + TILE + MARGIN)),
                 slice(max(0, left - MARGIN), min(width, left + TILE + MARGIN)))
        yield inner, outer
