"""Recipes' pixels: each format, background, crop and mask option on small generated images.

The source is a textured red subject on a bright green background, with a soft matte edge
(alpha 0.2 .. 0.8); green hidden under the transparent pixels is what a wrong resample or
blend would show.
"""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import tifffile
from PIL import Image, JpegImagePlugin

from daemon.errors import TooLarge, Unsupported
from daemon.pipeline.composite import CropBox, crop_box, encode_cutout
from daemon.pipeline.constants import PipelineParams
from daemon.pipeline.matte import FloatArray
from daemon.pipeline.postprocess import matte_to_uint8
from daemon.pipeline.recipe import Recipe
from daemon.pipeline.render import RecipeFiles, Rendered, flatten, placement, render_recipe
from daemon.pipeline.source import Metadata, SourceImage
from tests.icc import adobe_rgb_profile

H, W = 48, 64
PARAMS = PipelineParams(crop_padding=3)
SUBJECT = (200, 60, 50)
HIDDEN = (30, 240, 40)
PROFILE = adobe_rgb_profile()
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    return exif.tobytes().removeprefix(b"Exif\x00\x00")


def _matte() -> FloatArray:
    matte = np.zeros((H, W), np.float32)
    matte[12:36, 20:44] = 1.0
    matte[12:36, 16:20] = np.array([0.2, 0.4, 0.6, 0.8], np.float32)  # a soft left edge
    matte[10:12, 20:44] = 0.5
    return matte


def _source(*, deep: bool = False, textured: bool = True, metadata: bool = True) -> SourceImage:
    rows, cols = np.mgrid[0:H, 0:W]
    texture = ((rows * 3 + cols * 5) % 11).astype(np.int32)[..., np.newaxis] if textured else 0
    rgb = np.empty((H, W, 3), np.int32)
    rgb[...] = HIDDEN
    rgb[10:36, 16:44] = SUBJECT
    rgb8: npt.NDArray[np.uint8] = np.clip(rgb + texture, 0, 255).astype(np.uint8)
    wide = None
    if deep:
        wide = (rgb8.astype(np.uint16) * 257 + ((rows * 7 + cols) % 200).astype(np.uint16)[..., np.newaxis]).astype(np.uint16)
        rgb8 = (wide >> 8).astype(np.uint8)
    meta = Metadata(exif=_exif(), xmp=XMP, capture_time="2024-05-01T10:00:00") if metadata else Metadata()
    return SourceImage(rgb8, wide, None, PROFILE if metadata else None, False, meta)


def _box(matte: FloatArray) -> CropBox:
    return crop_box(matte, threshold=PARAMS.alpha_threshold, padding=PARAMS.crop_padding)


def _render(recipe: Recipe, *, source: SourceImage | None = None, matte: FloatArray | None = None) -> RecipeFiles:
    matte = _matte() if matte is None else matte
    box = _box(matte) if matte.any() else CropBox(0, 0, W, H)
    return render_recipe(source or _source(), matte, box=box, recipe=recipe, params=PARAMS)


def _output(recipe: Recipe, **kwargs: object) -> Rendered:
    output = _render(recipe, **kwargs).output  # type: ignore[arg-type]
    assert output is not None
    return output


def _mask(recipe: Recipe, **kwargs: object) -> npt.NDArray[np.uint8]:
    mask = _render(recipe, **kwargs).mask  # type: ignore[arg-type]
    assert mask is not None
    decoded = cv2.imdecode(np.frombuffer(mask.data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None and decoded.ndim == 2 and decoded.dtype == np.uint8 and decoded.shape == (mask.height, mask.width)
    return np.asarray(decoded)


def _png_pixels(data: bytes) -> npt.NDArray[Any]:
    """RGB(A) in RGB order, 8 or 16 bits, as stored."""
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None
    code = cv2.COLOR_BGRA2RGBA if decoded.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return np.asarray(cv2.cvtColor(decoded, code))


def _expected_blend(colour: npt.NDArray[np.generic], alpha: npt.NDArray[np.generic], *, top: int, bg: int) -> npt.NDArray[np.int64]:
    a = alpha.astype(np.float64)[..., np.newaxis] / top
    return np.round(a * colour.astype(np.float64) + (1 - a) * bg * (top // 255)).astype(np.int64)


# --- The default recipe is the seed's output ---------------------------------------------
@pytest.mark.parametrize("deep", [False, True])
def test_the_default_recipe_is_byte_identical_to_encode_cutout(deep: bool) -> None:
    source, matte = _source(deep=deep), _matte()
    seed = encode_cutout(source, matte, box=_box(matte), compression=PARAMS.png_compression, png_filter=PARAMS.png_filter)
    files = _render(Recipe(bit_depth="source" if deep else 8), source=source)
    assert files.mask is None and files.output is not None
    assert files.output.data == seed
    assert (files.output.width, files.output.height) == (_box(matte).width, _box(matte).height)
    if deep:
        assert _output(Recipe(bit_depth=16), source=source).data == seed


def test_bit_depth_8_ignores_the_deep_pixels_and_16_scales_8_bit_ones_by_257() -> None:
    deep, matte = _source(deep=True), _matte()
    shallow = replace(deep, deep=None)
    seed8 = encode_cutout(shallow, matte, box=_box(matte), compression=PARAMS.png_compression, png_filter=PARAMS.png_filter)
    assert _output(Recipe(bit_depth=8), source=deep).data == seed8
    assert _output(Recipe(bit_depth="source"), source=shallow).data == seed8
    sixteen = _png_pixels(_output(Recipe(bit_depth=16), source=shallow).data)
    eight = _png_pixels(seed8)
    assert sixteen.dtype == np.uint16
    assert np.array_equal(sixteen[..., :3], eight[..., :3].astype(np.uint16) * 257)


# --- Background ------------------------------------------------------------------------------
def test_a_white_background_blends_each_edge_pixel_in_srgb_values_at_the_matte_alpha() -> None:
    source, matte = _source(), _matte()
    box = _box(matte)
    rgb = _png_pixels(_output(Recipe(background="#ffffff"), source=source).data)
    assert rgb.shape == (box.height, box.width, 3)  # RGB: no alpha channel at all
    crop = source.rgb[box.top : box.bottom, box.left : box.right]
    alpha = matte[box.top : box.bottom, box.left : box.right]
    y, x = 14 - box.top, 17 - box.left  # on the soft edge: alpha 0.4
    expected = np.asarray(alpha[y, x] * crop[y, x].astype(np.float64) + (1 - alpha[y, x]) * 255.0)
    assert np.all(np.abs(rgb[y, x].astype(np.float64) - expected) <= 1)
    # every pixel: exactly round(a fg + (1 - a) bg) with the 8-bit alpha the transparent PNG carries
    assert np.array_equal(rgb, _expected_blend(crop, matte_to_uint8(alpha), top=255, bg=255))
    assert np.array_equal(rgb[0, 0], [255, 255, 255]) and np.array_equal(rgb[y, 10], crop[y, 10])


def test_a_16_bit_background_blend_is_exact_at_16_bits() -> None:
    source, matte = _source(deep=True), _matte()
    box = _box(matte)
    rgb = _png_pixels(_output(Recipe(background="#808080", bit_depth=16), source=source).data)
    assert rgb.dtype == np.uint16 and rgb.shape == (box.height, box.width, 3)
    assert source.deep is not None
    crop = source.deep[box.top : box.bottom, box.left : box.right]
    alpha16 = np.clip(matte[box.top : box.bottom, box.left : box.right] * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
    assert np.array_equal(rgb, _expected_blend(crop, alpha16, top=65535, bg=128))


def test_flatten_is_exactly_the_rounded_blend_for_every_8_bit_colour_and_alpha() -> None:
    fg, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    colour = np.repeat(fg.astype(np.uint8)[..., np.newaxis], 3, axis=2)
    flat = flatten(colour, alpha.astype(np.uint8), background=(255, 0, 77))
    a = alpha / 255.0
    expected = np.stack([np.round(a * fg + (1 - a) * bg) for bg in (255, 0, 77)], axis=-1)
    assert flat.dtype == np.uint8 and np.array_equal(flat, expected)


# --- Crop --------------------------------------------------------------------------------------
def test_crop_none_keeps_the_input_size_and_pixels() -> None:
    source, matte = _source(), _matte()
    output = _output(Recipe(crop="none"), source=source)
    rgba = _png_pixels(output.data)
    assert (output.width, output.height) == (W, H) and rgba.shape == (H, W, 4)
    assert np.array_equal(rgba[..., :3], source.rgb)
    assert np.array_equal(rgba[..., 3], matte_to_uint8(matte))


def _bounds(alpha: npt.NDArray[np.generic]) -> tuple[int, int, int, int]:
    """left, top, right, bottom (half-open) of alpha > 0."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@pytest.mark.parametrize("canvas", [(100, 80), (30, 90), (200, 200)])
def test_a_canvas_has_its_exact_size_with_the_subject_centred_inside_the_margin(canvas: tuple[int, int]) -> None:
    recipe = Recipe(crop="canvas", canvas=canvas, margin="10%")
    output = _output(recipe)
    rgba = _png_pixels(output.data)
    width, height = canvas
    assert (output.width, output.height) == canvas and rgba.shape == (height, width, 4)
    left, top, right, bottom = _bounds(rgba[..., 3])
    mx, my = round(width * 0.1), round(height * 0.1)
    assert left >= mx and top >= my and right <= width - mx and bottom <= height - my
    assert abs(left - (width - right)) <= 1 and abs(top - (height - bottom)) <= 1  # centred
    assert left == mx or top == my  # scaled to fill the free space on one axis
    assert np.all(rgba[..., 3][rgba[..., 3] > 0] >= 1) and rgba[0, 0, 3] == 0


def test_a_bottom_aligned_canvas_stands_the_subject_on_the_bottom_margin() -> None:
    rgba = _png_pixels(_output(Recipe(crop="canvas", canvas=(120, 200), margin="6px", align="bottom")).data)
    left, top, right, bottom = _bounds(rgba[..., 3])
    assert bottom == 200 - 6 and top > 6
    assert abs(left - (120 - right)) <= 1 and left == 6


def test_placement_fits_the_tight_box_inside_the_margin_keeping_its_aspect() -> None:
    at = placement(CropBox(10, 10, 410, 210), recipe=Recipe(crop="canvas", canvas=(2000, 2000), margin="7.5%"))
    assert (at.left, at.width) == (150, 1700) and at.height == 850 and at.top == 150 + (1700 - 850) // 2


@pytest.mark.parametrize("canvas", [(20, 16), (300, 240)])
def test_canvas_scaling_on_premultiplied_colour_leaves_no_halo_of_the_hidden_background(
    canvas: tuple[int, int]
) -> None:
    source = _source(textured=False)
    rgba = _png_pixels(_output(Recipe(crop="canvas", canvas=canvas, margin="0%"), source=source).data)
    visible = rgba[..., 3] > 0
    assert visible.any()
    assert np.all(np.abs(rgba[visible][:, :3].astype(int) - SUBJECT) <= 1)  # no green mixed in anywhere
    assert np.all(rgba[~visible][:, :3] == 0)


def test_a_canvas_on_a_colour_is_rgb_with_that_colour_around_the_subject() -> None:
    output = _output(Recipe(crop="canvas", canvas=(90, 60), margin="10px", background="#ffffff", format="jpeg", quality=95))
    image = Image.open(io.BytesIO(output.data))
    assert image.mode == "RGB" and image.size == (90, 60)
    pixels = np.asarray(image).astype(int)
    assert np.all(pixels[:8] >= 250) and np.all(np.abs(pixels[30, 45] - SUBJECT) <= 12)


def test_a_canvas_without_any_foreground_is_the_empty_canvas() -> None:
    empty = np.zeros((H, W), np.float32)
    files = _render(Recipe(crop="canvas", canvas=(40, 30), mask="also"), matte=empty)
    assert files.output is not None and files.mask is not None
    rgba = _png_pixels(files.output.data)
    assert rgba.shape == (30, 40, 4) and not rgba.any()
    white = _png_pixels(_output(Recipe(crop="canvas", canvas=(40, 30), background="#fff"), matte=empty).data)
    assert white.shape == (30, 40, 3) and np.all(white == 255)


# --- Mask ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("crop", ["subject", "none", "canvas"])
def test_the_mask_equals_the_transparent_cutouts_alpha(crop: str) -> None:
    files = _render(Recipe(crop=crop, canvas=(70, 50), margin="4px", mask="also"))  # type: ignore[arg-type]
    assert files.output is not None and files.mask is not None
    rgba = _png_pixels(files.output.data)
    mask = _mask(Recipe(crop=crop, canvas=(70, 50), margin="4px", mask="also"))  # type: ignore[arg-type]
    assert np.array_equal(mask, rgba[..., 3]) and mask.any()
    assert (files.mask.width, files.mask.height) == (files.output.width, files.output.height)


def test_mask_only_writes_no_output_and_keeps_the_geometry_of_a_coloured_output() -> None:
    only = _render(Recipe(mask="only", background="#ffffff", format="jpeg"))
    assert only.output is None and only.mask is not None
    matte = _matte()
    box = _box(matte)
    assert np.array_equal(_mask(Recipe(mask="only")), matte_to_uint8(matte[box.top : box.bottom, box.left : box.right]))
    canvas = Recipe(crop="canvas", canvas=(50, 50), background="#ffffff")
    assert np.array_equal(_mask(replace(canvas, mask="only")), _mask(replace(canvas, mask="also")))
    assert _render(Recipe()).mask is None


# --- Formats -----------------------------------------------------------------------------------
def test_webp_decodes_losslessly_to_the_pngs_pixels_with_its_metadata() -> None:
    source = _source()
    png = _png_pixels(_output(Recipe(crop="none"), source=source).data)
    output = _output(Recipe(crop="none", format="webp"), source=source)
    image = Image.open(io.BytesIO(output.data))
    assert image.format == "WEBP" and image.mode == "RGBA" and image.size == (W, H)
    assert np.array_equal(np.asarray(image), png)  # green kept under alpha 0: `exact`
    assert image.info.get("icc_profile") == PROFILE
    assert image.getexif()[0x010F] == "TestCam" and XMP in (image.info.get("xmp") or b"")


def test_webp_on_a_colour_is_lossless_rgb() -> None:
    png = _png_pixels(_output(Recipe(background="#102030"), source=_source()).data)
    image = Image.open(io.BytesIO(_output(Recipe(format="webp", background="#102030")).data))
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), png)


def test_a_16_bit_tiff_from_a_16_bit_source_keeps_16_bits_unassociated_alpha_and_the_profile() -> None:
    source, matte = _source(deep=True), _matte()
    box = _box(matte)
    output = _output(Recipe(format="tiff", bit_depth="source"), source=source)
    with tifffile.TiffFile(io.BytesIO(output.data)) as tiff:
        page = tiff.pages[0]
        pixels = page.asarray()
        assert page.tags["InterColorProfile"].value == PROFILE
        assert page.tags["XMP"].value == XMP
        assert page.extrasamples == (tifffile.EXTRASAMPLE.UNASSALPHA,)
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    assert source.deep is not None and pixels.dtype == np.uint16 and pixels.shape == (box.height, box.width, 4)
    assert np.array_equal(pixels[..., :3], source.deep[box.top : box.bottom, box.left : box.right])
    assert np.array_equal(pixels, _png_pixels(_output(Recipe(bit_depth="source"), source=source).data))


def test_an_8_bit_tiff_reads_back_in_pillow_as_rgba_with_the_profile_and_on_a_colour_as_rgb() -> None:
    png = _png_pixels(_output(Recipe()).data)
    image = Image.open(io.BytesIO(_output(Recipe(format="tiff")).data))
    assert image.mode == "RGBA" and image.info.get("icc_profile") == PROFILE
    assert np.array_equal(np.asarray(image), png)
    flat = Image.open(io.BytesIO(_output(Recipe(format="tiff", background="#ffffff")).data))
    assert flat.mode == "RGB" and np.array_equal(np.asarray(flat), _png_pixels(_output(Recipe(background="#ffffff")).data))


def test_jpeg_is_rgb_444_with_the_profile_and_the_exif() -> None:
    source = _source(textured=False)
    output = _output(Recipe(format="jpeg", background="#ffffff", quality=90), source=source)
    image = Image.open(io.BytesIO(output.data))
    assert isinstance(image, JpegImagePlugin.JpegImageFile)
    assert image.mode == "RGB" and image.info.get("icc_profile") == PROFILE
    assert JpegImagePlugin.get_sampling(image) == 0  # 4:4:4
    assert image.getexif()[0x010F] == "TestCam"
    pixels = np.asarray(image).astype(int)
    assert np.all(np.abs(pixels[20 - 7, 30 - 13] - SUBJECT) <= 6) and np.all(pixels[0, 0] >= 250)


def test_a_jpeg_without_a_background_and_a_webp_too_wide_are_verdicts_not_crashes() -> None:
    with pytest.raises(Unsupported, match="jpeg"):
        _render(Recipe(format="jpeg"))
    wide = SourceImage(np.zeros((1, 16400, 3), np.uint8))
    with pytest.raises(TooLarge, match="WebP"):
        render_recipe(wide, np.ones((1, 16400), np.float32), box=CropBox(0, 0, 16400, 1),
                      recipe=Recipe(format="webp"), params=PARAMS)
