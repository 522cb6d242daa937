"""Recognise image files and tell whether their bytes are complete.

OpenCV decodes a half-written JPEG as a full-size image with the missing part
grey, with only a warning on stderr. So completeness is checked here, from the
file's own structure, before anything is decoded: the JPEG end-of-image marker
found by walking the segments (so an EXIF thumbnail's marker cannot fool it and
trailing data after the image is allowed), the PNG `IEND` chunk by walking the
chunks. Camera RAW files, large and written slowly by tethering software, get a walk
of their container (`raw_truncation`): the TIFF directories of DNG/NEF/CR2/ARW/ORF/RW2,
the top-level boxes of CR3, the offsets in a RAF header.
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
"""Camera RAW files: decoded through LibRaw where the `raw` extra (rawpy) is installed, else
refused as unsupported with the command that installs it."""

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
    """`truncation()` for a file on disk, reading only headers and the tail where it can; for a
    file named as a camera RAW, its container's walk (`raw_truncation`, which source.py also
    runs before LibRaw: `truncation()` has no name to go by)."""
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
        if is_raw_name(path.name):
            return raw_truncation(handle, size=size) or header_truncation(head, size)
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


def is_raw_name(name: str) -> bool:
    """A camera RAW file by extension, any case: decoded by LibRaw, never by Pillow or OpenCV."""
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in RAW_SUFFIXES


# --- Camera RAW containers ------------------------------------------------------------------
# Tethering software writes a 50 MB RAW over seconds, and a RAW's pixel data sits at its end.
# Each walk below reads only the container's directories (a few kB wherever the file is) and
# answers one question: does everything they point at lie inside the file? They never raise:
# a pointer past the end means incomplete; what they cannot make sense of (an absurd entry
# count, a box shorter than its header) is left to LibRaw, since a false "incomplete" would
# hold a good file back and then quarantine it as truncated.

class _PastTheEnd(Exception):
    """Inside the walks only: a directory, value or data block lies past the end of the file."""


_RAW_TIFF_ORDER = {**_TIFF_ORDER, b"IIRO": "<", b"IIRS": "<", b"MMOR": ">", b"IIU\x00": "<"}
"""TIFF byte orders by header, with the magic numbers of Olympus ORF and Panasonic RW2."""
_TIFF_INTEGERS = {3: "H", 4: "I", 13: "I"}  # SHORT, LONG, IFD: the types that offsets and counts use
_TIFF_DATA = {273: 279, 324: 325, 513: 514}
"""Offsets tag -> byte counts tag: strips, tiles, and the JPEG preview of older RAWs."""
_TIFF_SUB_IFDS = 330
_MAX_DIRECTORIES = 64
_MAX_ENTRIES = 4096
_MAX_VALUES = 1 << 16  # strips or tiles per image: 120 MP in one-row strips is 12 000
_MAX_BOXES = 4096
_RAF_SIGNATURE = b"FUJIFILMCCD-RAW "


def _at(handle: BinaryIO, offset: int, length: int, *, size: int) -> bytes:
    """`length` bytes at `offset`, or _PastTheEnd when the file does not reach that far."""
    if offset + length > size:
        raise _PastTheEnd
    handle.seek(offset)
    data = handle.read(length)
    if len(data) < length:
        raise _PastTheEnd
    return data


def _tiff_values(handle: BinaryIO, entry: bytes, *, order: str, size: int) -> tuple[int, ...]:
    """An entry's SHORT/LONG/IFD values (inline or at their offset); () for any other type."""
    kind, count = struct.unpack(order + "HI", entry[2:8])
    code = _TIFF_INTEGERS.get(kind)
    if code is None or not 0 < count <= _MAX_VALUES:
        return ()
    length = count * struct.calcsize(code)
    stored = entry[8 : 8 + length] if length <= 4 else _at(
        handle, struct.unpack(order + "I", entry[8:12])[0], length, size=size
    )
    return struct.unpack(f"{order}{count}{code}", stored)


def _tiff_directory(handle: BinaryIO, offset: int, *, order: str, size: int) -> tuple[dict[int, tuple[int, ...]], int]:
    """The offset-bearing tags of the directory at `offset`, and the next directory's offset."""
    count = struct.unpack(order + "H", _at(handle, offset, 2, size=size))[0]
    if count > _MAX_ENTRIES:
        return {}, 0  # not a directory: nothing to judge here
    block = _at(handle, offset + 2, 12 * count + 4, size=size)
    wanted = {*_TIFF_DATA, *_TIFF_DATA.values(), _TIFF_SUB_IFDS}
    tags: dict[int, tuple[int, ...]] = {}
    for index in range(count):
        entry = block[12 * index : 12 * index + 12]
        tag = struct.unpack(order + "H", entry[:2])[0]
        if tag in wanted:
            tags[tag] = _tiff_values(handle, entry, order=order, size=size)
    return tags, struct.unpack(order + "I", block[-4:])[0]


def _tiff_data_end(tags: dict[int, tuple[int, ...]]) -> int:
    """Where the last strip, tile or preview of one directory ends."""
    ends = [
        start + length
        for offsets, counts in _TIFF_DATA.items()
        for start, length in zip(tags.get(offsets, ()), tags.get(counts, ()))
    ]
    return max(ends, default=0)


def _tiff_raw_truncation(handle: BinaryIO, *, order: str, first: int, size: int) -> str | None:
    """Every directory reachable from the header (the chain and SubIFDs, where NEF, ARW and
    DNG keep the sensor data) and every block of image data they point at must be inside."""
    todo, end = [first], 0
    seen: set[int] = set()
    while todo and len(seen) < _MAX_DIRECTORIES:
        offset = todo.pop()
        if offset < 8 or offset in seen:
            continue  # no directory (0), or a loop
        seen.add(offset)
        tags, following = _tiff_directory(handle, offset, order=order, size=size)
        end = max(end, _tiff_data_end(tags))
        todo += [following, *tags.get(_TIFF_SUB_IFDS, ())]
    return "camera RAW is shorter than its image data says (file is incomplete)" if end > size else None


def _bmff_truncation(handle: BinaryIO, *, size: int) -> str | None:
    """CR3 (ISO-BMFF, like HEIF): the top-level boxes (ftyp, moov, uuid..., mdat) must tile the file."""
    pos = 0
    for _ in range(_MAX_BOXES):
        if pos >= size:
            return None
        handle.seek(pos)
        header = handle.read(16)
        if len(header) < 8:
            raise _PastTheEnd
        length = int.from_bytes(header[:4], "big")
        if length == 1:  # a 64-bit size follows the type
            if len(header) < 16:
                raise _PastTheEnd
            length = int.from_bytes(header[8:16], "big")
        if length == 0:
            return None  # the last box, to the end of the file by definition
        if length < 8:
            return None  # not a box: nothing to judge
        if pos + length > size:
            kind = header[4:8].decode("latin-1")
            return f"camera RAW is shorter than its {kind!r} box says (file is incomplete)"
        pos += length
    return None


def _raf_truncation(handle: BinaryIO, *, size: int) -> str | None:
    """Fujifilm RAF: the header's (offset, length) pairs at byte 84 (JPEG preview), 92 (Fuji
    directory) and 100 (the sensor data, usually last) must end inside the file."""
    pairs = struct.unpack(">6I", _at(handle, 84, 24, size=size))
    end = max(start + length for start, length in zip(pairs[::2], pairs[1::2]))
    return "camera RAW (RAF) is shorter than its header says (file is incomplete)" if end > size else None


def raw_truncation(handle: BinaryIO, *, size: int) -> str | None:
    """Why a camera RAW file (by its container, whatever its name says) is incomplete, or None.

    Reads directories only, by seeking: cheap on a 100 MB file, as the watcher calls it at
    every settle check. Containers it does not know (CRW, X3F, MRW, ...) are left to the
    size/mtime rule and to LibRaw.
    """
    handle.seek(0)
    head = handle.read(16)
    if size < len(_RAF_SIGNATURE):  # shorter than the header of any RAW: the writer has only begun
        return "camera RAW is shorter than any RAW header (file is incomplete)"
    try:
        if (order := _RAW_TIFF_ORDER.get(head[:4])) is not None:
            first = struct.unpack(order + "I", head[4:8])[0]
            return _tiff_raw_truncation(handle, order=order, first=first, size=size)
        if head[4:8] == b"ftyp":
            return _bmff_truncation(handle, size=size)
        if head.startswith(_RAF_SIGNATURE):
            return _raf_truncation(handle, size=size)
    except _PastTheEnd:
        return "camera RAW is shorter than its directories say (file is incomplete)"
    return None


def is_image_name(name: str) -> bool:
    """An image (or RAW) by extension, any case, and not a hidden or AppleDouble (`._x`) file."""
    if name.startswith("."):
        return False
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_SUFFIXES | RAW_SUFFIXES
