"""Stage 6: RGBA from the original pixels and the matte, crop, lossless PNG."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from daemon.errors import NoForeground
from daemon.pipeline import pngchunks
from daemon.pipeline.constants import PNG_FILTER, PngFilter
from daemon.pipeline.matte import FloatArray
from daemon.pipeline.postprocess import Region, matte_to_uint8
from daemon.pipeline.preprocess import RGBImage
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


def foreground_fraction(matte: FloatArray, *, threshold: float, region: Region | None = None) -> float:
    """Share of pixels whose matte is above the threshold (all of them inside `region`, if given)."""
    inside = matte if region is None else matte[region]
    return float(np.count_nonzero(inside > threshold)) / max(1, matte.size)


def _span(flags: npt.NDArray[np.bool_], *, padding: int, offset: int, size: int) -> tuple[int, int]:
    """First and one-past-last true index (shifted by `offset`), widened by padding, clamped to `size`."""
    hits = np.flatnonzero(flags)
    return max(0, offset + int(hits[0]) - padding), min(size, offset + int(hits[-1]) + 1 + padding)


def crop_box(matte: FloatArray, *, threshold: float, padding: int, region: Region | None = None) -> CropBox:
    """The box around matte > threshold plus `padding` pixels, clamped to the image.

    With `region` (outside which the matte is zero) only that part is scanned.
    """
    rows_at, cols_at = region or (slice(0, matte.shape[0]), slice(0, matte.shape[1]))
    mask = matte[rows_at, cols_at] > threshold
    rows: npt.NDArray[np.bool_] = np.any(mask, axis=1)
    cols: npt.NDArray[np.bool_] = np.any(mask, axis=0)
    if not rows.any():
        raise NoForeground("no pixel above the alpha threshold: nothing to crop")
    top, bottom = _span(rows, padding=padding, offset=rows_at.start or 0, size=matte.shape[0])
    left, right = _span(cols, padding=padding, offset=cols_at.start or 0, size=matte.shape[1])
    return CropBox(left, top, right, bottom)


def compose_rgba(rgb: RGBImage, matte: FloatArray, *, box: CropBox) -> RGBAImage:
    """The cropped RGBA image: original RGB with the matte as alpha."""
    rgb_crop = rgb[box.top : box.bottom, box.left : box.right]
    alpha = matte_to_uint8(matte[box.top : box.bottom, box.left : box.right])
    return np.dstack((rgb_crop, alpha))


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


_PNG_FILTERS = {
    "none": cv2.IMWRITE_PNG_FILTER_NONE,
    "sub": cv2.IMWRITE_PNG_FILTER_SUB,
    "up": cv2.IMWRITE_PNG_FILTER_UP,
    "average": cv2.IMWRITE_PNG_FILTER_AVG,
    "paeth": cv2.IMWRITE_PNG_FILTER_PAETH,
}


def _bgra(color: npt.NDArray[np.unsignedinteger[Any]], alpha: npt.NDArray[np.unsignedinteger[Any]]) -> npt.NDArray[np.unsignedinteger[Any]]:
    """The encoder's channel order, built in one pass (no RGBA intermediate)."""
    bgra = np.asarray(cv2.cvtColor(color, cv2.COLOR_RGB2BGRA), dtype=color.dtype)
    bgra[..., 3] = alpha
    return bgra


def _alpha16(matte: FloatArray) -> npt.NDArray[np.uint16]:
    scaled = matte * np.float32(65535.0)
    scaled += np.float32(0.5)
    np.clip(scaled, 0, 65535, out=scaled)
    return scaled.astype(np.uint16)


def encode_cutout(
    source: SourceImage, matte: FloatArray, *, box: CropBox, compression: int, png_filter: PngFilter = PNG_FILTER
) -> bytes:
    """The cropped cutout at the source's kept depth, with its profile and metadata."""
    rows, cols = slice(box.top, box.bottom), slice(box.left, box.right)
    if source.deep is not None:
        bgra = _bgra(source.deep[rows, cols], _alpha16(matte[rows, cols]))
    else:
        bgra = _bgra(source.rgb[rows, cols], matte_to_uint8(matte[rows, cols]))
    png = encode_bgra(bgra, compression=compression, png_filter=png_filter)
    chunks = metadata_chunks(source)
    return pngchunks.insert_after_header(png, chunks) if chunks else png


def encode_bgra(
    bgra: npt.NDArray[np.unsignedinteger[Any]], *, compression: int, png_filter: PngFilter = PNG_FILTER
) -> bytes:
    """Lossless PNG bytes, 8 or 16 bits per channel, from OpenCV's BGRA order."""
    flags = [cv2.IMWRITE_PNG_COMPRESSION, compression]
    if png_filter in _PNG_FILTERS:
        flags += [cv2.IMWRITE_PNG_FILTER, _PNG_FILTERS[png_filter]]
    ok, encoded = cv2.imencode(".png", bgra, flags)
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    return bytes(encoded.tobytes())


def encode_png(
    rgba: npt.NDArray[np.unsignedinteger[Any]], *, compression: int, png_filter: PngFilter = PNG_FILTER
) -> bytes:
    """Lossless PNG bytes of an RGBA array."""
    bgra = np.asarray(cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), dtype=rgba.dtype)
    return encode_bgra(bgra, compression=compression, png_filter=png_filter)
