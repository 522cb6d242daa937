"""Photo-like test images, generated from a fixed seed, cached in the work folder.

Real photos compress the way they do because of smooth light (gradients), fine
texture and sensor noise; a flat synthetic image would make JPEG decode and PNG
encode look far cheaper than they are. Each image therefore has: a smooth
background gradient, mid-frequency texture, per-pixel noise, a large bright
subject with an irregular soft edge (what the stand-in model finds), and a few
small bright specks in the background (so "keep the largest component" has
something to remove).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

SIZES_MP: dict[int, tuple[int, int]] = {
    2: (1728, 1152),
    12: (4240, 2832),
    24: (6000, 4000),
    50: (8688, 5792),
}
"""Megapixels -> (width, height), 3:2 like most camera sensors."""

JPEG_QUALITY = 95
"""A camera's "fine" JPEG; with the texture below a 24 MP file is ~8 MB, like a real one."""
INPUT_PNG_LEVEL = 6
"""zlib's default level, what most tools use when they write a PNG."""
NOISE_SIGMA = 4.0
"""Sensor noise in 8-bit levels: ISO 400-ish; sets how well PNG compresses."""
NOISE_ROWS = 257
"""Rows of the precomputed noise tile; a repeat is ~257 rows apart, far outside
deflate's 32 KB window, so the repetition never helps PNG compression."""

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class GeneratedImage:
    """One generated input file on disk."""

    path: Path
    megapixels: int
    fmt: str
    width: int
    height: int

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size


def _smooth_field(rng: np.random.Generator, *, shape: tuple[int, int], cells: int, channels: int) -> npt.NDArray[np.float32]:
    """A random field with about `cells` features across the long side, upscaled smoothly."""
    h, w = shape
    small_w = max(2, cells)
    small_h = max(2, round(cells * h / w))
    small = rng.random((small_h, small_w, channels), dtype=np.float32)
    field = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.asarray(field, np.float32).reshape(h, w, channels)


def _subject_mask(rng: np.random.Generator, *, shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    """An irregular blob (a wobbly ellipse) covering ~30 % of the frame, soft 2-px edge."""
    h, w = shape
    sh, sw = max(64, h // 4), max(64, w // 4)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    cx, cy = sw * rng.uniform(0.45, 0.55), sh * rng.uniform(0.5, 0.6)
    angle = np.arctan2(yy - cy, xx - cx)
    radius = np.hypot((xx - cx) / (0.3 * sw), (yy - cy) / (0.38 * sh))
    wobble = np.ones_like(angle)
    for k in (2, 3, 5, 9):
        wobble += rng.uniform(0.02, 0.08) * np.cos(k * angle + rng.uniform(0, 2 * math.pi))
    inside = (radius < wobble).astype(np.float32)
    full = cv2.resize(inside, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(cv2.GaussianBlur(full, (5, 5), 0), np.float32)


def _specks(image: npt.NDArray[np.float32], rng: np.random.Generator, *, mask: npt.NDArray[np.float32]) -> None:
    """A few small bright spots in the background, away from the subject."""
    h, w = mask.shape
    for _ in range(6):
        x, y = int(rng.uniform(0.03, 0.97) * w), int(rng.uniform(0.03, 0.97) * h)
        if mask[y, x] > 0:
            continue
        cv2.circle(image, (x, y), max(3, w // 400), (0.92, 0.9, 0.88), -1, lineType=cv2.LINE_AA)


def _noise_tile(rng: np.random.Generator, *, width: int) -> npt.NDArray[np.float32]:
    return rng.normal(0.0, NOISE_SIGMA / 255.0, size=(NOISE_ROWS, width, 3)).astype(np.float32)


def photo_like(megapixels: int, *, seed: int) -> Image:
    """An RGB uint8 image: dark textured background, bright textured subject, fine detail, noise."""
    width, height = SIZES_MP[megapixels]
    rng = np.random.default_rng(seed)
    shape = (height, width)
    background = 0.15 + 0.3 * _smooth_field(rng, shape=shape, cells=4, channels=3)
    background += 0.12 * (_smooth_field(rng, shape=shape, cells=width // 48, channels=1) - 0.5)
    subject = 0.76 + 0.14 * _smooth_field(rng, shape=shape, cells=3, channels=3)
    subject += 0.1 * (_smooth_field(rng, shape=shape, cells=width // 24, channels=1) - 0.5)
    mask = _subject_mask(rng, shape=shape)
    _specks(background, rng, mask=mask)
    image = background + (subject - background) * mask[..., None]
    del background, subject
    image += 0.1 * (_smooth_field(rng, shape=shape, cells=width // 3, channels=1) - 0.5)
    tile = _noise_tile(rng, width=width)
    for top in range(0, height, NOISE_ROWS):
        rows = image[top : top + NOISE_ROWS]
        rows += tile[: rows.shape[0]]
    np.clip(image * 255.0 + 0.5, 0, 255, out=image)
    return image.astype(np.uint8)


def encode(rgb: Image, fmt: str) -> bytes:
    """JPEG (camera-like quality) or PNG (zlib default level) bytes of an RGB image."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if fmt == "jpg":
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    elif fmt == "png":
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, INPUT_PNG_LEVEL])
    else:
        raise ValueError(f"unknown format {fmt!r}")
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {fmt}")
    return bytes(data.tobytes())


def ensure_image(folder: Path, megapixels: int, fmt: str, *, seed: int) -> GeneratedImage:
    """The cached file for (size, format, seed), generated on first use."""
    width, height = SIZES_MP[megapixels]
    path = folder / f"photo-{megapixels:02d}mp-s{seed}.{fmt}"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.part")
        temp.write_bytes(encode(photo_like(megapixels, seed=seed), fmt))
        temp.replace(path)
    return GeneratedImage(path, megapixels, fmt, width, height)
