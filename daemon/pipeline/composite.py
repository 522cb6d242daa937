"""Stage 6: RGBA from the original pixels and the matte, crop, lossless PNG."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from daemon.errors import NoForeground
from daemon.pipeline.postprocess import matte_to_uint8
from daemon.pipeline.preprocess import FloatArray, RGBImage

RGBAImage = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class CropBox:
    """Half-open pixel box: columns [left, right), rows [top, bottom)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


def foreground_fraction(matte: FloatArray, *, threshold: float) -> float:
    """Share of pixels whose matte is above the threshold."""
    return float(np.count_nonzero(matte > threshold)) / max(1, matte.size)


def _span(flags: npt.NDArray[np.bool_], *, padding: int) -> tuple[int, int]:
    """First and one-past-last true index, widened by padding, clamped."""
    hits = np.flatnonzero(flags)
    return max(0, int(hits[0]) - padding), min(flags.size, int(hits[-1]) + 1 + padding)


def crop_box(matte: FloatArray, *, threshold: float, padding: int) -> CropBox:
    """The box around matte > threshold plus `padding` pixels, clamped to the image."""
    mask = matte > threshold
    rows: npt.NDArray[np.bool_] = np.any(mask, axis=1)
    cols: npt.NDArray[np.bool_] = np.any(mask, axis=0)
    if not rows.any():
        raise NoForeground("no pixel above the alpha threshold: nothing to crop")
    top, bottom = _span(rows, padding=padding)
    left, right = _span(cols, padding=padding)
    return CropBox(left, top, right, bottom)


def compose_rgba(rgb: RGBImage, matte: FloatArray, *, box: CropBox) -> RGBAImage:
    """The cropped RGBA image: original RGB with the matte as alpha."""
    rgb_crop = rgb[box.top : box.bottom, box.left : box.right]
    alpha = matte_to_uint8(matte[box.top : box.bottom, box.left : box.right])
    return np.dstack((rgb_crop, alpha))


def encode_png(rgba: RGBAImage, *, compression: int) -> bytes:
    """Lossless RGBA PNG bytes (OpenCV's encoder wants BGRA)."""
    bgra = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(".png", bgra, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    return bytes(encoded.tobytes())
