"""What each recipe costs at 24 MP, against the decode + encode floor of its format.

    python -m benchmarks.recipes [--megapixels 24] [--repeat 3] [--webp-default-effort]

The source is the generated photo-like JPEG of `benchmarks.images` (seed 1); its matte and
subject box are made exactly as `finish()` makes them, with the numpy stand-in model
(`daemon.testing.BrightModel`), so the crop is a real subject's. For each recipe this times
`render_recipe()` (geometry, depth, background, encode: what a recipe adds to the seed's
pipeline) and, as its floor, the same format's encoder alone on the very pixels the recipe
wrote (its output decoded back), with the same settings. The decode floor is `read_source()`
of the JPEG, which every recipe pays once. Times are CPU seconds of the whole process (every
thread: tifffile compresses strips on up to half the cores), median of `--repeat` runs.

The 16-bit TIFF row uses a 16-bit source: the JPEG's 8 bits in the high byte and seeded noise
in the low byte, as a RAW converter's 16-bit export has (the low byte is what makes 16-bit
files big and slow to compress; 8-bit values times 257 would flatter the numbers).

Results are printed as a table and written to benchmarks/results/recipes.json.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import tifffile
import torch
from PIL import Image

from benchmarks.images import SIZES_MP, ensure_image
from benchmarks.machine import REPO, load_average, machine_info
from daemon.pipeline import PipelineParams, StageTimer, prepare
from daemon.pipeline.composite import CropBox, combine_alpha, crop_box, encode_bgra
from daemon.pipeline.constants import ImageOptions
from daemon.pipeline.matte import FloatArray
from daemon.pipeline.postprocess import clean_matte, restore_matte
from daemon.pipeline.recipe import Recipe
from daemon.pipeline.render import WEBP_METHOD, WEBP_QUALITY, render_recipe
from daemon.pipeline.source import SourceImage, read_source
from daemon.testing import BrightModel

WORK = REPO / "benchmarks" / "work" / "inputs"
RESULT = REPO / "benchmarks" / "results" / "recipes.json"
SEED = 1

RECIPES: dict[str, Recipe] = {
    "PNG default": Recipe(),
    "WebP lossless": Recipe(format="webp"),
    "JPEG on white": Recipe(format="jpeg", background="#ffffff"),
    "2000x2000 canvas, JPEG on white": Recipe(
        format="jpeg", background="#ffffff", crop="canvas", canvas=(2000, 2000), margin="7.5%"
    ),
    "TIFF 16-bit": Recipe(format="tiff", bit_depth=16),
}


@dataclass(frozen=True)
class Timing:
    cpu: float
    wall: float


def timed(fn: Callable[[], Any], *, repeat: int) -> tuple[Any, Timing]:
    """The last result and the median CPU and wall seconds of `repeat` calls."""
    cpus, walls, result = [], [], None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return result, Timing(statistics.median(cpus), statistics.median(walls))


def subject(path: Path, *, params: PipelineParams) -> tuple[SourceImage, FloatArray, CropBox]:
    """The source, its full cleaned matte and the seed's box, as `finish()` computes them."""
    prepared = prepare(path, params=params, timer=StageTimer())
    cleaned, region = clean_matte(restore_matte(BrightModel().predict(prepared.batch), meta=prepared.meta), params=params)
    full = combine_alpha(cleaned, prepared.source.alpha)
    return prepared.source, full, crop_box(full, threshold=params.alpha_threshold, padding=params.crop_padding, region=region)


def deep_source(source: SourceImage, *, seed: int) -> SourceImage:
    """16 bits: the 8-bit values in the high byte, noise in the low byte."""
    noise = np.random.default_rng(seed).integers(0, 256, size=source.rgb.shape, dtype=np.uint16)
    deep = (source.rgb.astype(np.uint16) << 8) | noise
    return replace(source, deep=deep.astype(np.uint16))


# --- Floors: the format's encoder alone, on the same pixels -------------------------------
def _save(pixels: npt.NDArray[Any], **options: Any) -> int:
    """Pillow's encoder into memory; the encoded size."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, **options)
    return buffer.tell()


def decoded(data: bytes, fmt: str) -> npt.NDArray[Any]:
    """A recipe's output as an array in RGB(A) order."""
    if fmt == "tiff":
        return np.asarray(tifffile.imread(io.BytesIO(data)))
    if fmt == "png":
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert array is not None
        return np.asarray(cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB))
    return np.asarray(Image.open(io.BytesIO(data)))


def encoder(fmt: str, pixels: npt.NDArray[Any], *, recipe: Recipe, params: PipelineParams) -> Callable[[], int]:
    """The plain encode of `pixels` in `fmt`, with the recipe's settings and no metadata."""
    def png() -> int:
        code = cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR
        bgra = np.asarray(cv2.cvtColor(pixels, code), dtype=pixels.dtype)
        return len(encode_bgra(bgra, compression=params.png_compression, png_filter=params.png_filter))

    def tiff() -> int:
        buffer = io.BytesIO()
        extra = ("unassalpha",) if pixels.shape[2] == 4 else None
        tifffile.imwrite(buffer, pixels, photometric="rgb", extrasamples=extra, compression="zlib",
                         compressionargs={"level": params.png_compression}, predictor=True, metadata=None)
        return buffer.tell()

    encoders: dict[str, Callable[[], int]] = {
        "png": png,
        "webp": partial(_save, pixels, format="WEBP", lossless=True, exact=True, method=WEBP_METHOD, quality=WEBP_QUALITY),
        "jpeg": partial(_save, pixels, format="JPEG", quality=recipe.quality, subsampling=0),
        "tiff": tiff,
    }
    return encoders[fmt]


def measure(name: str, recipe: Recipe, *, source: SourceImage, matte: FloatArray, box: CropBox,
            params: PipelineParams, repeat: int) -> dict[str, Any]:
    files, render = timed(lambda: render_recipe(source, matte, box=box, recipe=recipe, params=params), repeat=repeat)
    output = files.output
    assert output is not None
    pixels = decoded(output.data, recipe.format)
    _, floor = timed(encoder(recipe.format, pixels, recipe=recipe, params=params), repeat=repeat)
    return {
        "recipe": name, "format": recipe.format, "size": [output.width, output.height],
        "channels": int(pixels.shape[2]), "bits": int(pixels.dtype.itemsize * 8),
        "output_mb": round(len(output.data) / 1e6, 2),
        "render_cpu_ms": round(render.cpu * 1000), "render_wall_ms": round(render.wall * 1000),
        "encode_floor_cpu_ms": round(floor.cpu * 1000), "encode_floor_wall_ms": round(floor.wall * 1000),
    }


def webp_default_effort(source: SourceImage, matte: FloatArray, box: CropBox, *, params: PipelineParams) -> dict[str, Any]:
    """libwebp's default lossless effort (method 4, quality 80) on the WebP row's pixels, once."""
    data = render_recipe(source, matte, box=box, recipe=Recipe(format="webp"), params=params).output
    assert data is not None
    pixels = decoded(data.data, "webp")
    size, timing = timed(partial(_save, pixels, format="WEBP", lossless=True, exact=True, method=4, quality=80), repeat=1)
    return {"encode_cpu_ms": round(timing.cpu * 1000), "output_mb": round(size / 1e6, 2)}


def print_table(result: dict[str, Any]) -> None:
    decode = result["decode_cpu_ms"]
    print(f"source: {result['source']}  decode (read_source) {decode} ms CPU")
    print(f"{'recipe':<34} {'output':>20} {'MB':>6} {'render':>8} {'floor':>8} {'+':>7} {'in total':>9}")
    for row in result["recipes"]:
        shape = f"{row['size'][0]}x{row['size'][1]}x{row['channels']}@{row['bits']}"
        extra = row["render_cpu_ms"] - row["encode_floor_cpu_ms"]
        total = (decode + row["render_cpu_ms"]) / (decode + row["encode_floor_cpu_ms"])
        print(f"{row['recipe']:<34} {shape:>20} {row['output_mb']:>6.1f} {row['render_cpu_ms']:>6} ms "
              f"{row['encode_floor_cpu_ms']:>5} ms {extra:>+5} ms {total:>8.2f}x")
    if "webp_default_effort" in result:
        default = result["webp_default_effort"]
        print(f"WebP at libwebp's default effort (method 4, quality 80): {default['encode_cpu_ms']} ms, "
              f"{default['output_mb']} MB")


def run(*, megapixels: int, repeat: int, webp_default: bool) -> dict[str, Any]:
    """Every measurement, as the JSON written to benchmarks/results/recipes.json."""
    params = PipelineParams()
    image = ensure_image(WORK, megapixels, "jpg", seed=SEED)
    data = image.path.read_bytes()
    _, decode = timed(partial(read_source, data, name=image.path.name, options=ImageOptions()), repeat=repeat)
    source, matte, box = subject(image.path, params=params)
    result: dict[str, Any] = {
        "schema": 1, "timestamp": datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "machine": machine_info(torch.device("cpu")), "load_at_start": load_average(),
        "source": f"{image.width}x{image.height} JPEG, {image.bytes / 1e6:.1f} MB; subject box {box.width}x{box.height}",
        "repeat": repeat, "decode_cpu_ms": round(decode.cpu * 1000), "decode_wall_ms": round(decode.wall * 1000),
        "recipes": [],
    }
    for name, recipe in RECIPES.items():
        used = deep_source(source, seed=SEED) if recipe.bit_depth == 16 else source
        result["recipes"].append(measure(name, recipe, source=used, matte=matte, box=box, params=params, repeat=repeat))
    if webp_default:
        result["webp_default_effort"] = webp_default_effort(source, matte, box, params=params)
    result["load_at_end"] = load_average()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=int, default=24, choices=sorted(SIZES_MP))
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--webp-default-effort", action="store_true",
                        help="also time libwebp's default lossless effort once (slow: ~30 s at 24 MP on 2 cores)")
    parser.add_argument("--json", type=Path, default=RESULT, help="where the results go")
    args = parser.parse_args(argv)
    result = run(megapixels=args.megapixels, repeat=args.repeat, webp_default=args.webp_default_effort)
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
