"""An Adobe RGB (1998) ICC profile built from its published numbers, and the colour math to check it.

Tests must not ship binary blobs, and Pillow can only create sRGB/LAB/XYZ
profiles, so this writes a minimal ICC v2 matrix/TRC display profile byte by
byte: header, tag table, description, white point, the three D50-adapted
colorants and a gamma curve per channel.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

GAMMA = 563 / 256  # 2.19921875: Adobe RGB's gamma as the u8Fixed8 an ICC 'curv' stores
ADOBE_RGB_D50 = np.array(  # columns: red, green, blue colorants (XYZ, D50-adapted)
    [[0.60974, 0.20528, 0.14919], [0.31111, 0.62567, 0.06322], [0.01947, 0.06087, 0.74457]]
)
SRGB_D50 = np.array(  # the colorants of LittleCMS's built-in sRGB profile
    [[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169], [0.0139322, 0.0971045, 0.7141733]]
)
D50 = (0.9642, 1.0, 0.8249)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + b"\x00" * 4 + _s15(x) + _s15(y) + _s15(z)


def _curve(gamma: float) -> bytes:
    return b"curv" + b"\x00" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\x00\x00"


def _desc(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\x00"
    return b"desc" + b"\x00" * 4 + struct.pack(">I", len(ascii_text)) + ascii_text + b"\x00" * (8 + 3 + 67)


def _text(text: str) -> bytes:
    return b"text" + b"\x00" * 4 + text.encode("ascii") + b"\x00"


def _pad(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def adobe_rgb_profile() -> bytes:
    """The profile bytes: a valid ICC v2.1 RGB display profile LittleCMS accepts."""
    red, green, blue = ADOBE_RGB_D50.T
    tags = [
        (b"desc", _desc("Adobe RGB (1998) test profile")),
        (b"cprt", _text("No copyright, test data")),
        (b"wtpt", _xyz(*D50)),
        (b"rXYZ", _xyz(*red)),
        (b"gXYZ", _xyz(*green)),
        (b"bXYZ", _xyz(*blue)),
        (b"rTRC", _curve(GAMMA)),
        (b"gTRC", _curve(GAMMA)),
        (b"bTRC", _curve(GAMMA)),
    ]
    return _profile(b"mntrRGB XYZ ", tags)


def adobe_to_srgb(rgb: tuple[int, int, int]) -> npt.NDArray[np.float64]:
    """The same conversion done independently: decode gamma, to XYZ D50, to linear sRGB, encode."""
    linear = (np.asarray(rgb, dtype=np.float64) / 255.0) ** GAMMA
    srgb_linear = np.linalg.solve(SRGB_D50, ADOBE_RGB_D50 @ linear)
    clipped = np.clip(srgb_linear, 0.0, 1.0)
    encoded = np.where(clipped <= 0.0031308, 12.92 * clipped, 1.055 * clipped ** (1 / 2.4) - 0.055)
    return np.asarray(encoded * 255.0)


def _lab_of_srgb(rgb: tuple[int, int, int]) -> npt.NDArray[np.uint8]:
    """Pillow's 8-bit LAB encoding of an sRGB colour (LittleCMS, D50)."""
    from PIL import Image, ImageCms

    pixel = Image.fromarray(np.array([[rgb]], np.uint8))
    lab = ImageCms.profileToProfile(
        pixel, ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), outputMode="LAB"
    )
    assert lab is not None
    return np.asarray(lab)[0, 0]


def cmyk_profile() -> bytes:
    """A CMYK printer profile whose A2B0 is a 2x2x2x2 lut8 of naive ink mixes: enough for
    LittleCMS to convert with it, and different from Pillow's profile-less conversion."""
    grid = []
    for c, m, y, k in ((c, m, y, k) for c in (0, 1) for m in (0, 1) for y in (0, 1) for k in (0, 1)):
        rgb = tuple(round(255 * (1 - ink) * (1 - k)) for ink in (c, m, y))
        grid += [int(v) for v in _lab_of_srgb(rgb)]  # type: ignore[arg-type]
    identity = bytes(range(256))
    matrix = b"".join(_s15(1.0 if i == j else 0.0) for i in range(3) for j in range(3))
    lut = b"mft1" + b"\x00" * 4 + bytes([4, 3, 2, 0]) + matrix + identity * 4 + bytes(grid) + identity * 3
    return _profile(b"prtrCMYKLab ", [(b"desc", _desc("CMYK test profile")), (b"wtpt", _xyz(*D50)), (b"A2B0", lut)])


def _profile(classes: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """Header (device class, colour space, PCS), tag table, then the tags, 4-byte aligned."""
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += _pad(data)
    header = struct.pack(">I", offset + len(body)) + b"lcms" + struct.pack(">I", 0x02100000) + classes
    header += struct.pack(">6H", 2026, 11, 26, 0, 0, 0) + b"acsp" + b"\x00" * 24
    header += struct.pack(">I", 0) + _s15(D50[0]) + _s15(D50[1]) + _s15(D50[2])
    return header + b"\x00" * (128 - len(header)) + struct.pack(">I", len(tags)) + table + body
