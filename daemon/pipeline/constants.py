"""Every number of the pipeline, in one place.

The module-level constants are the reference pipeline's values (its configuration
reference: the seed the project was specified from) plus the details it leaves open,
each named and explained. `PipelineParams` bundles them; the config file's `pipeline:` section
overrides any field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

PngFilter = Literal["adaptive", "none", "sub", "up", "average", "paeth"]
BitDepth = Literal[8, "source"]

# --- The seed's values -------------------------------------------------------
TARGET_SIZE = 1088
"""Model input square size; the model's matte is forced to this size too."""
PAD_COLOR = 127
"""RGB value of the padding around the resized image."""
ALPHA_THRESHOLD = 0.05
"""Foreground threshold: largest component, crop box and foreground check."""
CROP_PADDING = 50
"""Pixels added on each side of the foreground box (clamped to the image)."""
EDGE_BLUR_RADIUS = 1
"""Edge-only smoothing radius (0 disables edge smoothing)."""
ERODE_KERNEL_SIZE = 3
"""Square erosion kernel of the matte (0 disables erosion)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_FOREGROUND_FRACTION = 0.001
"""Below this fraction of pixels with matte > ALPHA_THRESHOLD there is no foreground."""

# --- Details the seed leaves open: our choices --------------------------------
CANNY_LOW = 50
CANNY_HIGH = 150
"""Canny hysteresis thresholds on the 8-bit matte (OpenCV's customary 1:3 pair).
The binary matte's edges do not depend on them (0/255 steps always pass)."""
EDGE_BAND_RADIUS = 1
"""The edge band is the Canny edges dilated by a (2r+1)-square kernel: r = 1 gives
a 3-pixel band, the same reach as the 3x3 blur it confines."""
# The Gaussian kernel is (2 * EDGE_BLUR_RADIUS + 1) square, sigma chosen by OpenCV
# from the size (0.8 for 3x3); inside the band the blurred matte replaces the matte.
PNG_COMPRESSION = 1
"""zlib level of the output PNG (lossless at any level). Measured at 24 MP (BENCHMARKS.md):
level 1 with the UP row filter encodes in 0.6 s to 18.1 MB, where libpng's default
(level 3, every filter tried on every row) takes 1.5 s for 18.9 MB and level 9 15 s for 17.0 MB."""
PNG_FILTER: PngFilter = "up"
"""PNG row filter: `up` (see above), or `adaptive` for libpng's try-them-all default."""


DOUBTFUL = 0.5
"""A cut-out whose doubt score (doubt.py) is over this deserves a look: the threshold where
`python -m benchmarks.doubt` flags 4-5 % of the good cut-outs, at 512 and at 1088 (BENCHMARKS.md)."""


def doubt_reasons(parts: Mapping[str, float]) -> str:
    """The parts of a doubt score that count, the largest first: `fog 0.90, pieces 0.40`.
    (Here, not in doubt.py: `cutout status` says it without loading numpy or OpenCV.)"""
    counted = sorted(((value, name) for name, value in parts.items() if value > 0), reverse=True)
    return ", ".join(f"{name} {value:.2f}" for value, name in counted) or "no single part"


@dataclass(frozen=True)
class Bounds:
    """The range a number of the settings may take, beside its type: `Annotated[int, AT_LEAST_0]`.
    The settings check it where they read the config, naming the key; the field states it once."""

    low: float
    high: float | None = None
    above: bool = False
    """`low` itself is out of range (a size, a count: greater than 0)."""

    def problem(self, value: float) -> str | None:
        if self.high is not None:
            return None if self.low <= value <= self.high else f"must be between {self.low} and {self.high}"
        if self.above:
            return None if value > self.low else f"must be greater than {self.low}"
        return None if value >= self.low else f"must be {self.low} or more"


ABOVE_0 = Bounds(0, above=True)
AT_LEAST_0 = Bounds(0)
BYTE = Bounds(0, 255)
FRACTION = Bounds(0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class PipelineParams:
    """The tunable numbers of one pipeline run; defaults are the constants above."""

    target_size: Annotated[int, AT_LEAST_0] = TARGET_SIZE  # 0 in a config: the model's own size
    pad_color: Annotated[int, BYTE] = PAD_COLOR
    alpha_threshold: Annotated[float, FRACTION] = ALPHA_THRESHOLD
    crop_padding: Annotated[int, AT_LEAST_0] = CROP_PADDING
    edge_blur_radius: Annotated[int, AT_LEAST_0] = EDGE_BLUR_RADIUS
    erode_kernel_size: Annotated[int, AT_LEAST_0] = ERODE_KERNEL_SIZE
    imagenet_mean: tuple[float, float, float] = IMAGENET_MEAN
    imagenet_std: tuple[float, float, float] = IMAGENET_STD
    min_foreground_fraction: Annotated[float, FRACTION] = MIN_FOREGROUND_FRACTION
    fail_fast: bool = True
    canny_low: Annotated[int, BYTE] = CANNY_LOW
    canny_high: Annotated[int, BYTE] = CANNY_HIGH
    edge_band_radius: Annotated[int, AT_LEAST_0] = EDGE_BAND_RADIUS
    png_compression: Annotated[int, Bounds(0, 9)] = PNG_COMPRESSION
    png_filter: PngFilter = PNG_FILTER


@dataclass(frozen=True, kw_only=True)
class ImageOptions:
    """How to read inputs and what to keep in the output (config: color, output, limits)."""

    convert_to_srgb: bool = False
    bit_depth: BitDepth = 8
    keep_metadata: bool = False
    max_pixels: int = 120_000_000
    max_file_bytes: int = 1_000_000_000
