"""`process_image()`: the seed's linear pipeline, with stage timings.

The work is split in three calls so the daemon can run them on different
threads (CPU before, model, CPU after) and still produce the same bytes:
`prepare()` -> `MatteModel.predict()` -> `finish()`. `process_image()` runs them
in a row.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from daemon.errors import NoForeground
from daemon.pipeline.composite import CropBox, combine_alpha, crop_box, foreground_fraction
from daemon.pipeline.constants import ImageOptions, PipelineParams
from daemon.pipeline.doubt import Doubt, doubt
from daemon.pipeline.matte import FloatArray, MatteModel
from daemon.pipeline.postprocess import Region, clean_matte, restore_matte
from daemon.pipeline.preprocess import PadMeta, normalize, read_file, resize_and_pad
from daemon.pipeline.recipe import DEFAULT, Recipe
from daemon.pipeline.render import RecipeFiles, render_recipe
from daemon.pipeline.source import SourceImage, read_source

DEFAULTS = ImageOptions()

STAGES = ("load", "preprocess", "inference", "postprocess", "composite", "save")


@dataclass
class StageTimer:
    """Seconds spent per stage, filled in as the stages run."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass(frozen=True)
class Prepared:
    """An image decoded and turned into the model's input."""

    source: SourceImage
    batch: FloatArray
    meta: PadMeta
    sha256: str
    """Of the bytes that were decoded: how the queue knows a re-drop is the same file."""


@dataclass(frozen=True)
class Cutout:
    """The finished cutout: each recipe's files, and what is worth reporting about it."""

    files: tuple[RecipeFiles, ...]
    """One entry per recipe asked for, in that order."""
    width: int
    height: int
    box: CropBox
    """The seed's crop box (subject plus padding) in the upright source."""
    foreground_fraction: float
    notes: tuple[str, ...] = ()
    """What was worth knowing about the input (animated, EXIF ignored, ...)."""
    doubt: Doubt | None = None
    """How likely the cut-out is wrong, from the model's matte (doubt.py)."""

    @property
    def png(self) -> bytes:
        """The first recipe's output: the seed's cropped RGBA PNG under the default recipe."""
        first = self.files[0].output
        if first is None:
            raise ValueError("the first recipe writes only a mask")
        return first.data


@dataclass(frozen=True)
class ProcessResult:
    cutout: Cutout
    timings: dict[str, float]


def prepare(path: Path, *, params: PipelineParams, timer: StageTimer, options: ImageOptions = DEFAULTS) -> Prepared:
    """Stages 1-3: load (upright, with profile and metadata), resize + pad, normalise."""
    with timer.stage("load"):
        data = read_file(path, max_bytes=options.max_file_bytes)
        source = read_source(data, name=path.name, options=options)
    with timer.stage("preprocess"):
        padded, meta = resize_and_pad(source.rgb, params=params)
        batch = normalize(padded, params=params)
    return Prepared(source, batch, meta, hashlib.sha256(data).hexdigest())


def check_foreground(matte: FloatArray, *, params: PipelineParams, region: Region | None = None) -> float:
    """The seed's sanity check: too little foreground is an error when fail_fast is on."""
    fraction = foreground_fraction(matte, threshold=params.alpha_threshold, region=region)
    if fraction < params.min_foreground_fraction and params.fail_fast:
        raise NoForeground(
            f"no foreground found: {fraction:.4%} of pixels above alpha {params.alpha_threshold} "
            f"(minimum {params.min_foreground_fraction:.2%})"
        )
    return fraction


def finish(
    prepared: Prepared, matte: FloatArray, *, params: PipelineParams, timer: StageTimer,
    recipes: Sequence[Recipe] = (DEFAULT,), mirrored: FloatArray | None = None,
) -> Cutout:
    """Stages 5-6: restore and clean the matte, check it, then each recipe's crop and encoding.
    `mirrored`: the matte of the flip pass, mirrored back, for the doubt score alone."""
    with timer.stage("postprocess"):
        meta = prepared.meta  # the score reads the model's own matte, at its size, over the image only
        inside = (slice(meta.y_offset, meta.y_offset + meta.new_h), slice(meta.x_offset, meta.x_offset + meta.new_w))
        seen = np.moveaxis(prepared.batch[0], 0, -1)[inside]  # the photo as the model saw it (normalised)
        found = doubt(matte[inside], image=seen, mirrored=None if mirrored is None else mirrored[inside])
        cleaned, region = clean_matte(restore_matte(matte, meta=prepared.meta), params=params)
        full = combine_alpha(cleaned, prepared.source.alpha)
        fraction = check_foreground(full, params=params, region=region)
    with timer.stage("composite"):
        # fail_fast off and nothing at all above the threshold: the whole frame, transparent.
        box = (
            crop_box(full, threshold=params.alpha_threshold, padding=params.crop_padding, region=region)
            if fraction > 0
            else CropBox(0, 0, full.shape[1], full.shape[0])
        )
        files = tuple(render_recipe(prepared.source, full, box=box, recipe=recipe, params=params) for recipe in recipes)
    return Cutout(files, box.width, box.height, box, fraction, prepared.source.notes, found)


def seed_recipes(options: ImageOptions) -> tuple[Recipe]:
    """The seed's one output, at the depth the options decode (`output.bit_depth`)."""
    return (Recipe(bit_depth=options.bit_depth),)


def process_image(
    path: Path,
    *,
    model: MatteModel,
    params: PipelineParams | None = None,
    options: ImageOptions = DEFAULTS,
    recipes: Sequence[Recipe] | None = None,
) -> ProcessResult:
    """The whole seed pipeline for one file: the cutout's PNG bytes, for the caller to write
    (the daemon and `cutout process` write them atomically, next to their bookkeeping)."""
    params = params or PipelineParams()
    timer = StageTimer()
    prepared = prepare(path, params=params, timer=timer, options=options)
    with timer.stage("inference"):
        matte = model.predict(prepared.batch)
    cutout = finish(prepared, matte, params=params, timer=timer, recipes=recipes or seed_recipes(options))
    return ProcessResult(cutout, timer.seconds)
