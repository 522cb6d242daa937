"""Edge colours without the old background: how far each estimate is from the subject's true colour.

    python -m benchmarks.decontaminate                 # the scenes, the 24 MP timing, the pictures
    python -m benchmarks.decontaminate --no-pictures   # numbers only

Synthetic soft-edged subjects (hair strands, fur, motion and defocus blur) over coloured
backdrops, composited as `I = a F + (1 - a) B` in sRGB-encoded 8-bit values from a known
subject colour `F` (textured) and a perfect matte `a`. For each estimate of `F` it reports,
over the soft band 0.05 < a < 0.95:

- **band**: the mean colour error |F_est - F| in levels (0..255, mean over channels);
- **on white**: the mean error of the cut-out placed on white, |a (F_est - F)|, what a
  shop's white page shows.

Estimates: the seed (`F_est = I`: the photo's pixels, today's cut-out), pymatting's
multi-level estimator (`estimate_foreground_ml`, a reference, used only here when installed),
and ours (`daemon.pipeline.decontaminate`, blur fusion). Targets (issue 21): at most 8 levels
in the band and 3 on white, at no more than 0.3 x the decode + PNG-encode floor of CPU time
at 24 MP. With pictures, it writes `docs/decontaminate.png`: one edge on white and on black,
as the seed leaves it and decontaminated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from daemon.pipeline.composite import encode_bgra
from daemon.pipeline.constants import PipelineParams
from daemon.pipeline.decontaminate import decontaminated
from daemon.work.stages import share_cores_with_opencv

Floats = npt.NDArray[np.float64]
Bytes = npt.NDArray[np.uint8]
BACKDROPS = {"green": (40, 180, 70), "blue": (30, 80, 200), "white": (245, 245, 245), "black": (15, 15, 15)}
SIZE = (900, 1200)  # height, width


@dataclass(frozen=True)
class Scene:
    name: str
    subject: Floats  # (H, W, 3) the true F, 0..255
    alpha: Floats  # (H, W) 0..1
    backdrop: Floats  # (H, W, 3)

    @property
    def photo(self) -> Bytes:
        a = self.alpha[..., None]
        return np.rint(a * self.subject + (1 - a) * self.backdrop).clip(0, 255).astype(np.uint8)

    @property
    def alpha8(self) -> Bytes:
        return np.rint(self.alpha * 255).astype(np.uint8)


def subject_colour(shape: tuple[int, int], rng: np.random.Generator) -> Floats:
    """Hair-like: a brown-to-blond gradient with fine streaks."""
    height, width = shape
    t = np.linspace(0, 1, width)[None, :, None]
    base = np.array([90, 55, 35]) * (1 - t) + np.array([210, 170, 110]) * t
    streaks = cv2.GaussianBlur(rng.normal(0, 18, (height, width)).astype(np.float32), (0, 0), 1.5)[..., None]
    return np.clip(base + streaks, 0, 255).astype(np.float64)


def _supersampled(draw: Callable[[ImageDraw.ImageDraw, int], None], shape: tuple[int, int], scale: int = 4) -> Floats:
    """A drawing at `scale` times the size, area-averaged down: partial coverage as alpha."""
    height, width = shape
    canvas = Image.new("L", (width * scale, height * scale), 0)
    draw(ImageDraw.Draw(canvas), scale)
    small = canvas.resize((width, height), Image.BOX)
    return np.asarray(small, np.float64) / 255


def strands(shape: tuple[int, int], rng: np.random.Generator) -> Floats:
    """A head of hair: a solid oval and a few hundred thin curved strands leaving it."""
    height, width = shape

    def draw(pen: ImageDraw.ImageDraw, s: int) -> None:
        cx, cy = width / 2, height * 0.55
        pen.ellipse(((cx - width * 0.22) * s, (cy - height * 0.3) * s, (cx + width * 0.22) * s, (cy + height * 0.35) * s),
                    fill=255)
        for _ in range(400):
            angle = rng.uniform(-np.pi, 0)
            x, y = cx + np.cos(angle) * width * 0.2, cy + np.sin(angle) * height * 0.28
            length, bend = rng.uniform(60, 220), rng.uniform(-0.6, 0.6)
            points = []
            for step in np.linspace(0, 1, 12):
                heading = angle + bend * step
                points.append(((x + np.cos(heading) * length * step) * s, (y + np.sin(heading) * length * step) * s))
            pen.line(points, fill=255, width=max(1, int(rng.uniform(0.6, 2.2) * s)))

    return _supersampled(draw, shape)


def fur(shape: tuple[int, int], rng: np.random.Generator, *, sharpness: float = 120) -> Floats:
    """A soft, ragged rim: a signed distance to an oval, perturbed by noise, through a soft step
    (the higher `sharpness`, the narrower the rim)."""
    height, width = shape
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    distance = 1 - np.hypot((xx - width / 2) / (width * 0.3), (yy - height / 2) / (height * 0.35))
    noise = cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 3)
    rim = (distance * sharpness + noise * 6.0)
    return 1 / (1 + np.exp(-rim / 3.0))


def blurred(shape: tuple[int, int], rng: np.random.Generator) -> Floats:
    """A product in motion and out of focus: a rounded box, motion-blurred 25 px, then defocused."""
    height, width = shape

    def draw(pen: ImageDraw.ImageDraw, s: int) -> None:
        pen.rounded_rectangle((width * 0.3 * s, height * 0.2 * s, width * 0.7 * s, height * 0.8 * s), radius=60 * s,
                              fill=255)

    sharp = _supersampled(draw, shape, scale=2).astype(np.float32)
    moved = cv2.blur(sharp, (25, 1))
    return np.asarray(cv2.GaussianBlur(moved, (0, 0), 4), np.float64)


SHAPES: dict[str, Callable[[tuple[int, int], np.random.Generator], Floats]] = {
    "strands": strands, "fur": fur, "blur": blurred,
}


def scenes(seed: int = 7) -> list[Scene]:
    rng = np.random.default_rng(seed)
    made = []
    for shape_name, shape in SHAPES.items():
        alpha = shape(SIZE, rng)
        subject = subject_colour(SIZE, rng)
        for backdrop_name, colour in BACKDROPS.items():
            backdrop = np.broadcast_to(np.array(colour, np.float64), (*SIZE, 3))
            made.append(Scene(f"{shape_name} / {backdrop_name}", subject, alpha, backdrop))
    return made


def errors(scene: Scene, estimate: Bytes | Floats) -> tuple[float, float]:
    """(band, on white) mean errors in levels."""
    band = (scene.alpha > 0.05) & (scene.alpha < 0.95)
    diff = np.asarray(estimate, np.float64)[band] - scene.subject[band]
    return float(np.abs(diff).mean()), float(np.abs(scene.alpha[band][:, None] * diff).mean())


def seed_estimate(scene: Scene) -> Bytes:
    return scene.photo


def ours(scene: Scene) -> Bytes:
    return np.asarray(decontaminated(scene.photo, scene.alpha8), np.uint8)


def pymatting_estimate() -> Callable[[Scene], Floats] | None:
    try:
        from pymatting import estimate_foreground_ml  # type: ignore[import-not-found]
    except ImportError:
        return None

    def estimate(scene: Scene) -> Floats:
        found = estimate_foreground_ml(scene.photo / 255.0, scene.alpha8 / 255.0)
        return np.asarray(found, np.float64) * 255

    return estimate


def quality_table() -> list[str]:
    methods: dict[str, Callable[[Scene], Bytes | Floats]] = {"seed (the photo's pixels)": seed_estimate}
    reference = pymatting_estimate()
    if reference is not None:
        methods["pymatting estimate_foreground_ml"] = reference
    methods["ours (blur fusion)"] = ours
    all_scenes = scenes()
    rows = ["| scene | " + " | ".join(f"{m}: band / white" for m in methods) + " |",
            "|---|" + "---:|" * len(methods)]
    totals: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    for scene in all_scenes:
        cells = []
        for name, method in methods.items():
            band, white = errors(scene, method(scene))
            totals[name].append((band, white))
            cells.append(f"{band:.1f} / {white:.1f}")
        rows.append(f"| {scene.name} | " + " | ".join(cells) + " |")
    means = [f"**{statistics.mean(b for b, _ in t):.1f} / {statistics.mean(w for _, w in t):.1f}**" for t in totals.values()]
    rows.append("| **mean** | " + " | ".join(means) + " |")
    if reference is None:
        rows.append("(pymatting is not installed: `pip install pymatting` adds its column)")
    return rows


def timing_at_24mp(repeat: int = 3) -> list[str]:
    """CPU seconds of ours on a 24 MP photo's cut-out, against the decode + PNG-encode floor:
    a wide fur rim (a fifth of the frame is soft edge) and a narrower one."""
    lines = []
    for sharpness in (120, 600):
        rng = np.random.default_rng(3)
        shape = (4000, 6000)
        scene = Scene("fur / green 24 MP", subject_colour(shape, rng), fur(shape, rng, sharpness=sharpness),
                      np.broadcast_to(np.array(BACKDROPS["green"], np.float64), (*shape, 3)))
        lines += _timed_scene(scene, repeat=repeat)
    return lines


def _timed_scene(scene: Scene, *, repeat: int) -> list[str]:
    # As beside the daemon's default stage pool (a thread per core), for the floor and for ours.
    share_cores_with_opencv(pool_threads=os.cpu_count() or 1)
    photo, alpha8 = scene.photo, scene.alpha8
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1]
    params = PipelineParams()
    bgra = np.dstack([cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), alpha8])

    def decode() -> object:
        return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)

    def encode() -> object:
        return encode_bgra(bgra, compression=params.png_compression, png_filter=params.png_filter)

    def decontaminate() -> object:
        return decontaminated(photo, alpha8)

    band, white = errors(scene, decontaminated(photo, alpha8))
    cpu = {name: _cpu(work, repeat=repeat) for name, work in
           (("decode", decode), ("encode", encode), ("decontaminate", decontaminate))}
    floor = cpu["decode"] + cpu["encode"]
    edge = int(((alpha8 > 0) & (alpha8 < 255)).sum())
    return [
        f"24 MP (6000 x 4000), {edge / 1e6:.2f} M edge pixels ({edge / alpha8.size:.0%}); CPU ms, median of {repeat}:",
        f"- decode {cpu['decode'] * 1000:.0f} + PNG encode {cpu['encode'] * 1000:.0f} = floor {floor * 1000:.0f}",
        f"- decontaminate {cpu['decontaminate'] * 1000:.0f} = {cpu['decontaminate'] / floor:.2f} x the floor (target <= 0.30)",
        f"- its error: {band:.1f} levels in the band, {white:.1f} on white (the seed's: "
        + " / ".join(f"{e:.1f}" for e in errors(scene, photo)) + ")",
    ]


def _cpu(work: Callable[[], object], *, repeat: int) -> float:
    spent = []
    for _ in range(repeat):
        started = time.process_time()
        work()
        spent.append(time.process_time() - started)
    return statistics.median(spent)


def picture(out: Path) -> None:
    """One strand-edge crop on white and on black: the seed's pixels, then decontaminated."""
    scene = next(s for s in scenes() if s.name == "strands / green")
    crop = (slice(70, 250), slice(380, 620))
    alpha8 = scene.alpha8[crop]
    tiles = []
    for label, colour in (("as the seed leaves it", scene.photo[crop]), ("decontaminate: true", ours(scene)[crop])):
        for background in ((255, 255, 255), (0, 0, 0)):
            a = alpha8[..., None] / 255.0
            shown = np.rint(a * colour + (1 - a) * np.array(background)).astype(np.uint8)
            tiles.append((label, Image.fromarray(shown)))
    width, height = tiles[0][1].size
    sheet = Image.new("RGB", (width * 2 + 30, (height + 26) * 2 + 10), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.truetype("DejaVuSans.ttf", 15)
    except OSError:
        font = ImageFont.load_default(15)
    for index, (label, tile) in enumerate(tiles):
        row, col = index // 2, index % 2
        x, y = 10 + col * (width + 10), 10 + row * (height + 26)
        draw.text((x, y), f"{label}, on {'white' if col == 0 else 'black'}", fill=(30, 30, 30), font=font)
        sheet.paste(tile, (x, y + 20))
    sheet.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-pictures", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    # Timed first: pymatting's estimator (in the quality table) leaves numba's worker threads
    # behind, and on two cores they slowed OpenCV's own threads several times over.
    timing = timing_at_24mp(repeat=args.repeat)
    print("\n".join(quality_table()))
    print()
    print("\n".join(timing))
    if not args.no_pictures:
        picture(Path("docs/decontaminate.png"))


if __name__ == "__main__":
    main()
