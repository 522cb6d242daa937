"""Camera RAW in: DNGs written here by hand, decoded by the real LibRaw; containers checked whole.

No camera file is shipped: `dng()` packs a minimal little-endian DNG (a Bayer CFA image
with the tags LibRaw needs: CFA pattern, DNG version, colour matrix, as-shot neutral,
orientation). Its colour matrix makes the "camera" see linear sRGB, so the expected output
of a patch is its sRGB encoding, once the camera's white balance has undone the neutral.
"""

from __future__ import annotations

import io
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from daemon.errors import JobError, Truncated, Undecodable
from daemon.pipeline import ImageOptions, PipelineParams, process_image
from daemon.pipeline.formats import file_truncation, is_image_name, raw_truncation
from daemon.pipeline.source import RAW_AVAILABLE, orient, read_source
from daemon.testing import BrightModel

needs_rawpy = pytest.mark.skipif(not RAW_AVAILABLE, reason="rawpy is not installed (pip install -e '.[raw]')")

FloatImage = npt.NDArray[np.float64]

NEUTRAL = (0.5, 1.0, 0.8)
"""AsShotNeutral: the camera's raw values of a grey. Its white balance multiplies by (2, 1, 1.25)."""
XYZ_TO_LINEAR_SRGB = (3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570)
"""ColorMatrix1 (XYZ to camera) of a camera whose primaries are sRGB's, under D65."""
GREY, ORANGE = (0.18, 0.18, 0.18), (0.6, 0.3, 0.1)
"""Scene colours in linear light; raw values stay below 75 % of white, where LibRaw leaves
the white level alone (above, its highlight guard takes the frame's maximum as white)."""
BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL = 1, 2, 3, 4, 5, 10
_CODES = {BYTE: "B", ASCII: "B", SHORT: "H", LONG: "I", RATIONAL: "I", SRATIONAL: "i"}
Tag = tuple[int, int, list[int]]


def srgb8(linear: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The sRGB encoding of linear values, on the 0-255 scale."""
    x = np.asarray(linear, np.float64)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055) * 255


def _rationals(values: tuple[float, ...]) -> list[int]:
    return [part for value in values for part in (round(value * 10_000), 10_000)]


def _ascii(text: str) -> list[int]:
    return list(text.encode() + b"\x00")


def scene(height: int = 48, width: int = 64) -> FloatImage:
    """Linear scene colours: grey, with an orange patch at the top left (to see orientation)."""
    image = np.empty((height, width, 3))
    image[:] = GREY
    image[4:20, 4:24] = ORANGE
    return image


def mosaic(linear: FloatImage, *, neutral: tuple[float, float, float] = NEUTRAL, white: int = 65535) -> npt.NDArray[np.uint16]:
    """What an RGGB sensor with sRGB primaries records of a linear scene under `neutral`."""
    camera = linear * np.asarray(neutral)
    cfa = np.empty(camera.shape[:2])
    cfa[0::2, 0::2] = camera[0::2, 0::2, 0]
    cfa[0::2, 1::2] = camera[0::2, 1::2, 1]
    cfa[1::2, 0::2] = camera[1::2, 0::2, 1]
    cfa[1::2, 1::2] = camera[1::2, 1::2, 2]
    return np.asarray(np.round(cfa * white), np.uint16)


def _directory(tags: list[Tag], *, at: int) -> bytes:
    """One little-endian TIFF directory at offset `at`, its values longer than 4 bytes after it."""
    values_at = at + 2 + 12 * len(tags) + 4
    entries, extra = b"", b""
    for tag, kind, values in sorted(tags):
        payload = struct.pack(f"<{len(values)}{_CODES[kind]}", *values)
        count = len(values) // 2 if kind in (RATIONAL, SRATIONAL) else len(values)
        if len(payload) <= 4:
            entries += struct.pack("<HHI", tag, kind, count) + payload.ljust(4, b"\x00")
        else:
            entries += struct.pack("<HHII", tag, kind, count, values_at + len(extra))
            extra += payload + b"\x00" * (len(payload) % 2)
    return struct.pack("<H", len(tags)) + entries + struct.pack("<I", 0) + extra


def tiff(tags: list[Tag], pixels: bytes, *, magic: bytes = b"II*\x00", exif: list[Tag] | None = None) -> bytes:
    """A little-endian TIFF: header, first directory, the Exif directory if any, then the
    pixels (where a camera puts them: last), with StripOffsets (273) and the Exif pointer
    (34665) filled in. Offsets are inline LONGs, so the layout does not depend on them."""
    pointer: list[Tag] = [(34665, LONG, [0])] if exif else []
    exif_at = 8 + len(_directory(tags + pointer, at=8))
    exif_block = _directory(exif, at=exif_at) if exif else b""
    pixels_at = exif_at + len(exif_block)
    placed = [(tag, kind, [pixels_at] if tag == 273 else values) for tag, kind, values in tags]
    placed += [(34665, LONG, [exif_at])] if exif else []
    return magic + struct.pack("<I", 8) + _directory(placed, at=8) + exif_block + pixels


def dng(linear: FloatImage | None = None, *, orientation: int = 1, taken: str = "2024:05:06 07:08:09") -> bytes:
    """A 16-bit uncompressed RGGB DNG of `linear` (default: `scene()`), as a camera stores it."""
    cfa = mosaic(scene() if linear is None else linear)
    height, width = cfa.shape
    tags: list[Tag] = [
        (254, LONG, [0]), (256, LONG, [width]), (257, LONG, [height]), (258, SHORT, [16]),
        (259, SHORT, [1]), (262, SHORT, [32803]), (271, ASCII, _ascii("Cutout")), (272, ASCII, _ascii("Test DNG")),
        (273, LONG, [0]), (274, SHORT, [orientation]), (277, SHORT, [1]), (278, LONG, [height]),
        (279, LONG, [cfa.nbytes]), (284, SHORT, [1]),
        (33421, SHORT, [2, 2]), (33422, BYTE, [0, 1, 1, 2]), (50706, BYTE, [1, 4, 0, 0]),
        (50708, ASCII, _ascii("Cutout Test DNG")), (50714, LONG, [0]), (50717, LONG, [65535]),
        (50721, SRATIONAL, _rationals(XYZ_TO_LINEAR_SRGB)), (50728, RATIONAL, _rationals(NEUTRAL)),
        (50778, SHORT, [21]),
    ]
    return tiff(tags, cfa.astype("<u2").tobytes(), exif=[(36867, ASCII, _ascii(taken))])  # DateTimeOriginal


def _read(data: bytes, *, name: str = "IMG_0001.dng", **options: object) -> npt.NDArray[np.uint8]:
    return read_source(data, name=name, options=ImageOptions(**options)).rgb  # type: ignore[arg-type]


# --- Decoding ---------------------------------------------------------------------------
def _region(rows: slice, cols: slice, orientation: int) -> npt.NDArray[np.bool_]:
    """Where a box of the stored 48 x 64 frame lies once the frame is upright."""
    mask = np.zeros((48, 64), bool)
    mask[rows, cols] = True
    return np.asarray(orient(mask, orientation), bool)


@needs_rawpy
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_dng_comes_out_upright_in_the_camera_white_balance_and_srgb(orientation: int) -> None:
    rgb = _read(dng(orientation=orientation)).astype(float)
    assert rgb.shape == ((48, 64, 3) if orientation in (1, 3) else (64, 48, 3))
    patch = _region(slice(6, 18), slice(6, 22), orientation)  # the orange patch, off its edges
    assert np.abs(rgb[patch] - srgb8(ORANGE)).max() <= 3  # orange, where it should be: the right way round
    grey = _region(slice(26, 46), slice(30, 60), orientation)
    assert np.abs(rgb[grey] - srgb8(GREY)).max() <= 2  # neutral: the camera's white balance was applied


@needs_rawpy
def test_the_dng_keeps_16_bits_for_a_source_depth_output_and_gives_the_model_the_high_byte() -> None:
    source = read_source(dng(), name="IMG_0001.DNG", options=ImageOptions(bit_depth="source"))
    assert source.deep is not None and source.deep.dtype == np.uint16 and source.deep.shape == (48, 64, 3)
    assert np.array_equal(source.rgb, (source.deep >> 8).astype(np.uint8))
    assert source.srgb and source.icc_profile is None and source.alpha is None
    assert read_source(dng(), name="IMG_0001.dng", options=ImageOptions()).deep is None


@needs_rawpy
def test_a_monochrome_dng_without_a_colour_filter_comes_out_grey() -> None:
    """Leica Monochrom and achromatic backs: LibRaw gives one channel, the pipeline three."""
    linear = np.full((48, 64), 0.18)
    linear[4:20, 4:24] = 0.5
    pixels = np.round(linear * 65535).astype("<u2")
    tags: list[Tag] = [
        (254, LONG, [0]), (256, LONG, [64]), (257, LONG, [48]), (258, SHORT, [16]), (259, SHORT, [1]),
        (262, SHORT, [34892]), (271, ASCII, _ascii("Cutout")), (272, ASCII, _ascii("Mono")), (273, LONG, [0]),
        (277, SHORT, [1]), (278, LONG, [48]), (279, LONG, [pixels.nbytes]), (284, SHORT, [1]),
        (50706, BYTE, [1, 4, 0, 0]), (50708, ASCII, _ascii("Cutout Mono")), (50717, LONG, [65535]),
    ]
    rgb = _read(tiff(tags, pixels.tobytes()), name="L1000001.DNG").astype(float)
    assert rgb.shape == (48, 64, 3)
    assert np.abs(rgb[30, 40] - srgb8(0.18)).max() <= 2 and np.abs(rgb[10, 10] - srgb8(0.5)).max() <= 2


@needs_rawpy
def test_the_exif_copy_says_upright_and_keeps_the_capture_time_without_the_container_tags() -> None:
    source = read_source(dng(orientation=6), name="IMG_0001.dng", options=ImageOptions(keep_metadata=True))
    assert source.rgb.shape == (64, 48, 3)
    assert source.metadata.exif is not None and source.metadata.capture_time == "2024-05-06T07:08:09"
    exif = Image.Exif()
    exif.load(source.metadata.exif)
    assert exif[0x0112] == 1 and exif[0x0110] == "Test DNG"  # upright once: no viewer turns it again
    assert exif.get_ifd(0x8769)[36867] == "2024:05:06 07:08:09"
    assert not {273, 279, 33422, 50706, 50721, 50728} & set(exif)


@needs_rawpy
def test_a_dng_through_the_pipeline_is_cut_out_like_the_same_picture_as_a_png(tmp_path: Path) -> None:
    """End to end through process_image: the subject of an Orientation=6 DNG, cut out upright."""
    linear = np.full((48, 64, 3), 0.005)
    linear[10:30, 8:40] = 0.55  # bright: the matte's foreground
    (tmp_path / "IMG_0002.dng").write_bytes(dng(linear, orientation=6))
    params = PipelineParams(target_size=64)
    cutout = process_image(tmp_path / "IMG_0002.dng", model=BrightModel(), params=params).cutout
    upright = orient(np.round(srgb8(linear)).astype(np.uint8), 6)
    Image.fromarray(upright).save(tmp_path / "upright.png")
    reference = process_image(tmp_path / "upright.png", model=BrightModel(), params=params).cutout
    assert (cutout.width, cutout.height) == (reference.width, reference.height)
    ours, theirs = (np.asarray(Image.open(io.BytesIO(c.png)), np.int16) for c in (cutout, reference))
    assert np.abs(ours - theirs).mean() < 2.0


# --- Failures ---------------------------------------------------------------------------
_WITHOUT_RAWPY = """
import sys
sys.modules["rawpy"] = None  # `import rawpy` now raises ImportError, as where it is not installed
from daemon.errors import JobError
from daemon.pipeline.constants import ImageOptions
from daemon.pipeline.formats import is_image_name
from daemon.pipeline.source import RAW_AVAILABLE, read_source
try:
    read_source(open(sys.argv[1], "rb").read(), name="IMG_0001.DNG", options=ImageOptions())
except JobError as exc:
    print(f"{RAW_AVAILABLE} {is_image_name('IMG_0001.DNG')} {exc.reason}: {exc}")
"""


def test_without_rawpy_a_raw_file_is_unsupported_with_the_install_command(tmp_path: Path) -> None:
    (tmp_path / "IMG_0001.DNG").write_bytes(dng())
    run = subprocess.run([sys.executable, "-c", _WITHOUT_RAWPY, str(tmp_path / "IMG_0001.DNG")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("False True unsupported: IMG_0001.DNG is a camera RAW file")
    assert "pip install -e '.[raw]'" in run.stdout and "pip install 'cutout-daemon[raw]'" in run.stdout


@needs_rawpy
def test_a_damaged_dng_is_undecodable_and_names_the_file() -> None:
    data = bytearray(dng())
    data[10 : 10 + 12 * 24] = bytes(12 * 24)  # the first directory's entries zeroed: bit rot, not a cut
    assert raw_truncation(io.BytesIO(data), size=len(data)) is None  # complete: not held back as incomplete
    with pytest.raises(Undecodable, match=r"IMG_0003\.dng: LibRaw .* does not recognise it") as raised:
        _read(bytes(data), name="IMG_0003.dng")
    assert raised.value.reason == "undecodable"


@needs_rawpy
def test_a_dng_bigger_than_the_pixel_limit_is_refused_before_it_is_demosaiced() -> None:
    with pytest.raises(JobError, match="above limits.max_pixels") as raised:
        _read(dng(), max_pixels=1000)
    assert raised.value.reason == "too_large"


# --- Settle detection: the containers, checked whole ----------------------------------------
def _cuts(data: bytes) -> list[int]:
    return [1, 7, 9, 40, len(data) // 2, len(data) - 1]


def test_a_dng_cut_anywhere_is_incomplete_on_disk_and_in_memory(tmp_path: Path) -> None:
    data = dng()
    path = tmp_path / "IMG_0004.DNG"
    path.write_bytes(data)
    assert file_truncation(path) is None
    for end in [*_cuts(data), len(data) - len(mosaic(scene()).tobytes()) + 2]:  # also: cut just into the pixels
        path.write_bytes(data[:end])
        assert file_truncation(path) is not None, end
        assert raw_truncation(io.BytesIO(data[:end]), size=end) is not None, end
    if RAW_AVAILABLE:
        with pytest.raises(Truncated, match="camera RAW is shorter than its image data says"):
            _read(data[: len(data) - 100])


def _sub_ifd_tiff(magic: bytes) -> bytes:
    """NEF/ARW/DNG layout: a first directory whose SubIFDs (330) tag points to the raw
    image's directory, whose one strip of 1000 bytes ends the file."""
    first = struct.pack("<H", 1) + struct.pack("<HHII", 330, LONG, 1, 26) + struct.pack("<I", 0)
    raw = struct.pack("<H", 2) + struct.pack("<HHII", 273, LONG, 1, 56) + struct.pack("<HHII", 279, LONG, 1, 1000)
    return magic + struct.pack("<I", 8) + first + raw + struct.pack("<I", 0) + bytes(1000)


@pytest.mark.parametrize("magic", [b"II*\x00", b"IIRO", b"IIU\x00"])  # NEF/ARW/DNG/CR2, ORF, RW2
def test_the_tiff_walk_follows_sub_directories_and_knows_the_olympus_and_panasonic_headers(magic: bytes) -> None:
    data = _sub_ifd_tiff(magic)
    assert raw_truncation(io.BytesIO(data), size=len(data)) is None
    for end in (20, 40, 500, len(data) - 1):  # in the first directory, the raw one, the strip
        assert raw_truncation(io.BytesIO(data[:end]), size=end) is not None, end


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def test_a_cr3_must_hold_every_top_level_box_it_starts(tmp_path: Path) -> None:
    big_mdat = struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 16 + 500) + bytes(500)  # 64-bit box size
    data = _box(b"ftyp", b"crx \x00\x00\x00\x01crx isom") + _box(b"moov", bytes(200)) + big_mdat
    path = tmp_path / "IMG_0005.CR3"
    path.write_bytes(data)
    assert file_truncation(path) is None
    for end in _cuts(data):
        path.write_bytes(data[:end])
        assert file_truncation(path) is not None, end


def test_a_raf_must_reach_the_end_of_what_its_header_points_at(tmp_path: Path) -> None:
    header = b"FUJIFILMCCD-RAW 0201FF383501X-T5".ljust(84, b"\x00")
    data = header + struct.pack(">6I", 120, 100, 220, 50, 270, 2000)
    data = data.ljust(2270, b"\x01")
    path = tmp_path / "DSCF0001.RAF"
    path.write_bytes(data)
    assert file_truncation(path) is None
    for end in _cuts(data):
        path.write_bytes(data[:end])
        assert file_truncation(path) is not None, end


def test_raw_names_are_inputs_and_tiff_files_keep_their_own_check(tmp_path: Path) -> None:
    assert all(is_image_name(name) for name in ("a.CR2", "b.cr3", "c.NEF", "d.arw", "e.RAF", "f.orf", "g.RW2", "h.dng"))
    cut = _sub_ifd_tiff(b"II*\x00")[:500]
    (tmp_path / "scan.tif").write_bytes(cut)
    assert file_truncation(tmp_path / "scan.tif") is None  # the RAW walk is for RAW files only


# --- Every damaged RAW fails as one of ours ----------------------------------------------------
@pytest.mark.slow
@needs_rawpy
def test_damaged_dngs_fail_as_job_errors_and_the_container_walk_never_raises() -> None:
    good, rng = dng(), random.Random(14)
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            where = rng.choice((rng.randrange(400), rng.randrange(len(data))))
            data[where] = rng.choice((0x00, 0xFF, rng.randrange(256), data[where] ^ (1 << rng.randrange(8))))
        if rng.random() < 0.2:
            data = data[: rng.randrange(1, len(data))]
        raw_truncation(io.BytesIO(data), size=len(data))
        try:
            _read(bytes(data))
        except JobError:
            pass


# --- The daemon on a tethered capture folder -------------------------------------------------
@pytest.mark.slow
@needs_rawpy
def test_the_daemon_waits_for_a_dng_written_with_a_long_pause_and_quarantines_a_never_finished_one(
    tmp_path: Path, torchscript_model: Path
) -> None:
    import time

    from tests.harness import DaemonProcess

    linear = np.full((48, 64, 3), 0.005)
    linear[10:30, 8:40] = 0.55
    data = dng(linear, orientation=6)
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings={
        "pipeline": {"target_size": 64},
        "watch": {"settle_seconds": 0.3, "incomplete_timeout_seconds": 4.0},
    })
    try:
        daemon.start()
        (daemon.input / "never.dng").write_bytes(data[: len(data) // 2])
        with open(daemon.input / "tethered.dng", "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            time.sleep(1.5)  # five settle windows: only the container check holds it back
            handle.write(data[len(data) // 2 :])
        daemon.wait_for(lambda: daemon.outputs() == ["tethered.png"] and len(daemon.quarantined()) == 1,
                        what="the cutout and the quarantined file")
        assert daemon.stop() == 0
    finally:
        daemon.kill_if_running()
    assert daemon.quarantined() == {"never.dng": "truncated"}
    with Image.open(daemon.output / "tethered.png") as cut:
        assert cut.mode == "RGBA" and cut.height > cut.width  # upright: the subject was stored on its side
    assert [job["path"] for job in daemon.jobs("done")] == ["tethered.dng"]
