"""Broken files of every supported format fail as a JobError, never as the decoder's own exception.

A file's bytes are the one input nobody controls: a failed card reader, a half-synced
Dropbox, a buggy exporter. Whatever Pillow, pillow-heif or OpenCV raise on them must be
translated at the decode edge, or the worker retries the file as `internal_error` with
backoff instead of quarantining it at once.
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon.errors import JobError, Undecodable
from daemon.pipeline import PipelineParams, process_image
from daemon.pipeline.source import HEIF_AVAILABLE
from daemon.testing import BrightModel
from tests.conftest import subject_image

SMALL = PipelineParams(target_size=64)
"""The model input square: small, so hundreds of variants decode, infer and encode in seconds."""
VARIANTS = 1000
"""Mutants per format: with the fixed seeds below, enough to reach every decoder failure
found so far (TIFF's TypeError at variant 161, HEIC's SyntaxError at 410, BMP's cv2.error at 974)."""


def _subject() -> Image.Image:
    return Image.fromarray(subject_image(48, 64, (16, 12, 48, 36)))


def _encoded(fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    _subject().save(buffer, fmt, **params)
    return buffer.getvalue()


def _seeds() -> dict[str, bytes]:
    """One valid file per supported format (the README's list, plus GIF and HEIC)."""
    seeds = {
        "tif": _encoded("TIFF"),
        "jpg": _encoded("JPEG", exif=_exif_with_orientation()),
        "png": _encoded("PNG"),
        "webp": _encoded("WEBP"),
        "bmp": _encoded("BMP"),
        "gif": _encoded("GIF"),
    }
    if HEIF_AVAILABLE:
        seeds["heic"] = _encoded("HEIF")
    return seeds


def _exif_with_orientation() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def _mutants(good: bytes, *, seed: int, count: int) -> Iterator[bytes]:
    """Deterministic damage: bytes set or bit-flipped (mostly in the headers at either end,
    where the decoders' parsing lives), sometimes a run zeroed, sometimes the file cut short."""
    rng = random.Random(seed)
    for _ in range(count):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            edge = min(512, len(data))
            where = rng.choice((rng.randrange(edge), len(data) - 1 - rng.randrange(edge), rng.randrange(len(data))))
            data[where] = rng.choice((0x00, 0xFF, rng.randrange(256), data[where] ^ (1 << rng.randrange(8))))
        if rng.random() < 0.1:
            start = rng.randrange(len(data))
            data[start : start + 16] = bytes(len(data[start : start + 16]))
        if rng.random() < 0.2:
            data = data[: rng.randrange(1, len(data))]
        yield bytes(data)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", sorted(_seeds()))
def test_damaged_files_of_every_format_fail_only_as_job_errors(tmp_path: Path, suffix: str) -> None:
    good = _seeds()[suffix]
    path = tmp_path / f"photo.{suffix}"
    path.write_bytes(good)
    process_image(path, model=BrightModel(), params=SMALL)  # the undamaged seed is a valid photo
    foreign: list[str] = []
    outcomes: set[str] = set()
    for index, data in enumerate(_mutants(good, seed=sum(map(ord, suffix)), count=VARIANTS)):
        path.write_bytes(data)
        try:
            process_image(path, model=BrightModel(), params=SMALL)
            outcomes.add("decoded")
        except JobError as exc:
            outcomes.add(exc.reason)
        except Exception as exc:  # the finding: a decoder's own exception got through
            foreign.append(f"variant {index}: {type(exc).__name__}: {exc}")
    assert foreign == []
    assert outcomes - {"decoded"}, "no variant was damaged enough to fail: the sweep tests nothing"


def _two_page_tiff_without_second_width() -> bytes:
    """A two-page TIFF whose second page lost its ImageWidth tag (256). Pillow opens the
    first page, then counting the pages raises TypeError('Missing dimensions')."""
    buffer = io.BytesIO()
    _subject().save(buffer, "TIFF", save_all=True, append_images=[_subject()])
    data = bytearray(buffer.getvalue())
    (first,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[first : first + 2])
    (second,) = struct.unpack("<I", data[first + 2 + 12 * count : first + 6 + 12 * count])
    (count,) = struct.unpack("<H", data[second : second + 2])
    for index in range(count):
        entry = second + 2 + 12 * index
        if struct.unpack("<H", data[entry : entry + 2])[0] == 256:
            data[entry : entry + 2] = struct.pack("<H", 0xC000)  # a private tag nobody reads
            return bytes(data)
    raise AssertionError("Pillow wrote no ImageWidth tag on the second page")


def test_a_tiff_without_dimensions_is_undecodable_naming_what_the_decoder_said(tmp_path: Path) -> None:
    path = tmp_path / "no-width.tif"
    path.write_bytes(_two_page_tiff_without_second_width())
    with pytest.raises(Undecodable, match="TypeError: Missing dimensions") as raised:
        process_image(path, model=BrightModel(), params=SMALL)
    assert isinstance(raised.value.__cause__, TypeError)  # translated at the edge, the cause kept


def test_a_bmp_whose_size_opencv_refuses_is_undecodable(tmp_path: Path) -> None:
    # 2 MP passes our limit and Pillow's header read, but OpenCV refuses a width over
    # 2**20 with cv2.error: the file is as unreadable as any other.
    data = bytearray(_encoded("BMP"))
    data[18:26] = struct.pack("<ii", 2**21, 1)  # width, height
    path = tmp_path / "wide.bmp"
    path.write_bytes(bytes(data))
    with pytest.raises(Undecodable, match="OpenCV.*error"):
        process_image(path, model=BrightModel(), params=SMALL)


def test_a_damaged_icc_profile_falls_back_instead_of_failing(tmp_path: Path) -> None:
    # A CMYK JPEG is converted through its own profile; garbage there makes Pillow raise a
    # plain OSError (not PyCMSError), which must mean "use the plain conversion".
    cmyk = _subject().convert("CMYK")
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, "JPEG", icc_profile=b"\x00\x00\x01\x00" + b"CMYKgarbage" * 40)
    cutout = process_image(path, model=BrightModel(), params=SMALL).cutout
    assert cutout.png.startswith(b"\x89PNG") and cutout.foreground_fraction > 0
    assert np.asarray(Image.open(io.BytesIO(cutout.png))).shape[2] == 4
