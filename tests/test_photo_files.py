"""Photographers' files: profiles, orientation, depth, colour models, alpha, limits, metadata.

Every fixture is made here, with OpenCV, Pillow and the hand-built profile in tests/icc.py.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageOps

from daemon.errors import TooLarge, Undecodable, Unsupported
from daemon.pipeline import ImageOptions, process_image
from daemon.pipeline.composite import crop_box
from daemon.pipeline.constants import PipelineParams
from daemon.pipeline.pipeline import StageTimer, finish
from daemon.pipeline.postprocess import postprocess
from daemon.pipeline.preprocess import normalize, resize_and_pad
from daemon.pipeline.source import HEIF_AVAILABLE, RAW_AVAILABLE
from daemon.testing import BrightModel
from tests.conftest import BRIGHT, DARK, subject_image, write_image
from tests.icc import adobe_rgb_profile, adobe_to_srgb

BOX = (100, 80, 300, 220)
PATCH = (200, 120, 60)
"""A colour inside both gamuts, painted where the subject is, to check colour handling."""


def _subject_with_patch() -> npt.NDArray[np.uint8]:
    rgb = subject_image(300, 400, BOX)
    rgb[120:180, 150:250] = (240, 200, 190)  # bright enough to stay foreground
    rgb[140:160, 180:220] = PATCH
    return rgb


def _rgba(png: bytes) -> npt.NDArray[np.generic]:
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None and decoded.shape[2] == 4
    return np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA))


def _cut(path: Path, **options: object) -> bytes:
    return process_image(path, model=BrightModel(), options=ImageOptions(**options)).cutout.png  # type: ignore[arg-type]


def _save(path: Path, image: Image.Image, **params: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **params)
    return path


# --- Colour profiles -----------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_an_adobe_rgb_profile_is_embedded_unchanged(tmp_path: Path, suffix: str) -> None:
    profile = adobe_rgb_profile()
    path = _save(tmp_path / f"adobe{suffix}", Image.fromarray(_subject_with_patch()), icc_profile=profile)
    png = _cut(path)
    assert Image.open(io.BytesIO(png)).info["icc_profile"] == profile


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_convert_to_srgb_matches_an_independent_conversion_within_one_level(tmp_path: Path, suffix: str) -> None:
    params = {"quality": 100, "subsampling": 0} if suffix == ".jpg" else {}
    path = _save(tmp_path / f"adobe{suffix}", Image.fromarray(_subject_with_patch()), icc_profile=adobe_rgb_profile(), **params)
    png = _cut(path, convert_to_srgb=True)
    decoded = Image.open(io.BytesIO(png))
    assert "icc_profile" not in decoded.info and b"sRGB" in png[:200]
    patch = _rgba(png)[140 - 30 + 10, 180 - 50 + 20, :3]  # crop starts at (50, 30)
    assert np.abs(patch.astype(float) - adobe_to_srgb(PATCH)).max() <= 1.0 + (1.0 if suffix == ".jpg" else 0.0)


def test_an_image_without_a_profile_stays_untagged(tmp_path: Path) -> None:
    png = _cut(write_image(tmp_path / "plain.png", _subject_with_patch()))
    assert b"iCCP" not in png and b"sRGB" not in png


def test_defaults_give_the_seeds_pixels_for_a_plain_srgb_jpeg(tmp_path: Path) -> None:
    path = write_image(tmp_path / "plain.jpg", _subject_with_patch())
    seed_rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    params = PipelineParams()
    padded, meta = resize_and_pad(seed_rgb, params=params)
    matte = postprocess(BrightModel().predict(normalize(padded, params=params)), meta=meta, params=params)
    box = crop_box(matte, threshold=0.05, padding=50)
    from daemon.pipeline.composite import compose_rgba

    assert np.array_equal(_rgba(_cut(path)), compose_rgba(seed_rgb, matte, box=box))


# --- Orientation ------------------------------------------------------------------------
_STORE = {  # how to store an upright image so that orientation N shows it upright again
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _oriented(upright: Image.Image, orientation: int, path: Path, **params: object) -> Path:
    stored = upright.transpose(_STORE[orientation]) if orientation in _STORE else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    _save(path, stored, exif=exif.tobytes(), **params)
    assert np.array_equal(np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")).shape, np.asarray(upright).shape)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".jpg", ".tif", ".webp"])
def test_every_exif_orientation_comes_out_upright(tmp_path: Path, orientation: int, suffix: str) -> None:
    upright = Image.fromarray(subject_image(300, 400, (40, 60, 200, 250)))  # off-centre: any turn shows
    lossless = {".jpg": {"quality": 100}, ".tif": {}, ".webp": {"lossless": True}}[suffix]
    reference = _rgba(_cut(_save(tmp_path / f"upright{suffix}", upright, **lossless)))
    rotated = _rgba(_cut(_oriented(upright, orientation, tmp_path / f"o{orientation}{suffix}", **lossless)))
    assert rotated.shape == reference.shape
    assert np.abs(rotated.astype(int) - reference.astype(int)).mean() < 2.0


def test_a_corrupt_exif_block_never_fails_the_image(tmp_path: Path) -> None:
    clean = write_image(tmp_path / "clean.jpg", subject_image(300, 400, BOX)).read_bytes()
    garbage = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + bytes(range(256)) * 2
    segment = b"\xff\xe1" + struct.pack(">H", len(garbage) + 2) + garbage
    (tmp_path / "corrupt.jpg").write_bytes(clean[:2] + segment + clean[2:])
    result = process_image(tmp_path / "corrupt.jpg", model=BrightModel(), options=ImageOptions(keep_metadata=True))
    assert (result.cutout.width, result.cutout.height) == (300, 240)


def test_decoding_on_many_threads_never_changes_the_processs_warning_filters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow warns on this file's EXIF; the daemon silenced its warnings once at start, so the
    stage pool's threads never enter `catch_warnings()` (not thread-safe: interleaved ones can
    leave a filter changed for good) and the filter list is the same object, unchanged, after."""
    import threading
    import warnings

    from daemon.companions.dashboard.thumbs import make_thumbnail

    clean = write_image(tmp_path / "clean.jpg", subject_image(300, 400, BOX)).read_bytes()
    garbage = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + bytes(range(256)) * 2
    segment = b"\xff\xe1" + struct.pack(">H", len(garbage) + 2) + garbage
    (tmp_path / "corrupt.jpg").write_bytes(clean[:2] + segment + clean[2:])
    entered: list[str] = []

    class Counting(warnings.catch_warnings):
        def __enter__(self) -> None:  # type: ignore[override]
            entered.append(threading.current_thread().name)
            super().__enter__()

    monkeypatch.setattr(warnings, "catch_warnings", Counting)
    filters, contents = warnings.filters, list(warnings.filters)

    def work() -> None:
        for _ in range(5):
            process_image(tmp_path / "corrupt.jpg", model=BrightModel(), options=ImageOptions(keep_metadata=True))
            assert make_thumbnail(tmp_path / "corrupt.jpg", size=64, max_pixels=10**8) is not None

    threads = [threading.Thread(target=work, name=f"stage-{index}") for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert entered == [] and warnings.filters is filters and warnings.filters == contents


# --- Depth ----------------------------------------------------------------------------
def _gradient16() -> npt.NDArray[np.uint16]:
    """Bright subject whose 28,000 pixels each have their own 16-bit level (a 8-bit file has 256)."""
    rgb = np.zeros((300, 400, 3), np.uint16)
    rgb[80:220, 100:300] = (40_000 + np.arange(140 * 200).reshape(140, 200))[..., np.newaxis]
    return rgb


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_gradient_keeps_its_depth_with_bit_depth_source(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"deep{suffix}"
    assert cv2.imwrite(str(path), _gradient16()[..., ::-1])
    deep = _rgba(_cut(path, bit_depth="source"))
    assert deep.dtype == np.uint16
    assert len(np.unique(deep[..., 0][deep[..., 3] > 60_000])) > 256
    assert _rgba(_cut(path)).dtype == np.uint8  # the default stays 8-bit, as the seed


def _packed_12_bit_tiff(rgb12: npt.NDArray[np.uint16]) -> bytes:
    """An uncompressed RGB TIFF with 12-bit samples packed MSB-first, as some scanners and backs write."""
    height, width, _ = rgb12.shape
    rows = []
    for row in rgb12.reshape(height, width * 3):
        bits = int("".join(f"{int(v):012b}" for v in row) + "0" * (-12 * len(row) % 8), 2)
        rows.append(bits.to_bytes((12 * len(row) + 7) // 8, "big"))
    pixels = b"".join(rows)
    entries = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, 0), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, 0), (277, 3, 1, 3), (278, 3, 1, height), (279, 4, 1, len(pixels)), (284, 3, 1, 1)]
    bits_at = 8 + 2 + 12 * len(entries) + 4
    data_at = bits_at + 8
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        inline_short = kind == 3 and count == 1  # else the field holds a number or an offset, 4 bytes
        value = {258: bits_at, 273: data_at}.get(tag, value)
        ifd += struct.pack("<HHIHH" if inline_short else "<HHII", tag, kind, count, *((value, 0) if inline_short else (value,)))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + struct.pack("<4H", 12, 12, 12, 0) + pixels


def test_a_12_bit_tiff_is_read_at_full_scale(tmp_path: Path) -> None:
    rgb12 = np.zeros((300, 400, 3), np.uint16)
    rgb12[80:220, 100:300] = (4095, 3000, 2000)
    (tmp_path / "scan.tif").write_bytes(_packed_12_bit_tiff(rgb12))
    deep = _rgba(_cut(tmp_path / "scan.tif", bit_depth="source"))
    assert tuple(deep[100, 120, :3]) == (4095 << 4, 3000 << 4, 2000 << 4)  # 12 bits scaled to 16
    eight = _rgba(_cut(tmp_path / "scan.tif"))
    assert tuple(eight[100, 120, :3]) == (255, 187, 125) and eight.shape == (240, 300, 4)


# --- Colour models and alpha ----------------------------------------------------------------
def test_grayscale_becomes_rgba_with_grey_colour(tmp_path: Path) -> None:
    gray = subject_image(300, 400, BOX)[..., 1]
    rgba = _rgba(_cut(_save(tmp_path / "gray.png", Image.fromarray(gray, "L"))))
    assert np.array_equal(rgba[..., 0], rgba[..., 1]) and np.array_equal(rgba[..., 1], rgba[..., 2])


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_is_converted_to_rgb(tmp_path: Path, suffix: str) -> None:
    cmyk = Image.fromarray(subject_image(300, 400, BOX)).convert("CMYK")
    png = _cut(_save(tmp_path / f"cmyk{suffix}", cmyk))
    rgba = _rgba(png)
    assert rgba.shape == (240, 300, 4) and rgba[90, 100, :3].min() > BRIGHT - 20
    assert b"sRGB" in png[:200]


def test_existing_transparency_is_kept(tmp_path: Path) -> None:
    rgba = np.dstack((subject_image(300, 400, BOX), np.full((300, 400), 255, np.uint8)))
    rgba[130:170, 180:220, 3] = 0  # a hole in the middle of the subject
    out = _rgba(_cut(_save(tmp_path / "hole.png", Image.fromarray(rgba, "RGBA"))))
    assert out[100:140, 130:170, 3].max() == 0  # the hole, in crop coordinates
    assert out[60, 80, 3] == 255


def test_a_palette_png_is_read(tmp_path: Path) -> None:
    palette = Image.fromarray(subject_image(300, 400, BOX)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    assert _rgba(_cut(_save(tmp_path / "palette.png", palette))).shape == (240, 300, 4)


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_animations_give_their_first_frame_and_say_so(tmp_path: Path, suffix: str) -> None:
    first = Image.fromarray(subject_image(300, 400, BOX))
    second = Image.fromarray(np.full((300, 400, 3), DARK, np.uint8))
    path = _save(tmp_path / f"anim{suffix}", first, save_all=True, append_images=[second], duration=100)
    result = process_image(path, model=BrightModel())
    assert (result.cutout.width, result.cutout.height) == (300, 240)
    assert "several frames or pages: the first one only" in result.cutout.notes


@pytest.mark.skipif(not HEIF_AVAILABLE, reason="pillow-heif is not installed (pip install -e '.[heif]')")
def test_a_heic_from_an_iphone_is_read_upright(tmp_path: Path) -> None:
    upright = Image.fromarray(subject_image(300, 400, (40, 60, 200, 250)))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(tmp_path / "IMG_0001.HEIC", stored, format="HEIF", exif=exif.tobytes(), quality=95)
    rgba = _rgba(_cut(path))
    reference = _rgba(_cut(_save(tmp_path / "upright.png", upright)))
    assert rgba.shape == reference.shape
    assert np.abs(rgba.astype(int) - reference.astype(int)).mean() < 3.0  # lossy, but not turned


def test_a_raw_file_libraw_cannot_read_is_undecodable_and_without_the_extra_unsupported(tmp_path: Path) -> None:
    """RAW decoding itself is tested in test_raw.py (with rawpy absent in a subprocess too)."""
    (tmp_path / "IMG_1234.CR3").write_bytes(b"\x00\x00\x00\x18ftypcrx " + b"\x00" * 100)
    expected = (Undecodable, r"IMG_1234\.CR3: LibRaw") if RAW_AVAILABLE else (Unsupported, r"pip install -e '\.\[raw\]'")
    with pytest.raises(expected[0], match=expected[1]):
        process_image(tmp_path / "IMG_1234.CR3", model=BrightModel())


# --- Limits ------------------------------------------------------------------------------
def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_an_oversized_header_is_too_large_before_anything_is_decoded(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge, match="10000 MP, above limits.max_pixels"):
            process_image(tmp_path / "bomb.png", model=BrightModel())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000  # 10^10 pixels were never allocated


def test_a_file_above_the_size_limit_is_too_large(tmp_path: Path) -> None:
    path = write_image(tmp_path / "big.png", subject_image(300, 400, BOX))
    with pytest.raises(TooLarge, match="limits.max_file_bytes"):
        process_image(path, model=BrightModel(), options=ImageOptions(max_file_bytes=100))


# --- Metadata ------------------------------------------------------------------------------
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'


def test_keep_metadata_copies_exif_with_orientation_reset_xmp_and_capture_time(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 3
    exif[0x010F] = "Phase One"
    exif.get_ifd(0x8769)[0x9003] = "2026:11:20 14:03:59"
    path = _save(tmp_path / "shot.jpg", Image.fromarray(subject_image(300, 400, BOX)).transpose(Image.Transpose.ROTATE_180),
                 exif=exif.tobytes(), xmp=XMP, quality=95)
    kept = Image.open(io.BytesIO(_cut(path, keep_metadata=True)))
    kept_exif = kept.getexif()
    assert kept_exif[0x0112] == 1 and kept_exif[0x010F] == "Phase One"
    assert kept_exif.get_ifd(0x8769)[0x9003] == "2026:11:20 14:03:59"
    assert kept.info["Creation Time"] == "2026-11-20T14:03:59"
    assert XMP.decode() in kept.info["XML:com.adobe.xmp"]
    plain = Image.open(io.BytesIO(_cut(path)))
    assert len(plain.getexif()) == 0 and "XML:com.adobe.xmp" not in plain.info


def test_the_daemon_and_process_image_agree_on_an_rgba_input(tmp_path: Path) -> None:
    rgba = np.dstack((subject_image(300, 400, BOX), np.full((300, 400), 200, np.uint8)))
    path = _save(tmp_path / "semi.png", Image.fromarray(rgba, "RGBA"))
    timer = StageTimer()
    from daemon.pipeline.pipeline import prepare

    prepared = prepare(path, params=PipelineParams(), timer=timer)
    cutout = finish(prepared, BrightModel().predict(prepared.batch), params=PipelineParams(), timer=timer)
    assert cutout.png == _cut(path)
    assert _rgba(cutout.png)[..., 3].max() == 200


def test_exif_after_the_pixels_of_a_png_is_still_honoured(tmp_path: Path) -> None:
    from daemon.pipeline import pngchunks

    upright = subject_image(300, 400, (40, 60, 200, 250))
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # shown upright by orientation 6
    png = cv2.imencode(".png", cv2.cvtColor(stored, cv2.COLOR_RGB2BGR))[1].tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    late = pngchunks.exif(exif.tobytes().removeprefix(b"Exif\x00\x00"))
    end = png.rindex(b"IEND") - 4
    (tmp_path / "late.png").write_bytes(png[:end] + late + png[end:])
    reference = _rgba(_cut(write_image(tmp_path / "upright.png", upright)))
    assert np.array_equal(_rgba(_cut(tmp_path / "late.png")), reference)


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_with_an_embedded_profile_is_converted_through_that_profile(tmp_path: Path, suffix: str) -> None:
    from PIL import ImageCms

    from tests.icc import cmyk_profile

    profile = cmyk_profile()
    cmyk = Image.fromarray(subject_image(300, 400, BOX)).convert("CMYK")
    path = _save(tmp_path / f"cmyk{suffix}", cmyk, icc_profile=profile, **({"quality": 100} if suffix == ".jpg" else {}))
    stored = Image.open(path)
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    expected = ImageCms.profileToProfile(stored, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    assert expected is not None
    expected_rgb = np.asarray(expected)[30:270, 50:350]
    naive_rgb = np.asarray(stored.convert("RGB"))[30:270, 50:350]
    got = _rgba(_cut(path))
    assert got.shape[:2] == expected_rgb.shape[:2]
    assert np.array_equal(got[..., :3], expected_rgb) and not np.array_equal(got[..., :3], naive_rgb)
