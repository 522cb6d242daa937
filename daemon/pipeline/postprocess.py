"""Stage 5: map the square matte back to the image and clean it up.

All steps work on float32 (H, W) mattes in [0, 1] at the original resolution.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from daemon.pipeline.constants import PipelineParams
from daemon.pipeline.preprocess import FloatArray, PadMeta


def matte_to_uint8(matte: FloatArray) -> npt.NDArray[np.uint8]:
    """[0, 1] -> 0..255, rounded to nearest (the 8-bit alpha, and Canny's input)."""
    scaled: npt.NDArray[np.uint8] = np.clip(matte * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
    return scaled


def restore_matte(matte: FloatArray, *, meta: PadMeta) -> FloatArray:
    """Remove the padding and resize (bilinear) to the original height and width."""
    inner = matte[meta.y_offset : meta.y_offset + meta.new_h, meta.x_offset : meta.x_offset + meta.new_w]
    if inner.shape == (meta.orig_h, meta.orig_w):
        return np.ascontiguousarray(inner, dtype=np.float32)
    restored = cv2.resize(inner, (meta.orig_w, meta.orig_h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(restored, dtype=np.float32)


def keep_largest_component(matte: FloatArray, *, threshold: float) -> FloatArray:
    """Zero everything but the largest 8-connected region of matte > threshold."""
    binary = (matte > threshold).view(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return np.zeros_like(matte)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return np.where(labels == largest, matte, np.float32(0)).astype(np.float32, copy=False)


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


def postprocess(matte: FloatArray, *, meta: PadMeta, params: PipelineParams) -> FloatArray:
    """Restore, keep the largest component, erode, smooth the edges (the seed's order)."""
    full = restore_matte(matte, meta=meta)
    full = keep_largest_component(full, threshold=params.alpha_threshold)
    full = erode(full, kernel_size=params.erode_kernel_size)
    return smooth_edges(full, params=params)
