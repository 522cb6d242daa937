"""Recognise image files and tell whether their bytes are complete.

OpenCV decodes a half-written JPEG as a full-size image with the missing part
grey, with only a warning on stderr. So completeness is checked here, from the
file's own structure, before anything is decoded: the JPEG end-of-image marker
found by walking the segments (so an EXIF thumbnail's marker cannot fool it and
trailing data after the image is allowed), the PNG `IEND` chunk by walking the
chunks.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import BinaryIO

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif", ".hif"}
)
RAW_SUFFIXES = frozenset(
    {".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf", ".rw2",
     ".pef", ".srw", ".3fr", ".fff", ".iiq", ".erf", ".mos", ".mrw", ".x3f", ".rwl"}
)
"""Camera RAW files: taken as inputs only to be refused with the export step to take instead."""

JPEG_SIGNATURE = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A marker is 0xFF followed by anything but a stuffed zero, a restart marker
# (both occur inside entropy-coded data) or another 0xFF (fill byte).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_EOI = 0xD9
_JPEG_STANDALONE = frozenset({0x01, _JPEG_EOI})


def jpeg_is_complete(data: bytes) -> bool:
    """True when the JPEG's segments lead to an end-of-image marker."""
    pos = len(JPEG_SIGNATURE)
    while (match := _JPEG_MARKER.search(data, pos)) is not None:
        marker = data[match.start() + 1]
        if marker == _JPEG_EOI:
            return True
        pos = match.end()
        if marker not in _JPEG_STANDALONE:
            if pos + 2 > len(data):
                return False
            pos += int.from_bytes(data[pos : pos + 2], "big")
    return False


def png_is_complete(data: bytes) -> bool:
    """True when the PNG's chunks lead to an `IEND` chunk."""
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IEND":
            return pos + 12 <= len(data)  # with its CRC: the writer got to the very end
        pos += 12 + length
    return False


_TIFF_ORDER = {b"II*\x00": "<", b"MM\x00*": ">"}
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257


def tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a TIFF's first IFD, without decoding: for files Pillow cannot open."""
    order = _TIFF_ORDER.get(data[:4])
    if order is None or len(data) < 8:
        return None
    offset = struct.unpack(order + "I", data[4:8])[0]
    if offset + 2 > len(data):
        return None
    found: dict[int, int] = {}
    for index in range(struct.unpack(order + "H", data[offset : offset + 2])[0]):
        entry = data[offset + 2 + 12 * index : offset + 14 + 12 * index]
        if len(entry) < 12:
            return None
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (_TIFF_WIDTH, _TIFF_HEIGHT):
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8 : 10 if kind == 3 else 12])[0]
    return (found[_TIFF_WIDTH], found[_TIFF_HEIGHT]) if len(found) == 2 else None


def header_truncation(head: bytes, size: int) -> str | None:
    """Incompleteness that the first bytes and the file size alone reveal (WebP, BMP, TIFF, HEIF)."""
    order = _TIFF_ORDER.get(head[:4])
    if order is not None and len(head) >= 8 and size < struct.unpack(order + "I", head[4:8])[0] + 2:
        return "TIFF is shorter than its header says (file is incomplete)"
    if head[4:8] == b"ftyp" and size < int.from_bytes(head[:4], "big"):
        return "HEIF is shorter than its first box says (file is incomplete)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 8:
        if size < 8 + int.from_bytes(head[4:8], "little"):
            return "WebP is shorter than its RIFF header says (file is incomplete)"
    if head[:2] == b"BM" and len(head) >= 6 and size < int.from_bytes(head[2:6], "little"):
        return "BMP is shorter than its header says (file is incomplete)"
    return None


def _png_file_complete(handle: BinaryIO) -> bool:
    """The PNG chunk walk by seeking from header to header: no pixel data is read."""
    handle.seek(len(PNG_SIGNATURE))
    while len(header := handle.read(8)) == 8:
        if header[4:8] == b"IEND":
            return len(handle.read(4)) == 4
        handle.seek(int.from_bytes(header[:4], "big") + 4, os.SEEK_CUR)
    return False


def _jpeg_file_complete(handle: BinaryIO, *, size: int) -> bool:
    """Segments by seeking up to the first scan, then the end-of-image marker at the end.

    Inside entropy-coded data 0xFF is always stuffed, so a file cut there cannot end
    in FF D9; a file with data after its end marker gets the full walk instead.
    """
    pos = len(JPEG_SIGNATURE)
    while True:
        handle.seek(pos)
        header = handle.read(4)
        if len(header) < 4 or header[0] != 0xFF or header[1] == 0xFF:
            break  # cut short, or fill bytes between segments: let the full walk decide
        if header[1] == 0xDA:  # start of scan: the headers are all there
            handle.seek(max(pos, size - 64))
            if handle.read().rstrip(b"\x00").endswith(b"\xff\xd9"):
                return True
            break
        pos += 2 + int.from_bytes(header[2:4], "big")
    handle.seek(0)
    return jpeg_is_complete(handle.read())


def file_truncation(path: Path) -> str | None:
    """`truncation()` for a file on disk, reading only headers and the tail where it can."""
    with open(path, "rb") as handle:
        head = handle.read(16)
        size = os.fstat(handle.fileno()).st_size
        if size == 0:  # a copy that created the file and has not written yet (SMB, some exporters)
            return "file is empty (it may still be being written)"
        if head.startswith(PNG_SIGNATURE):
            return None if _png_file_complete(handle) else "PNG has no IEND chunk (file is incomplete)"
        if head.startswith(JPEG_SIGNATURE):
            complete = _jpeg_file_complete(handle, size=size)
            return None if complete else "JPEG has no end-of-image marker (file is incomplete)"
        if head.startswith(b"GIF8"):
            handle.seek(max(0, size - 64))
            return truncation(head + handle.read()) if size > 16 else truncation(head)
    return header_truncation(head, size)


def png_has_late_chunks(data: bytes) -> bool:
    """Whether any chunk but IDAT/IEND follows the first IDAT (metadata after the pixels)."""
    pos, seen_idat = len(PNG_SIGNATURE), False
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IEND":
            return False
        if seen_idat and kind != b"IDAT":
            return True
        seen_idat = seen_idat or kind == b"IDAT"
        pos += 12 + length
    return False


def truncation(data: bytes) -> str | None:
    """Why `data` is an incomplete image file, or None when complete (or of a format not checked)."""
    if data.startswith(JPEG_SIGNATURE) and not jpeg_is_complete(data):
        return "JPEG has no end-of-image marker (file is incomplete)"
    if data.startswith(PNG_SIGNATURE) and not png_is_complete(data):
        return "PNG has no IEND chunk (file is incomplete)"
    if data.startswith(b"GIF8") and not data.rstrip(b"\x00").endswith(b";"):
        return "GIF has no trailer (file is incomplete)"
    return header_truncation(data[:16], len(data))


def is_image_name(name: str) -> bool:
    """An image (or RAW) by extension, any case, and not a hidden or AppleDouble (`._x`) file."""
    if name.startswith("."):
        return False
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_SUFFIXES | RAW_SUFFIXES
