"""Stage 6: RGBA from the original pixels and the matte, crop, lossless PNG."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from daemon.errors import NoForeground
from daemon.pipeline.postprocess import matte_to_uint8
from daemon.pipeline import pngchunks
from daemon.pipeline.preprocess import FloatArray, RGBImage
from daemon.pipeline.source import SourceImage

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


def compose_rgba16(rgb: npt.NDArray[np.uint16], matte: FloatArray, *, box: CropBox) -> npt.NDArray[np.uint16]:
    """16-bit colour kept at full precision, alpha scaled to 16 bits."""
    rgb_crop = rgb[box.top : box.bottom, box.left : box.right]
    scaled = np.clip(matte[box.top : box.bottom, box.left : box.right] * np.float32(65535.0) + np.float32(0.5), 0, 65535)
    return np.dstack((rgb_crop, scaled.astype(np.uint16)))


def combine_alpha(matte: FloatArray, source_alpha: FloatArray | None) -> FloatArray:
    """Existing transparency is kept: the output alpha is the lower of the two."""
    return matte if source_alpha is None else np.minimum(matte, source_alpha)


def metadata_chunks(source: SourceImage) -> list[bytes]:
    """The colour tag, then EXIF, XMP and capture time when they are to be kept."""
    chunks = [pngchunks.iccp(source.icc_profile)] if source.icc_profile else []
    chunks += [pngchunks.srgb()] if source.srgb else []
    meta = source.metadata
    chunks += [pngchunks.exif(meta.exif)] if meta.exif else []
    chunks += [pngchunks.xmp(meta.xmp)] if meta.xmp else []
    chunks += [pngchunks.text("Creation Time", meta.capture_time)] if meta.capture_time else []
    return chunks


def encode_cutout(source: SourceImage, matte: FloatArray, *, box: CropBox, compression: int) -> bytes:
    """The cropped cutout at the source's kept depth, with its profile and metadata."""
    if source.deep is not None:
        pixels: npt.NDArray[np.unsignedinteger[Any]] = compose_rgba16(source.deep, matte, box=box)
    else:
        pixels = compose_rgba(source.rgb, matte, box=box)
    png = encode_png(pixels, compression=compression)
    chunks = metadata_chunks(source)
    return pngchunks.insert_after_header(png, chunks) if chunks else png


def encode_png(rgba: npt.NDArray[np.unsignedinteger[Any]], *, compression: int) -> bytes:
    """Lossless RGBA PNG bytes, 8 or 16 bits per channel (OpenCV's encoder wants BGRA)."""
    bgra = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(".png", bgra, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    return bytes(encoded.tobytes())
