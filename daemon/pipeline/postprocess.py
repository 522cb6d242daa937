"""Stage 5: map the square matte back to the image and clean it up.

All steps work on float32 (H, W) mattes in [0, 1] at the original resolution.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from daemon.pipeline.constants import PipelineParams
from daemon.pipeline.matte import FloatArray
from daemon.pipeline.preprocess import PadMeta


Region = tuple[slice, slice]
"""Rows and columns outside which the matte is exactly zero (the subject plus a margin)."""


def matte_to_uint8(matte: FloatArray) -> npt.NDArray[np.uint8]:
    """[0, 1] -> 0..255, rounded to nearest (the 8-bit alpha, and Canny's input)."""
    scaled = matte * np.float32(255.0)  # one float32 temporary, then in place
    scaled += np.float32(0.5)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def restore_matte(matte: FloatArray, *, meta: PadMeta) -> FloatArray:
    """Remove the padding and resize (bilinear) to the original height and width."""
    inner = matte[meta.y_offset : meta.y_offset + meta.new_h, meta.x_offset : meta.x_offset + meta.new_w]
    if inner.shape == (meta.orig_h, meta.orig_w):
        return np.ascontiguousarray(inner, dtype=np.float32)
    restored = cv2.resize(inner, (meta.orig_w, meta.orig_h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(restored, dtype=np.float32)


def keep_largest_component(matte: FloatArray, *, threshold: float) -> FloatArray:
    """Zero everything but the largest 8-connected region of matte > threshold."""
    return largest_component(matte, threshold=threshold)[0]


def largest_component(matte: FloatArray, *, threshold: float) -> tuple[FloatArray, Region | None]:
    """The matte with only its largest component, and that component's bounding box."""
    binary = (matte > threshold).view(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    kept = np.zeros_like(matte)
    if count <= 1:
        return kept, None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(value) for value in stats[largest, :4])
    box = (slice(y, y + h), slice(x, x + w))
    kept[box] = np.where(labels[box] == largest, matte[box], np.float32(0))
    return kept, box


def erode(matte: FloatArray, *, kernel_size: int) -> FloatArray:
    """Grey erosion with a square kernel, shrinking the halo; 0 disables it."""
    if kernel_size <= 0:
        return matte
    kernel = np.ones((kernel_size, kernel_size), np.uint8)
    return np.asarray(cv2.erode(matte, kernel), dtype=np.float32)


def edge_band(matte: FloatArray, *, params: PipelineParams) -> np.ndarray:
    """Canny edges of the matte and of its binary mask, dilated into a band (uint8 0/1)."""
    soft = matte_to_uint8(matte)
    hard = ((matte > params.alpha_threshold) * np.uint8(255)).astype(np.uint8)
    edges = np.bitwise_or(
        cv2.Canny(soft, params.canny_low, params.canny_high), cv2.Canny(hard, params.canny_low, params.canny_high)
    )
    width = 2 * params.edge_band_radius + 1
    return np.asarray(cv2.dilate(edges, np.ones((width, width), np.uint8)) > 0)


def smooth_edges(matte: FloatArray, *, params: PipelineParams) -> FloatArray:
    """Replace the matte by its Gaussian blur inside the edge band only."""
    radius = params.edge_blur_radius
    if radius <= 0:
        return matte
    size = 2 * radius + 1
    blurred = cv2.GaussianBlur(matte, (size, size), 0)
    band = edge_band(matte, params=params)
    return np.where(band, blurred, matte).astype(np.float32, copy=False)


def cleaning_reach(params: PipelineParams) -> int:
    """How far erosion and edge smoothing can reach beyond the component (Canny's 3x3 included)."""
    return 4 + params.erode_kernel_size + 2 * (params.edge_band_radius + params.edge_blur_radius)


def grow_region(box: Region, *, by: int, shape: tuple[int, ...]) -> Region:
    rows, cols = box
    return (
        slice(max(0, rows.start - by), min(shape[0], rows.stop + by)),
        slice(max(0, cols.start - by), min(shape[1], cols.stop + by)),
    )


def clean_matte(full: FloatArray, *, params: PipelineParams) -> tuple[FloatArray, Region | None]:
    """Largest component, erosion, edge smoothing; and the region where the matte is non-zero.

    Everything outside the component is zero, and erosion and a band-limited blur
    reach only a few pixels, so both run on the component's box plus that reach:
    the same values as on the whole image, for a fraction of the work.
    """
    kept, box = largest_component(full, threshold=params.alpha_threshold)
    if box is None:
        return kept, None
    region = grow_region(box, by=cleaning_reach(params), shape=kept.shape)
    inner = erode(np.ascontiguousarray(kept[region]), kernel_size=params.erode_kernel_size)
    kept[region] = smooth_edges(inner, params=params)
    return kept, region


def postprocess(matte: FloatArray, *, meta: PadMeta, params: PipelineParams) -> FloatArray:
    """Restore, keep the largest component, erode, smooth the edges (the seed's order)."""
    return clean_matte(restore_matte(matte, meta=meta), params=params)[0]
