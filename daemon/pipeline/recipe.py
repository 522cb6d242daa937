"""Recipes: what one input becomes (format, background, crop, mask), and the names of its files.

A recipe is a named set of output settings from the config's `recipes:` section; the
built-in `default` is the seed's output (a cropped RGBA PNG), byte for byte. Every field's
default is the seed's behaviour, so a recipe names only what it changes.

Names: the store claims one name per input, the seed's `x.png` (or the layout rule's
`x.jpg.png` ...). Each recipe's files are derived from that claimed name: its stem, the
recipe's `suffix`, the format's extension, inside the recipe's `subfolder` of the output
folder. The store claims every derived name too (`claimed_names`), so no two inputs ever
share an output file, whatever the recipes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

OutputFormat = Literal["png", "webp", "tiff", "jpeg"]
CropMode = Literal["subject", "none", "canvas"]
MaskMode = Literal["none", "also", "only"]
Align = Literal["center", "bottom"]
RecipeBitDepth = Literal[8, 16, "source"]

DEFAULT_RECIPE = "default"
EXTENSIONS: dict[OutputFormat, str] = {"png": ".png", "webp": ".webp", "tiff": ".tif", "jpeg": ".jpg"}
MASK_EXTENSION = ".png"
TRANSPARENT = "transparent"
_HEX_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_MARGIN = re.compile(r"(\d+(?:\.\d+)?)(%|px)")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """One output's settings; the defaults are the seed's cropped, transparent, lossless PNG."""

    format: OutputFormat = "png"
    """png (RGBA, lossless), webp (lossless RGBA), tiff (RGBA with the ICC profile), jpeg (flattened)."""
    background: str = TRANSPARENT
    """`transparent`, or a colour `#rrggbb` / `#rgb` composited under the subject (in sRGB, as a
    browser shows the transparent PNG on that colour); jpeg needs a colour."""
    crop: CropMode = "subject"
    """subject: the seed's box around the subject plus `pipeline.crop_padding`; none: the whole
    frame; canvas: the subject scaled to fit a `canvas` of W x H inside `margin`."""
    canvas: tuple[int, int] = (2000, 2000)
    """crop: canvas only: the output's width and height in pixels."""
    margin: str = "0%"
    """crop: canvas only: free space on each side, `7.5%` (of each side's length) or `40px`."""
    align: Align = "center"
    """crop: canvas only: the subject centred, or standing on the bottom margin."""
    quality: int = 92
    """jpeg only: 1-100."""
    bit_depth: RecipeBitDepth = 8
    """png and tiff: 8, 16, or `source` (16 bits when the input has them)."""
    mask: MaskMode = "none"
    """also: write the 8-bit matte as a greyscale PNG beside the output; only: just the matte."""
    mask_suffix: str = "-mask"
    """What the mask's name adds after the output's stem (and the recipe's suffix)."""
    suffix: str = ""
    """Added to the output's stem: `x-white.jpg`."""
    subfolder: str = ""
    """A folder inside the output folder for this recipe's files: `web` gives `output/web/a/x.jpg`."""
    decontaminate: bool = False
    """Replace the colours of the soft edge (hair, fur, blur) with the subject's own, so the old
    backdrop leaves no halo (decontaminate.py); opaque pixels are never changed."""

    @property
    def writes_output(self) -> bool:
        return self.mask != "only"

    @property
    def writes_mask(self) -> bool:
        return self.mask != "none"


DEFAULT = Recipe()


@dataclass(frozen=True)
class OutputFile:
    """One file a recipe writes for one input: the cutout (`mask` False) or its matte."""

    recipe: str
    path: PurePosixPath
    mask: bool = False


def output_files(claimed: PurePosixPath, *, recipes: dict[str, Recipe], names: tuple[str, ...]) -> list[OutputFile]:
    """The files of recipes `names` for an input whose claimed name is `claimed` (`a/x.png`)."""
    stem = claimed.name.removesuffix(".png")
    files: list[OutputFile] = []
    for name in names:
        recipe = recipes[name]
        folder = PurePosixPath(recipe.subfolder) / claimed.parent if recipe.subfolder else claimed.parent
        base = f"{stem}{recipe.suffix}"
        if recipe.writes_output:
            files.append(OutputFile(name, folder / f"{base}{EXTENSIONS[recipe.format]}"))
        if recipe.writes_mask:
            files.append(OutputFile(name, folder / f"{base}{recipe.mask_suffix}{MASK_EXTENSION}", mask=True))
    return files


def parse_colour(text: str) -> tuple[int, int, int] | None:
    """`#rrggbb` or `#rgb` as (r, g, b); None for `transparent`; ValueError otherwise."""
    if text == TRANSPARENT:
        return None
    if not _HEX_COLOUR.fullmatch(text):
        raise ValueError(f"{text!r} is not `transparent` or a colour like #ffffff")
    digits = text[1:] if len(text) == 7 else "".join(c * 2 for c in text[1:])
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def margin_pixels(margin: str, *, side: int) -> int:
    """The margin in pixels on a side `side` pixels long: `7.5%` of it, or `40px`."""
    match = _MARGIN.fullmatch(margin.strip())
    if match is None:
        raise ValueError(f"{margin!r} is not a margin like 7.5% or 40px")
    value = float(match.group(1))
    return round(side * value / 100) if match.group(2) == "%" else round(value)


def recipe_problem(recipe: Recipe) -> str | None:
    """Why the recipe cannot work (the setting it names first), or None."""
    if recipe.format == "jpeg" and recipe.background == TRANSPARENT and recipe.writes_output:
        return "format: jpeg has no transparency: give a background colour, e.g. background: '#ffffff'"
    try:
        parse_colour(recipe.background)
    except ValueError as exc:
        return f"background: {exc}"
    return _canvas_problem(recipe) or _name_problem(recipe) or _depth_problem(recipe)


def _canvas_problem(recipe: Recipe) -> str | None:
    width, height = recipe.canvas
    if width <= 0 or height <= 0 or width * height > 400_000_000:
        return f"canvas: {width} x {height} is not a possible canvas size"
    try:
        free = (width - 2 * margin_pixels(recipe.margin, side=width), height - 2 * margin_pixels(recipe.margin, side=height))
    except ValueError as exc:
        return f"margin: {exc}"
    if min(free) < 1:
        return f"margin: {recipe.margin} leaves no room on a {width} x {height} canvas"
    return None if 1 <= recipe.quality <= 100 else f"quality: must be between 1 and 100, got {recipe.quality}"


def _name_problem(recipe: Recipe) -> str | None:
    for key, value in (("suffix", recipe.suffix), ("mask_suffix", recipe.mask_suffix)):
        if "/" in value or "\\" in value or value in (".", ".."):
            return f"{key}: {value!r} must be part of a file name, without slashes"
    folder = PurePosixPath(recipe.subfolder)
    if recipe.subfolder and (folder.is_absolute() or ".." in folder.parts or recipe.subfolder.startswith(".")):
        return f"subfolder: {recipe.subfolder!r} must be a relative folder inside the output folder, without '..'"
    if recipe.writes_mask and not recipe.mask_suffix and recipe.writes_output and recipe.format == "png":
        return "mask_suffix: the mask and the PNG cutout would have the same name"
    return None


def _depth_problem(recipe: Recipe) -> str | None:
    if recipe.bit_depth != 8 and recipe.format in ("webp", "jpeg"):
        return f"bit_depth: {recipe.format} is 8 bits only"
    return None
