"""In-process measurements: every stage at every size, the floor, PNG levels, and the two rates.

Stage totals come from the daemon's own `prepare()` / `finish()` (so they are
what the daemon pays), timed with a `StageTimer` that also records CPU time;
the sub-steps of post-processing and compositing are then timed one by one on
the same matte, and checked to give the same matte as `postprocess()`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from benchmarks.images import GeneratedImage
from daemon.atomic import write_atomic
from daemon.pipeline import MatteModel, PipelineParams, Prepared, StageTimer, finish, prepare
from daemon.pipeline.composite import compose_rgba, crop_box, encode_bgra, encode_png
from daemon.pipeline.constants import PNG_FILTER, PngFilter
from daemon.pipeline.pipeline import check_foreground
from daemon.pipeline.postprocess import (
    cleaning_reach,
    erode,
    grow_region,
    largest_component,
    postprocess,
    restore_matte,
    smooth_edges,
)
from daemon.pipeline.preprocess import FloatArray

T = TypeVar("T")
PIPELINE_STAGES = ("load", "preprocess", "inference", "postprocess", "composite", "save")
SUBSTEPS = (
    "restore",
    "largest component",
    "erode",
    "edge smoothing",
    "foreground check",
    "crop box",
    "compose RGBA",
    "PNG encode",
)
"""Post-processing (first five) and composite (last three) sub-steps, in pipeline order."""


@dataclass(frozen=True)
class Timing:
    """Wall and CPU seconds of one call. CPU counts every thread of this process
    (OpenCV parallelises some steps), which is what "CPU time per image" means."""

    wall: float
    cpu: float

    def as_ms(self) -> dict[str, float]:
        return {"wall_ms": round(self.wall * 1000, 1), "cpu_ms": round(self.cpu * 1000, 1)}


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, Timing]:
    """Run `fn` once; its result and how long it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def median(timings: Sequence[Timing]) -> Timing:
    return Timing(statistics.median(t.wall for t in timings), statistics.median(t.cpu for t in timings))


@dataclass
class CpuStageTimer(StageTimer):
    """The daemon's StageTimer, also recording CPU seconds per stage."""

    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cpu = time.process_time()
        try:
            with super().stage(name):
                yield
        finally:
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - cpu

    def timings(self) -> dict[str, Timing]:
        return {name: Timing(self.seconds[name], self.cpu_seconds[name]) for name in self.seconds}


# --- One image through the daemon's own stages -------------------------------------------
@dataclass(frozen=True)
class PipelineRun:
    timings: dict[str, Timing]
    output_bytes: int
    crop: tuple[int, int]


def run_pipeline(path: Path, *, model: MatteModel, params: PipelineParams, out: Path) -> PipelineRun:
    """prepare -> predict -> finish -> atomic write, exactly as `process_image()` does."""
    timer = CpuStageTimer()
    prepared = prepare(path, params=params, timer=timer)
    with timer.stage("inference"):
        matte = model.predict(prepared.batch)
    cutout = finish(prepared, matte, params=params, timer=timer)
    with timer.stage("save"):
        write_atomic(out, cutout.png)
    return PipelineRun(timer.timings(), len(cutout.png), (cutout.width, cutout.height))


def floor(path: Path, *, compression: int, png_filter: PngFilter = PNG_FILTER) -> dict[str, Timing]:
    """The least any cutout tool must do: read + decode the file, PNG-encode the full image."""
    bgr, decode = timed(lambda: cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR))
    # The floor uses the same encoder settings as the daemon's output.
    _, encode = timed(lambda: encode_bgra(bgr, compression=compression, png_filter=png_filter))
    return {"decode": decode, "encode": encode, "total": Timing(decode.wall + encode.wall, decode.cpu + encode.cpu)}


# --- Sub-steps ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SubstepRun:
    timings: dict[str, Timing]
    rgba: np.ndarray
    same_as_postprocess: bool


def run_substeps(prepared: Prepared, matte: FloatArray, *, params: PipelineParams) -> SubstepRun:
    """The steps inside `finish()`, one at a time, on the same matte, as the daemon runs
    them: erosion and edge smoothing on the subject's region only (postprocess.clean_matte)."""
    t: dict[str, Timing] = {}
    full, t["restore"] = timed(restore_matte, matte, meta=prepared.meta)
    (full, box), t["largest component"] = timed(largest_component, full, threshold=params.alpha_threshold)
    assert box is not None, "the benchmark photo has a subject"
    region = grow_region(box, by=cleaning_reach(params), shape=full.shape)
    inner, t["erode"] = timed(erode, np.ascontiguousarray(full[region]), kernel_size=params.erode_kernel_size)
    full[region], t["edge smoothing"] = timed(smooth_edges, inner, params=params)
    _, t["foreground check"] = timed(check_foreground, full, params=params, region=region)
    crop, t["crop box"] = timed(
        crop_box, full, threshold=params.alpha_threshold, padding=params.crop_padding, region=region
    )
    rgba, t["compose RGBA"] = timed(compose_rgba, prepared.source.rgb, full, box=crop)
    _, t["PNG encode"] = timed(
        encode_png, rgba, compression=params.png_compression, png_filter=params.png_filter
    )
    same = bool(np.array_equal(full, postprocess(matte, meta=prepared.meta, params=params)))
    return SubstepRun(t, rgba, same)


# --- One size ------------------------------------------------------------------------------------
def measure_size(
    images: Sequence[GeneratedImage], *, model: MatteModel, params: PipelineParams, repeats: int, scratch: Path
) -> dict[str, Any]:
    """Stages per format, floor per format, sub-steps once per size (they do not depend on
    the file format); medians over `repeats`."""
    result: dict[str, Any] = {"megapixels": images[0].megapixels, "width": images[0].width,
                              "height": images[0].height, "formats": {}}
    for image in images:
        result["formats"][image.fmt] = _measure_format(image, model=model, params=params, repeats=repeats, scratch=scratch)
    substeps, rgba, same = _measure_substeps(images[0].path, model=model, params=params, repeats=repeats)
    result["substeps"] = substeps
    result["substeps_match_postprocess"] = same
    result["_rgba"] = rgba  # for the PNG sweep; dropped before writing JSON
    return result


def _measure_format(
    image: GeneratedImage, *, model: MatteModel, params: PipelineParams, repeats: int, scratch: Path
) -> dict[str, Any]:
    scratch.mkdir(parents=True, exist_ok=True)
    runs = [run_pipeline(image.path, model=model, params=params, out=scratch / f"stage-{image.path.stem}.png")
            for _ in range(repeats)]
    floors = [floor(image.path, compression=params.png_compression, png_filter=params.png_filter) for _ in range(repeats)]
    stages = {name: median([r.timings[name] for r in runs]).as_ms() for name in PIPELINE_STAGES}
    outside = median([_sum(r.timings, exclude="inference") for r in runs])
    return {
        "file_bytes": image.bytes,
        "stages": stages,
        "outside_model": outside.as_ms(),
        "floor": {part: median([f[part] for f in floors]).as_ms() for part in ("decode", "encode", "total")},
        "output_bytes": runs[0].output_bytes,
        "crop": list(runs[0].crop),
    }


def _sum(timings: dict[str, Timing], *, exclude: str) -> Timing:
    kept = [t for name, t in timings.items() if name != exclude]
    return Timing(sum(t.wall for t in kept), sum(t.cpu for t in kept))


def _measure_substeps(
    path: Path, *, model: MatteModel, params: PipelineParams, repeats: int
) -> tuple[dict[str, dict[str, float]], np.ndarray, bool]:
    prepared = prepare(path, params=params, timer=StageTimer())
    matte = model.predict(prepared.batch)
    runs = [run_substeps(prepared, matte, params=params) for _ in range(repeats)]
    timings = {name: median([r.timings[name] for r in runs]).as_ms() for name in SUBSTEPS}
    return timings, runs[-1].rgba, all(r.same_as_postprocess for r in runs)


# --- PNG level sweep ------------------------------------------------------------------------------
FILTERS = {"SUB": cv2.IMWRITE_PNG_FILTER_SUB, "UP": cv2.IMWRITE_PNG_FILTER_UP, "PAETH": cv2.IMWRITE_PNG_FILTER_PAETH}
"""Fixed PNG row filters (OpenCV's IMWRITE_PNG_FILTER). Without one, libpng tries all five on
every row and keeps the best guess, which costs time at every level."""


def png_sweep(rgba: np.ndarray, *, levels: Sequence[int], filter_levels: Sequence[int]) -> list[dict[str, Any]]:
    """Size and time of the same cutout at each zlib level (the daemon's encode_png), then
    with a fixed row filter at the fast levels (OpenCV directly: the daemon sets none)."""
    rows = []
    raw = rgba.nbytes
    for level in levels:
        png, timing = timed(encode_png, rgba, compression=level)
        rows.append({"level": level, "filter": "adaptive", "bytes": len(png), "ratio": round(len(png) / raw, 3),
                     **timing.as_ms()})
    bgra = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
    for level in filter_levels:
        for name, flag in FILTERS.items():
            (_, encoded), timing = timed(cv2.imencode, ".png", bgra,
                                         [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_FILTER, flag])
            rows.append({"level": level, "filter": name, "bytes": len(encoded),
                         "ratio": round(len(encoded) / raw, 3), **timing.as_ms()})
    return rows


# --- Rates ----------------------------------------------------------------------------------------
def model_rate(model: MatteModel, batch: FloatArray, *, forwards: int) -> dict[str, float]:
    """Forwards per second of the model alone (predict() includes sigmoid and the copy back)."""
    for _ in range(2):
        model.predict(batch)
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(forwards):
        model.predict(batch)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    # The CPU a forward takes (all of it on a CPU model; on a GPU, the copies and the launches)
    # is taken from the cores the CPU stages share with it.
    return {"forwards": forwards, "seconds": round(seconds, 3), "rate": round(forwards / seconds, 3),
            "cpu_s_per_forward": round(cpu_seconds / forwards, 4)}


def cpu_stage_rate(
    paths: Sequence[Path], *, model: MatteModel, params: PipelineParams, threads: int, scratch: Path
) -> dict[str, float]:
    """Images per second of everything but the model (prepare, finish, atomic write) on a
    pool of `threads`, like the daemon's CPU pool; mattes are computed beforehand."""
    mattes = {path: model.predict(prepare(path, params=params, timer=StageTimer()).batch) for path in set(paths)}
    scratch.mkdir(parents=True, exist_ok=True)

    def one(item: tuple[int, Path]) -> None:
        index, path = item
        prepared = prepare(path, params=params, timer=StageTimer())
        cutout = finish(prepared, mattes[path], params=params, timer=StageTimer())
        write_atomic(scratch / f"cpu-{index:04d}.png", cutout.png)

    cpu, start = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bench-cpu") as pool:
        list(pool.map(one, enumerate(paths)))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return {
        "images": len(paths),
        "threads": threads,
        "seconds": round(seconds, 3),
        "rate": round(len(paths) / seconds, 3),
        "cpu_s_per_image": round(cpu_seconds / len(paths), 3),
    }
