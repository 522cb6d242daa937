"""Each stage of the seed pipeline against arrays whose answer can be checked by hand."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon.errors import NoForeground, Truncated, Undecodable
from daemon.pipeline import PipelineParams, process_image
from daemon.pipeline.composite import CropBox, crop_box
from daemon.pipeline.pipeline import check_foreground
from daemon.pipeline.postprocess import erode, keep_largest_component, restore_matte, smooth_edges
from daemon.pipeline.preprocess import load_image, normalize, pad_meta, resize_and_pad
from daemon.testing import BrightModel
from tests.conftest import BRIGHT, DARK, subject_image, write_image

PARAMS = PipelineParams()


def test_pad_meta_centres_a_landscape_image_with_its_longest_side_at_1088() -> None:
    meta = pad_meta(1000, 2000, target=1088)
    assert (meta.new_h, meta.new_w) == (544, 1088)
    assert (meta.x_offset, meta.y_offset) == (0, 272)
    assert meta.scale == pytest.approx(0.544)


def test_pad_meta_upscales_a_small_portrait_image() -> None:
    meta = pad_meta(100, 50, target=1088)
    assert (meta.new_h, meta.new_w, meta.x_offset, meta.y_offset) == (1088, 544, 272, 0)


def test_resize_and_pad_fills_the_border_with_pad_color_and_keeps_the_image_inside() -> None:
    rgb = np.full((500, 1000, 3), 200, np.uint8)
    padded, meta = resize_and_pad(rgb, params=PARAMS)
    assert padded.shape == (1088, 1088, 3) and padded.dtype == np.uint8
    assert (padded[: meta.y_offset] == 127).all() and (padded[meta.y_offset + meta.new_h :] == 127).all()
    assert (padded[meta.y_offset : meta.y_offset + meta.new_h] == 200).all()


def test_resize_uses_area_when_shrinking_and_cubic_when_enlarging() -> None:
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (2176, 2176, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (544, 544, 3), dtype=np.uint8)
    assert np.array_equal(resize_and_pad(big, params=PARAMS)[0], cv2.resize(big, (1088, 1088), interpolation=cv2.INTER_AREA))
    assert np.array_equal(
        resize_and_pad(small, params=PARAMS)[0], cv2.resize(small, (1088, 1088), interpolation=cv2.INTER_CUBIC)
    )


def test_normalize_applies_imagenet_statistics_in_float32_nchw() -> None:
    padded = np.zeros((1088, 1088, 3), np.uint8)
    padded[0, 0] = (255, 0, 127)
    batch = normalize(padded, params=PARAMS)
    assert batch.shape == (1, 3, 1088, 1088) and batch.dtype == np.float32
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (127 / 255 - 0.406) / 0.225]
    assert batch[0, :, 0, 0] == pytest.approx(expected, rel=1e-6)


def test_restore_matte_round_trips_a_mask_through_pad_and_unpad() -> None:
    mask = np.zeros((600, 900), np.float32)
    mask[100:400, 200:700] = 1.0
    meta = pad_meta(600, 900, target=1088)
    square = np.zeros((1088, 1088), np.float32)
    inner = cv2.resize(mask, (meta.new_w, meta.new_h), interpolation=cv2.INTER_LINEAR)
    square[meta.y_offset : meta.y_offset + meta.new_h, meta.x_offset : meta.x_offset + meta.new_w] = inner
    square[: meta.y_offset] = 0.9  # padding content must be cut away, not resized in
    restored = restore_matte(square, meta=meta)
    assert restored.shape == (600, 900) and restored.dtype == np.float32
    assert np.abs(restored - mask).mean() < 0.01
    assert restored[0, 0] == 0.0 and restored[250, 450] == pytest.approx(1.0)


def test_largest_component_keeps_the_big_blob_and_drops_dust() -> None:
    matte = np.zeros((200, 200), np.float32)
    matte[50:150, 50:150] = 0.8
    matte[5:8, 5:8] = 1.0  # dust, brighter but smaller
    matte[190, 190] = 0.04  # below the threshold: not a component, still cleared
    kept = keep_largest_component(matte, threshold=0.05)
    assert (kept[50:150, 50:150] == np.float32(0.8)).all()
    assert kept[5:8, 5:8].max() == 0.0 and kept[190, 190] == 0.0


def test_largest_component_of_an_empty_matte_is_empty() -> None:
    assert keep_largest_component(np.zeros((10, 10), np.float32), threshold=0.05).max() == 0.0


def test_erosion_shrinks_a_square_by_one_pixel_per_side_and_zero_disables_it() -> None:
    matte = np.zeros((20, 20), np.float32)
    matte[5:15, 5:15] = 1.0
    eroded = erode(matte, kernel_size=3)
    assert eroded.sum() == 8 * 8 and (eroded[6:14, 6:14] == 1.0).all()
    assert erode(matte, kernel_size=0) is matte


def test_edge_smoothing_touches_only_the_band_around_the_edge() -> None:
    matte = np.zeros((100, 100), np.float32)
    matte[30:70, 30:70] = 1.0
    smoothed = smooth_edges(matte, params=PARAMS)
    assert 0.0 < smoothed[30, 50] < 1.0  # on the edge: blended
    assert smoothed[50, 50] == 1.0 and smoothed[5, 5] == 0.0  # far inside / outside: untouched
    changed = np.argwhere(smoothed != matte)
    distance_to_edge = np.minimum(np.abs(changed - 29.5), np.abs(changed - 69.5)).min(axis=1)
    assert distance_to_edge.max() <= 2.5
    assert smooth_edges(matte, params=PipelineParams(edge_blur_radius=0)) is matte


def test_crop_box_adds_padding_and_clamps_to_the_image() -> None:
    matte = np.zeros((300, 400), np.float32)
    matte[100:200, 150:250] = 1.0
    assert crop_box(matte, threshold=0.05, padding=50) == CropBox(100, 50, 300, 250)
    matte[:, :] = 0
    matte[10:20, 380:395] = 1.0
    assert crop_box(matte, threshold=0.05, padding=50) == CropBox(330, 0, 400, 70)


def test_too_little_foreground_raises_no_foreground_unless_fail_fast_is_off() -> None:
    matte = np.zeros((100, 100), np.float32)
    matte[0, 0:5] = 1.0  # 0.05 % of the pixels
    with pytest.raises(NoForeground, match="no foreground"):
        check_foreground(matte, params=PARAMS)
    assert check_foreground(matte, params=PipelineParams(fail_fast=False)) == pytest.approx(0.0005)


def test_process_image_cuts_out_the_subject_with_alpha_exactly_zero_far_from_it(tmp_path: Path) -> None:
    box = (100, 80, 300, 220)
    source = write_image(tmp_path / "subject.png", subject_image(300, 400, box))
    result = process_image(source, model=BrightModel())
    png = cv2.imdecode(np.frombuffer(result.cutout.png, np.uint8), cv2.IMREAD_UNCHANGED)
    rgba = cv2.cvtColor(png, cv2.COLOR_BGRA2RGBA)
    # The 200x140 subject (erosion and edge blur cancel out at alpha > 0.05) plus 50 px each side.
    assert rgba.shape == (240, 300, 4)
    assert (result.cutout.width, result.cutout.height) == (300, 240)
    alpha = rgba[..., 3]
    assert alpha[:10, :].max() == 0 and alpha[:, :10].max() == 0
    assert alpha[120, 150] == 255 and tuple(rgba[120, 150, :3]) == (BRIGHT + 10, BRIGHT, BRIGHT)
    assert set(result.timings) == {"load", "preprocess", "inference", "postprocess", "composite"}


def test_load_image_converts_bgr_to_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 0] = 255
    loaded = load_image(write_image(tmp_path / "red.png", rgb))
    assert tuple(loaded[0, 0]) == (255, 0, 0)


def test_empty_file_is_undecodable_and_garbage_too(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image at all")
    with pytest.raises(Undecodable, match="empty"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(Undecodable, match="not a readable image"):
        load_image(tmp_path / "junk.jpg")


def test_truncated_jpeg_is_refused_as_truncated_before_decoding(tmp_path: Path) -> None:
    # OpenCV 4 decodes such a file grey-filled with only a warning; whatever the
    # installed OpenCV does, the structural check must call it truncated first.
    whole = write_image(tmp_path / "whole.jpg", subject_image(300, 400, (100, 80, 300, 220))).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(Truncated, match="end-of-image"):
        load_image(cut)


def test_dark_background_pixels_are_background_for_the_fast_model() -> None:
    batch = normalize(np.full((1088, 1088, 3), DARK, np.uint8), params=PARAMS)
    assert BrightModel().predict(batch).max() < 0.01


@pytest.mark.parametrize("seed", range(6))
def test_cleaning_only_around_the_subject_equals_cleaning_the_whole_frame(seed: int) -> None:
    from daemon.pipeline.postprocess import clean_matte

    rng = np.random.default_rng(seed)
    matte = cv2.GaussianBlur(rng.random((240, 320), dtype=np.float32), (0, 0), 6)
    matte = np.clip((matte - matte.mean()) * 12 + 0.3, 0, 1).astype(np.float32)
    if seed % 2:
        matte[:, :40] = 1.0  # a subject touching the border
    params = PipelineParams(erode_kernel_size=3 + 2 * (seed % 3), edge_blur_radius=1 + seed % 2)
    whole = smooth_edges(
        erode(keep_largest_component(matte, threshold=0.05), kernel_size=params.erode_kernel_size), params=params
    )
    cleaned, region = clean_matte(matte.copy(), params=params)
    assert region is not None and np.array_equal(cleaned, whole)
