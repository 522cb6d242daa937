"""Stages 1-3 of the seed: load, resize and pad to the model's square, normalise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from daemon.errors import TooLarge, Truncated, Undecodable, Vanished, from_os_error
from daemon.pipeline.constants import ImageOptions, PipelineParams
from daemon.pipeline.formats import truncation
from daemon.pipeline.matte import FloatArray
from daemon.pipeline.source import SourceImage, read_source

RGBImage = npt.NDArray[np.uint8]
"""(H, W, 3) uint8, RGB order."""


@dataclass(frozen=True, kw_only=True)
class PadMeta:
    """Where the resized image sits inside the square, to map the matte back."""

    orig_h: int
    orig_w: int
    new_h: int
    new_w: int
    x_offset: int
    y_offset: int
    scale: float


def read_file(path: Path, *, max_bytes: int | None = None) -> bytes:
    """The file's bytes, refusing oversized, empty and incomplete JPEG/PNG files."""
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise TooLarge(f"file is {size / 1e6:.0f} MB, above limits.max_file_bytes ({max_bytes / 1e6:.0f} MB)")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise Vanished("the file disappeared before it could be read") from exc
    except OSError as exc:
        raise from_os_error(exc, doing=f"reading {path}") from exc
    if not data:
        raise Undecodable("file is empty (0 bytes)")
    if (why := truncation(data)) is not None:
        raise Truncated(why)
    return data


def load_source(path: Path, *, options: ImageOptions | None = None) -> SourceImage:
    """Stage 1: the file at `path`, upright, with its profile, depth, alpha and metadata."""
    options = options or ImageOptions()
    return read_source(read_file(path, max_bytes=options.max_file_bytes), name=path.name, options=options)


def load_image(path: Path) -> RGBImage:
    """Stage 1 as the seed has it: (H, W, 3) uint8 RGB."""
    return load_source(path).rgb


def pad_meta(orig_h: int, orig_w: int, *, target: int) -> PadMeta:
    """Longest side to `target`, aspect kept, centred in the square."""
    scale = target / max(orig_h, orig_w)
    new_h = min(target, max(1, round(orig_h * scale)))
    new_w = min(target, max(1, round(orig_w * scale)))
    return PadMeta(
        orig_h=orig_h,
        orig_w=orig_w,
        new_h=new_h,
        new_w=new_w,
        x_offset=(target - new_w) // 2,
        y_offset=(target - new_h) // 2,
        scale=scale,
    )


def resize_and_pad(rgb: RGBImage, *, params: PipelineParams) -> tuple[RGBImage, PadMeta]:
    """Stage 2: INTER_AREA down / INTER_CUBIC up, padded with PAD_COLOR."""
    meta = pad_meta(rgb.shape[0], rgb.shape[1], target=params.target_size)
    resized = rgb
    if (meta.new_h, meta.new_w) != rgb.shape[:2]:
        interpolation = cv2.INTER_AREA if meta.scale < 1 else cv2.INTER_CUBIC
        resized = np.asarray(cv2.resize(rgb, (meta.new_w, meta.new_h), interpolation=interpolation), np.uint8)
    size = params.target_size
    canvas = np.full((size, size, 3), params.pad_color, dtype=np.uint8)
    canvas[meta.y_offset : meta.y_offset + meta.new_h, meta.x_offset : meta.x_offset + meta.new_w] = resized
    return canvas, meta


def normalize(padded: RGBImage, *, params: PipelineParams) -> FloatArray:
    """Stage 3: (x/255 - mean)/std, float32, shaped (1, 3, S, S)."""
    mean = np.asarray(params.imagenet_mean, dtype=np.float32)
    std = np.asarray(params.imagenet_std, dtype=np.float32)
    scaled = padded.astype(np.float32) / np.float32(255.0)
    chw = ((scaled - mean) / std).transpose(2, 0, 1)
    return np.ascontiguousarray(chw[np.newaxis], dtype=np.float32)
