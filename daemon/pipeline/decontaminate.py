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
- **Scaled to the subject.** Forte and Pitie's widths suit a subject about REFERENCE_SIDE
  pixels long; a 24 MP photo's subject is three or four times that, and so are its soft
  bands. So a larger crop is first area-reduced to that size (`fine`), where the narrow
  pass runs (only in the tiles the edge's samples read), and the coarse passes run at a
  quarter of it (their boxes are 4 to 22 pixels there: little finer survives them). Only
  the last step is at full resolution, and only at the partly transparent pixels: each
  gets the narrow pass's averages, sampled bilinearly, and its own photo and alpha in the
  correction term, which is what puts a single strand's detail back. The one pass over the
  whole photo (the reduction, the product colour x alpha, the edge's places) runs a strip
  of rows at a time, in the cache. The rest of the cost follows the length of the edge, not
  the size of the photo; at 24 MP it measured 0.24 x the decode and encode floor with a 4 %
  edge, 0.54-0.66 x with a 21 % one (BENCHMARKS.md).
  Thin strands on a large photo pay a little for the reduced narrow pass (3.8 levels
  against 2.0 on 2-pixel strands at 2400 px, within the 8-level target).
- **8 and 16 bits alike**: the reductions run in integer levels (16 bits for the coarse
  passes), the estimates in floats in [0, 1]; the result is rounded to the colour's own depth,
  and only the pixels whose quantised alpha is strictly between 0 and the maximum are written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

Plane = npt.NDArray[np.unsignedinteger[Any]]
Floats = npt.NDArray[np.float32]

CASCADE = (90, 60, 30, 15)
"""The coarse passes' box widths in pixels of a subject REFERENCE_SIDE long, widest first."""
NARROW = 6
"""The last pass's box at REFERENCE_SIDE: narrow enough to follow single strands."""
REFERENCE_SIDE = 1500
"""Forte and Pitie's widths suit photos of about this size; a larger crop scales them up."""
LOW_RES = 4
"""The coarse passes run at 1/LOW_RES of the narrow pass's size: their boxes are wider than the detail lost."""
EPS = np.float32(1e-5)
TILE = 64
"""The narrow pass's averages are taken tile by tile, only in the tiles of the reduced scene that
the edge's samples read: 18 % of them on the benchmark's 24 MP fur rim."""
MARGIN = NARROW // 2 + 1
"""A tile's averages are taken over it grown by this much: each box then lies inside what was read."""
STRIP = 256
"""Full-resolution rows reduced at a time: a 24 MP strip and its product fit in the cache."""
CHUNK = 16384
"""Edge pixels corrected per step: the step's temporaries stay in the cache (and, on a virtual
machine, clear of page faults, which cost several times the arithmetic), and its row of
sampling places is under cv2.remap's 32767."""


def decontaminated(colour: Plane, alpha: Plane, *, keep: npt.NDArray[np.bool_] | None = None) -> Plane:
    """`colour` (H, W, 3) with each partly transparent pixel's colour replaced by the subject's
    own; `alpha` (H, W) is the output's quantised alpha at the colour's depth. Pixels marked in
    `keep` keep their colour whatever their alpha (the source's own transparency: a glass's
    colour is its own, not a mix with a backdrop)."""
    if alpha.dtype != colour.dtype:
        raise ValueError(f"alpha ({alpha.dtype}) and colour ({colour.dtype}) must have the same depth")
    top = float(np.iinfo(colour.dtype).max)
    shape = (alpha.shape[0], alpha.shape[1])
    size = _size(shape, by=max(1.0, max(shape) / REFERENCE_SIDE))
    halvings = _halvings(shape, size=size)
    places, band = _edge(alpha, keep=keep, top=top, halvings=halvings)
    if places.size == 0:
        return colour
    fine = _Scene.reduced(colour, alpha, top=top, size=size, halvings=halvings)
    averages = _narrow_averages(fine, _coarse_passes(fine), near=_near(band, shape=fine.alpha.shape))
    out = np.array(colour, order="C")
    pixels, opacity = _pixels(out), alpha.ravel()
    for start in range(0, places.size, CHUNK):
        here = places[start : start + CHUNK]
        found = _corrected(_scaled(_values(pixels[here], colour.dtype), 1 / top),
                           _scaled(opacity[here], 1 / top)[:, np.newaxis],
                           *_sampled(averages, at=here, width=alpha.shape[1], extent=fine.extent))
        pixels[here] = _pixels(np.rint(found * top).astype(colour.dtype))
    return out


def _pixels(plane: Plane) -> npt.NDArray[np.void]:
    """A C-contiguous (..., 3) plane as one item per pixel: numpy moves a pixel's channels
    together two to three times faster than it indexes them."""
    return plane.reshape(-1, 3).view(np.dtype((np.void, 3 * plane.itemsize))).reshape(-1)


def _values(pixels: npt.NDArray[np.void], dtype: np.dtype[Any]) -> Plane:
    return pixels.view(dtype).reshape(-1, 3)


def _scaled(values: npt.NDArray[Any], scale: float) -> Floats:
    """`values` times `scale`, in floats: levels to [0, 1]."""
    scaled: Floats = np.multiply(values, np.float32(scale), dtype=np.float32)
    return scaled


class _Scene(NamedTuple):
    """The photo, its alpha and the photo weighted by alpha (`_weighted`), area-reduced, kept in
    the integer levels the reductions ran in; `scales` brings each to [0, 1]. Only what the
    coarse passes and the edge's tiles read is ever made float: at a 24 MP photo's 1500 x 1000
    the three planes in floats were 54 MB of fresh memory, whose page faults cost more than
    their arithmetic. The reduction is linear, so <I a> kept beside <I> and <a> still tells
    subject from backdrop. `extent` is the full-resolution (height, width) the scene covers:
    the photo's, or a little more where its sides were padded for the halvings (see
    `_halved_in_strips`)."""

    image: Plane
    alpha: Plane
    covered: Plane
    scales: tuple[float, float, float]
    extent: tuple[int, int]

    @classmethod
    def reduced(cls, colour: Plane, alpha: Plane, *, top: float, size: tuple[int, int], halvings: int) -> _Scene:
        shape = (alpha.shape[0], alpha.shape[1])
        if size == (shape[1], shape[0]):
            covered, full = _weighted(colour, alpha, top=top)
            return cls(colour, alpha, covered, (1 / top, 1 / top, 1 / full), shape)
        # <I a> from the full-resolution product: the product of the reductions, <I> <a>, is the
        # plain average again, which mixes a strand thinner than the reduction with its backdrop.
        halved, opacity, weighted, full = _halved_in_strips(colour, alpha, halvings=halvings, top=top)
        return cls(_area_reduced(halved, size), _area_reduced(opacity, size), _area_reduced(weighted, size),
                   (1 / top, 1 / top, 1 / full), _extent(shape, halvings=halvings))

    def smaller(self, *, by: float) -> tuple[Floats, Floats, Floats]:
        """The photo, its alpha over three channels and their product, reduced `by` times further,
        in [0, 1]. In 16 bits: 8-bit levels rounded at every halving put the coverage-weighted
        colour <I a> / <a> of a faint haze (alpha of a few levels) off by up to 200 levels."""
        size = _size(self.alpha.shape, by=by)
        wide = [_widened(plane, scale) for plane, scale in zip((self.image, self.alpha, self.covered), self.scales)]
        image, alpha, covered = (_scaled(_area_reduced(plane, size), scale) for plane, scale in wide)
        return image, _spread(alpha), covered

    def alpha_at(self, rows: slice, cols: slice) -> Floats:
        """The alpha in [0, 1] over three channels, in one part of the scene."""
        return _spread(_scaled(self.alpha[rows, cols], self.scales[1]))


def _halvings(shape: tuple[int, ...], *, size: tuple[int, int]) -> int:
    """How many times both sides can be halved and stay at least `size` (width, height)."""
    count = 0
    while shape[1] >> (count + 1) >= size[0] and shape[0] >> (count + 1) >= size[1]:
        count += 1
    return count


def _extent(shape: tuple[int, int], *, halvings: int) -> tuple[int, int]:
    """`shape` padded up to whole blocks of 2**halvings pixels."""
    block = 1 << halvings
    return -(-shape[0] // block) * block, -(-shape[1] // block) * block


def _halved_in_strips(colour: Plane, alpha: Plane, *, halvings: int, top: float) -> tuple[Plane, Plane, Plane, float]:
    """The colour, the alpha and their product (`_weighted`) area-halved `halvings` times, STRIP
    rows at a time: each strip's product is made and all three are reduced while the strip is in
    the cache. Whole, the product alone was 144 MB of fresh memory at 24 MP, and on a virtual
    machine the page faults of fresh memory cost more than the arithmetic. A side that is not
    whole blocks of 2**halvings is padded by repeating its last row or column, so every halving
    is exact and a strip's halves are those of the whole."""
    block = 1 << halvings
    reduced: list[Plane] = []
    full = 0.0
    for rows, padded in _strips(alpha.shape, halvings=halvings):
        strip = [_padded(plane[rows], rows=padded[0], cols=padded[1]) for plane in (colour, alpha)]
        weighted, full = _weighted(strip[0], strip[1], top=top)
        halves = [_halved(plane, times=halvings) for plane in (*strip, weighted)]
        if not reduced:
            height = _extent((alpha.shape[0], alpha.shape[1]), halvings=halvings)[0]
            reduced = [np.empty((height // block, *half.shape[1:]), half.dtype) for half in halves]
        for whole, half in zip(reduced, halves):
            whole[rows.start // block : rows.start // block + half.shape[0]] = half
    return reduced[0], reduced[1], reduced[2], full


def _strips(shape: tuple[int, ...], *, halvings: int) -> Iterator[tuple[slice, tuple[int, int]]]:
    """The full-resolution rows of each strip (STRIP rows, whole blocks of 2**halvings), and the
    strip's (rows, columns) once padded to the extent: the last strip and every strip's width."""
    block = 1 << halvings
    height, width = _extent((shape[0], shape[1]), halvings=halvings)
    rows = max(block, STRIP // block * block)
    for start in range(0, shape[0], rows):
        yield slice(start, start + rows), (min(rows, height - start), width)


def _padded(plane: Plane, *, rows: int, cols: int, border: int = cv2.BORDER_REPLICATE) -> Plane:
    """`plane` grown to `rows` x `cols` at its bottom and right (the band's growth is no edge:
    `cv2.BORDER_CONSTANT`, zeros)."""
    if plane.shape[:2] == (rows, cols):
        return plane
    return np.asarray(cv2.copyMakeBorder(plane, 0, rows - plane.shape[0], 0, cols - plane.shape[1], border, value=0))


def _halved(plane: npt.NDArray[Any], *, times: int,
            each: Callable[[npt.NDArray[Any]], npt.NDArray[Any]] = lambda halved: halved) -> npt.NDArray[Any]:
    """`plane` area-halved `times` times, `each` applied after every halving."""
    for _ in range(times):
        plane = each(np.asarray(cv2.resize(plane, (plane.shape[1] // 2, plane.shape[0] // 2),
                                           interpolation=cv2.INTER_AREA)))
    return plane


def _spread(plane: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """One channel repeated over three, in its own type: OpenCV's arithmetic wants the channels
    to match."""
    return np.asarray(cv2.merge([plane] * 3))


def _weighted(colour: Plane, weight: Plane, *, top: float) -> tuple[Plane, float]:
    """colour x weight per channel in 16 bits, and its value where both are full: exact for 8-bit
    colours (OpenCV's fast integer product), within half a level for 16-bit ones (scaled back).
    Never in 8-bit levels: at alpha 1/255 a faint haze's product is under one of them, and a
    uniform error is not averaged away by the reduction (its colour came out (0, 251, 0))."""
    spread = _spread(weight)
    if colour.dtype == np.uint8:
        return np.asarray(cv2.multiply(colour, spread, dtype=cv2.CV_16U), np.uint16), top * top
    return np.asarray(cv2.multiply(colour, spread, scale=1 / top), np.uint16), top


def _size(shape: tuple[int, ...], *, by: float) -> tuple[int, int]:
    """(width, height) of `shape` reduced `by` times, a side never under one pixel."""
    return max(1, math.ceil(shape[1] / by)), max(1, math.ceil(shape[0] / by))


def _widened(plane: Plane, scale: float) -> tuple[Plane, float]:
    """An 8-bit plane in 16 bits (x 257, the scale to [0, 1] with it); a wider one as it is."""
    if plane.dtype != np.uint8:
        return plane, scale
    return np.multiply(plane, np.uint16(257), dtype=np.uint16), scale / 257


def _area_reduced(values: Plane, size: tuple[int, int]) -> Plane:
    """Area-reduced to `size` (width, height) in its own levels: halved while it can be (OpenCV's
    fast path, several times faster on a 24 MP photo), then reduced the rest of the way."""
    values = _halved(values, times=_halvings(values.shape, size=size))
    if (values.shape[1], values.shape[0]) != size:
        values = np.asarray(cv2.resize(values, size, interpolation=cv2.INTER_AREA))
    return values


def _coarse_passes(fine: _Scene) -> tuple[Floats, Floats]:
    """The cascade at 1/LOW_RES of `fine`: its subject and backdrop estimates, at that size."""
    image, a, covered = fine.smaller(by=LOW_RES)
    # Starting points weighted by coverage, so a strand thinner than the reduction still gives
    # its own colour (the plain reduction mixes it with the backdrop around it).
    subject = covered / (a + EPS)
    backdrop = (image - covered) / (1 - a + EPS)  # <I (1 - a)> = <I> - <I a>
    for box in CASCADE:
        subject_avg, backdrop = _averages(a, subject, backdrop, box=box / LOW_RES)
        subject = _corrected(image, a, subject_avg, backdrop)
    return subject, backdrop


def _averages(a: Floats, subject: Floats, backdrop: Floats, *, box: float = NARROW) -> tuple[Floats, Floats]:
    """The box averages of subject and backdrop, each weighted by its share of the pixel:
    F_avg = <F a> / <a>, B_avg = <B (1 - a)> / <1 - a>. In OpenCV's arithmetic."""
    size = (max(1, round(box)), max(1, round(box)))
    mean_a = cv2.blur(a, size)
    subject_avg = cv2.divide(cv2.blur(cv2.multiply(subject, a), size), cv2.add(mean_a, _every(float(EPS))))
    backdrop_avg = cv2.divide(cv2.blur(cv2.multiply(backdrop, cv2.subtract(_every(1), a)), size),
                              cv2.subtract(_every(1 + float(EPS)), mean_a))
    return np.asarray(subject_avg, np.float32), np.asarray(backdrop_avg, np.float32)


def _narrow_averages(fine: _Scene, coarse: tuple[Floats, Floats], *, near: npt.NDArray[np.bool_]) -> tuple[Floats, Floats]:
    """The narrow pass's averages in every tile holding a pixel of `near`, from the `coarse`
    estimates brought up to `fine`'s size (bilinear, pixel centres aligned) in that tile only;
    as over the whole scene (to the last bit but one: the box filter's running sums start at
    the tile), and zero elsewhere, where no sample reads them."""
    height, width = near.shape
    found = (np.zeros((height, width, 3), np.float32), np.zeros((height, width, 3), np.float32))
    for rows, cols in _tiles(near):
        grown = _grown(rows, limit=height), _grown(cols, limit=width)
        averages = _averages(fine.alpha_at(*grown), *_upsampled(coarse, rows=grown[0], cols=grown[1], shape=near.shape))
        inner = (slice(rows.start - grown[0].start, rows.stop - grown[0].start),
                 slice(cols.start - grown[1].start, cols.stop - grown[1].start))
        for whole, part in zip(found, averages):
            whole[rows, cols] = part[inner]
    return found


def _upsampled(planes: tuple[Floats, Floats], *, rows: slice, cols: slice,
               shape: tuple[int, ...]) -> tuple[Floats, Floats]:
    """The part (`rows`, `cols`) of each of `planes` enlarged to `shape`, bilinear, pixel centres
    aligned (as cv2.resize): the same values in any part as over the whole."""
    height, width = planes[0].shape[:2]
    map_y = _placed(np.arange(rows.start, rows.stop), scale=height / shape[0]).reshape(-1, 1)
    map_x = _placed(np.arange(cols.start, cols.stop), scale=width / shape[1])
    map_x, map_y = (np.ascontiguousarray(grid) for grid in np.broadcast_arrays(map_x, map_y))
    first, second = (_remapped(plane, map_x=map_x, map_y=map_y) for plane in planes)
    return first, second


def _remapped(plane: Floats, *, map_x: Floats, map_y: Floats) -> Floats:
    """`plane` sampled bilinearly at (`map_x`, `map_y`), its border repeated."""
    return np.asarray(cv2.remap(plane, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), np.float32)


def _tiles(near: npt.NDArray[np.bool_]) -> list[tuple[slice, slice]]:
    """The TILE x TILE tiles (cut at the scene's edge) that hold a pixel of `near`."""
    height, width = near.shape
    across, down = -(-width // TILE), -(-height // TILE)
    padded = np.zeros((down * TILE, across * TILE), np.bool_)
    padded[:height, :width] = near
    held = padded.reshape(down, TILE, across, TILE).any(axis=(1, 3))
    return [(slice(row * TILE, min(height, (row + 1) * TILE)), slice(col * TILE, min(width, (col + 1) * TILE)))
            for row, col in zip(*np.nonzero(held))]


def _grown(span: slice, *, limit: int) -> slice:
    return slice(max(0, span.start - MARGIN), min(limit, span.stop + MARGIN))


def _edge(alpha: Plane, *, keep: npt.NDArray[np.bool_] | None, top: float, halvings: int) -> tuple[npt.NDArray[np.intp], Plane]:
    """The flat places of the partly transparent pixels not in `keep`, and the band of them all
    (255 there) over the scene's extent, halved `halvings` times keeping any pixel of it (see
    `_near`): STRIP rows at a time, like the scene, so the band is never made whole."""
    places, halves = [], []
    for rows, padded in _strips(alpha.shape, halvings=halvings):
        band = np.asarray(cv2.inRange(alpha[rows], 1, top - 1), np.uint8)
        edge = band != 0  # a boolean mask: numpy finds its places ten times faster
        if keep is not None:
            edge &= ~keep[rows]
        places.append(np.flatnonzero(edge) + rows.start * alpha.shape[1])
        band = _padded(band, rows=padded[0], cols=padded[1], border=cv2.BORDER_CONSTANT)
        halves.append(_halved(band, times=halvings, each=_any))
    return np.concatenate(places), np.concatenate(halves) if len(halves) > 1 else halves[0]


def _near(band: Plane, *, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """The pixels of the reduced scene (`shape`) that an edge pixel's bilinear sample reads: the
    band (0 or 255 over the scene's extent, maybe already halved) reduced keeping any pixel of
    it (a lone strand pixel counts), then grown by one for the sample's next pixels."""
    size = (shape[1], shape[0])
    band = _halved(band, times=_halvings(band.shape, size=size), each=_any)
    if (band.shape[1], band.shape[0]) != size:  # in floats: a lone pixel over a long reduction must not round to 0
        band = _any(cv2.resize(band.astype(np.float32), size, interpolation=cv2.INTER_AREA))
    grown: npt.NDArray[np.bool_] = cv2.dilate(band, np.ones((3, 3), np.uint8)) != 0
    return grown


def _any(reduced: npt.NDArray[Any]) -> Plane:
    """255 wherever the reduction saw any of the band (an average above 0), as before it."""
    return np.asarray(cv2.threshold(reduced, 0, 255, cv2.THRESH_BINARY)[1], np.uint8)


def _every(value: float) -> npt.NDArray[np.float64]:
    """A scalar for every channel: OpenCV before 5 reads a bare number as (value, 0, 0, 0)."""
    return np.full(4, value, np.float64)


def _corrected(image: Floats, a: Floats, subject_avg: Floats, backdrop_avg: Floats) -> Floats:
    """What the averages miss of the photo put back: F = F_avg + a ((I - B_avg) - a (F_avg - B_avg)),
    so that a F + (1 - a) B_avg recomposes it. In place where it can: the temporaries cost more
    than the arithmetic."""
    fused = np.subtract(image, backdrop_avg, dtype=np.float32)
    difference = np.subtract(subject_avg, backdrop_avg, dtype=np.float32)
    difference *= a
    fused -= difference
    fused *= a
    fused += subject_avg
    return np.clip(fused, 0.0, 1.0, out=fused)


def _sampled(averages: tuple[Floats, Floats], *, at: npt.NDArray[np.intp], width: int,
             extent: tuple[int, int]) -> tuple[Floats, Floats]:
    """The subject and backdrop averages (reduced maps covering `extent` at full resolution)
    sampled bilinearly at full-resolution pixels given by their flat index in rows `width`
    long, pixel centres aligned."""
    rows, cols = np.divmod(at, width)
    map_y = _placed(rows, scale=averages[0].shape[0] / extent[0])
    map_x = _placed(cols, scale=averages[0].shape[1] / extent[1])
    # One map each: the arithmetic after it runs half again as fast on contiguous rows.
    subject, backdrop = (_remapped(plane, map_x=map_x, map_y=map_y).reshape(-1, 3) for plane in averages)
    return subject, backdrop


def _placed(indices: npt.NDArray[np.intp], *, scale: float) -> Floats:
    """Pixel indices along one axis as places in a map `scale` times the size, one row long."""
    places = indices.astype(np.float32).reshape(1, -1)
    places += np.float32(0.5)
    places *= np.float32(scale)
    places -= np.float32(0.5)
    return places
