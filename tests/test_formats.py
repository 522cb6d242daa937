"""Completeness checks from the file's own structure (JPEG segments, PNG chunks)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pathlib import Path

from daemon.pipeline.formats import file_truncation, is_image_name, jpeg_is_complete, png_is_complete, truncation


def _jpeg(quality: int = 90) -> bytes:
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (5, 5), 0)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def _png() -> bytes:
    return cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))[1].tobytes()


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """Insert an APP1 segment (where EXIF and its thumbnail live) after SOI."""
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def test_a_whole_jpeg_is_complete_and_every_cut_of_it_is_not() -> None:
    data = _jpeg()
    assert jpeg_is_complete(data)
    for end in (3, 100, len(data) // 2, len(data) - 2, len(data) - 1):
        assert not jpeg_is_complete(data[:end]), end


def test_data_after_the_end_marker_is_allowed() -> None:
    assert jpeg_is_complete(_jpeg() + b"trailing maker notes or a motion-photo video")


def test_an_embedded_thumbnail_end_marker_does_not_make_a_cut_jpeg_complete() -> None:
    thumbnail = _jpeg(quality=30)
    data = _with_app1(_jpeg(), b"Exif\x00\x00" + thumbnail)
    assert jpeg_is_complete(data)
    assert not jpeg_is_complete(data[: len(data) - 500])


def test_png_needs_its_iend_chunk() -> None:
    data = _png()
    assert png_is_complete(data)
    assert not png_is_complete(data[:-12]) and not png_is_complete(data[: len(data) // 2])


def test_truncation_names_the_format_and_ignores_other_formats() -> None:
    assert "JPEG" in (truncation(_jpeg()[:-40]) or "")
    assert "PNG" in (truncation(_png()[:-5]) or "")
    assert truncation(_jpeg()) is None and truncation(b"RIFX an unknown format is not checked") is None


def test_a_tiff_or_heif_cut_before_its_header_points_is_incomplete_and_an_empty_file_too(tmp_path: Path) -> None:
    tiff = b"II*\x00" + (4096).to_bytes(4, "little")  # the first IFD at byte 4096: not written yet
    assert "TIFF" in (truncation(tiff + b"\x00" * 100) or "")
    assert truncation(tiff + b"\x00" * 4100) is None
    heif = (64).to_bytes(4, "big") + b"ftypheic"  # a first box of 64 bytes
    assert "HEIF" in (truncation(heif) or "") and truncation(heif + b"\x00" * 52) is None
    (tmp_path / "created.jpg").touch()
    assert "empty" in (file_truncation(tmp_path / "created.jpg") or "")


@pytest.mark.parametrize("suffix", [".webp", ".bmp", ".gif"])
def test_webp_bmp_and_gif_cut_short_are_incomplete(suffix: str) -> None:
    from PIL import Image
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(
        buffer, format=suffix[1:].upper()
    )
    data = buffer.getvalue()
    assert truncation(data) is None
    assert truncation(data[: len(data) * 2 // 3]) is not None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("B.JPEG", True),
        ("c.Png", True),
        ("d.webp", True),
        ("e.TIF", True),
        ("f.tiff", True),
        ("g.bmp", True),
        (".hidden.jpg", False),
        ("._a.jpg", False),
        ("notes.txt", False),
        ("raw.CR3", True),  # camera RAW: decoded by LibRaw (the `raw` extra)
        ("iphone.HEIC", True),
        ("anim.gif", True),
        ("jpg", False),
    ],
)
def test_image_names_by_extension_in_any_case_without_hidden_files(name: str, expected: bool) -> None:
    assert is_image_name(name) is expected


def _variants() -> dict[str, bytes]:
    from PIL import Image
    import io

    def saved(fmt: str) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(2).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(buffer, format=fmt)
        return buffer.getvalue()

    jpeg, png = _jpeg(), _png()
    thumbed = _with_app1(_jpeg(), b"Exif\x00\x00" + _jpeg(quality=30))
    wholes = {"jpeg": jpeg, "png": png, "gif": saved("GIF"), "webp": saved("WEBP"), "bmp": saved("BMP"),
              "jpeg+trailer": jpeg + b"motion photo video", "jpeg+thumbnail": thumbed}
    cases = dict(wholes)
    for name, data in wholes.items():
        for fraction in (0.1, 0.5, 0.97):
            cases[f"{name} cut at {fraction}"] = data[: int(len(data) * fraction)]
    cases["jpeg cut inside the thumbnail"] = thumbed[:400]
    return cases


@pytest.mark.parametrize("name", list(_variants()))
def test_the_file_check_reading_only_headers_agrees_with_the_full_check(tmp_path: Path, name: str) -> None:
    data = _variants()[name]
    (tmp_path / "f").write_bytes(data)
    assert (file_truncation(tmp_path / "f") is None) == (truncation(data) is None)
    assert (truncation(data) is None) == ("cut" not in name)
