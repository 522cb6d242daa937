"""The README's before/after picture, made by the real pipeline on a synthetic product photo.

    python -m benchmarks.readme_pictures            # writes docs/before-after.png

Model weights cannot be downloaded where this project is built, so the matte comes from the
test suite's stand-in (`daemon.testing.BrightModel`: foreground where the image is bright):
the photo is made for it (a light product on a dark backdrop). Everything after the matte is
the pipeline a real BiRefNet run goes through: largest component, erosion, edge smoothing,
the crop with its padding, the RGBA PNG. The picture shows what a cut-out is; not how well a
learned model finds the subject.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from daemon.pipeline.pipeline import process_image
from daemon.testing import BrightModel

SIZE = (900, 675)
SCALE = 3
"""Drawn at three times the size, then reduced: soft, anti-aliased edges like a photo's."""


def product_photo() -> Image.Image:
    """A white bottle with a pale label and a soft shadow on a dark, graded studio backdrop."""
    w, h = SIZE[0] * SCALE, SIZE[1] * SCALE
    y = np.linspace(0, 1, h)[:, None, None]
    backdrop = (np.array([38, 44, 56]) * (1 - y) + np.array([70, 74, 82]) * y) * np.ones((1, w, 1))
    photo = Image.fromarray(backdrop.astype(np.uint8))
    shadow = Image.new("L", (w, h), 0)
    ImageDraw.Draw(shadow).ellipse((w * 0.33, h * 0.80, w * 0.67, h * 0.90), fill=150)
    photo.paste((12, 14, 18), mask=shadow.filter(ImageFilter.GaussianBlur(18 * SCALE)))
    body = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(body)
    draw.rounded_rectangle((w * 0.38, h * 0.30, w * 0.62, h * 0.85), radius=40 * SCALE, fill=255)
    draw.rounded_rectangle((w * 0.455, h * 0.14, w * 0.545, h * 0.32), radius=10 * SCALE, fill=255)
    x = np.linspace(0, 1, w)[None, :, None]
    shading = 250 - 70 * np.clip(np.abs(x - 0.45) / 0.2, 0, 1) ** 2  # lit from the left: 250 down to 180
    colour = (shading * np.array([1.0, 0.99, 0.97])) * np.ones((h, 1, 1))
    photo.paste(Image.fromarray(colour.clip(0, 255).astype(np.uint8)), mask=body)
    label = ImageDraw.Draw(photo)
    label.rectangle((w * 0.38, h * 0.50, w * 0.62, h * 0.66), fill=(236, 206, 170))
    # Light lettering: the stand-in model would cut dark letters out as background.
    label.text((w * 0.5, h * 0.58), "CUTOUT", fill=(255, 250, 244), anchor="mm", font=_font(34 * SCALE))
    return photo.resize(SIZE, Image.LANCZOS)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def checkerboard(size: tuple[int, int], *, square: int = 12) -> Image.Image:
    ys, xs = np.indices((size[1], size[0]))
    light = ((xs // square + ys // square) % 2 == 0)[..., None]
    return Image.fromarray(np.where(light, 236, 204).astype(np.uint8).repeat(3, axis=2))


def before_after(photo: Image.Image, cutout: Image.Image, *, height: int = 360) -> Image.Image:
    """The photo and its cut-out (on a checkerboard: transparent), side by side, labelled."""
    before = photo.resize((photo.width * height // photo.height, height), Image.LANCZOS)
    after = cutout.resize((cutout.width * height // cutout.height, height), Image.LANCZOS)
    gap, top, caption = 24, 40, 280
    sheet = Image.new("RGB", (before.width + max(after.width, caption) + gap * 3, height + top + gap), (255, 255, 255))
    sheet.paste(before, (gap, top))
    board = checkerboard(after.size)
    board.paste(after, mask=after.split()[3])
    sheet.paste(board, (before.width + gap * 2, top))
    draw = ImageDraw.Draw(sheet)
    for x, text in ((gap, "photo dropped in the hot folder"), (before.width + gap * 2, "its cut-out (transparent, cropped)")):
        draw.text((x, 12), text, fill=(40, 40, 40), font=_font(16))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/before-after.png"))
    args = parser.parse_args()
    photo = product_photo()
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "bottle.jpg"
        photo.save(source, quality=92)
        result = process_image(source, model=BrightModel())
    cutout = Image.open(io.BytesIO(result.cutout.png))
    sheet = before_after(photo, cutout)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}: {sheet.width} x {sheet.height}, {args.out.stat().st_size // 1024} KB; "
          f"cut-out {cutout.width} x {cutout.height} {cutout.mode}")


if __name__ == "__main__":
    main()
