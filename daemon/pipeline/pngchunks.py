"""Ancillary PNG chunks: colour profile, EXIF, XMP and capture time, added after IHDR.

OpenCV encodes the pixels (8 or 16 bits per channel, which Pillow cannot do for
RGBA) but writes no metadata; these chunks are spliced in right after IHDR,
where the PNG specification wants iCCP/sRGB (before IDAT).
"""

from __future__ import annotations

import struct
import zlib

from daemon.pipeline.formats import PNG_SIGNATURE

_IHDR_END = len(PNG_SIGNATURE) + 8 + 13 + 4
ICC_PROFILE_NAME = b"ICC Profile"
XMP_KEYWORD = b"XML:com.adobe.xmp"


def chunk(kind: bytes, body: bytes) -> bytes:
    """length, type, data, CRC of type and data."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def iccp(profile: bytes) -> bytes:
    return chunk(b"iCCP", ICC_PROFILE_NAME + b"\x00\x00" + zlib.compress(profile))


def srgb() -> bytes:
    """sRGB, perceptual intent: the pixels were converted to sRGB."""
    return chunk(b"sRGB", b"\x00")


def exif(raw: bytes) -> bytes:
    """eXIf holds the TIFF-structured EXIF, without JPEG's 'Exif\\0\\0' prefix."""
    return chunk(b"eXIf", raw)


def xmp(packet: bytes) -> bytes:
    """iTXt, uncompressed, no language: where Adobe's tools look for XMP in a PNG."""
    return chunk(b"iTXt", XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + packet)


def text(keyword: str, value: str) -> bytes:
    return chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace"))


def insert_after_header(png: bytes, chunks: list[bytes]) -> bytes:
    if not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG with IHDR first")
    return png[:_IHDR_END] + b"".join(chunks) + png[_IHDR_END:]
