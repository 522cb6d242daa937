"""Reading a photographer's file: upright pixels, its colour profile, depth, alpha and metadata.

OpenCV decodes the pixels wherever it can, so that an 8-bit sRGB JPEG gives
exactly the seed's pixels; Pillow reads the header first (size limits before
any pixel is decoded, orientation, ICC profile, EXIF, XMP, frames) and decodes
what OpenCV cannot (CMYK with its profile, GIF, animations, HEIC). Camera RAW files,
by name, go to LibRaw instead (raw.py), which gives upright 16-bit sRGB.

    bytes ─▶ probe (Pillow, header only) ─▶ limits ─▶ decode (OpenCV | Pillow)
          ─▶ orient (EXIF 1-8) ─▶ colour (keep the profile | convert to sRGB) ─▶ SourceImage
    RAW   ─▶ container check ─▶ limits ─▶ LibRaw (white balance, orientation, sRGB) ─▶ SourceImage
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms, UnidentifiedImageError

from daemon.errors import TooLarge, Truncated, Undecodable, Unsupported
from daemon.pipeline.constants import ImageOptions
from daemon.pipeline.formats import is_raw_name, png_has_late_chunks, raw_truncation, tiff_size
from daemon.pipeline.raw import RAW_AVAILABLE as RAW_AVAILABLE, decode_raw

try:  # HEIC/HEIF through the optional `heif` extra
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_AVAILABLE = True
except ImportError:
    HEIF_AVAILABLE = False

# Our own limit (ImageOptions.max_pixels) is checked from the header before decoding;
# Pillow's global bomb check would otherwise refuse or warn on 100 MP medium-format files.
Image.MAX_IMAGE_PIXELS = None

UInt8Array = npt.NDArray[np.uint8]
UInt16Array = npt.NDArray[np.uint16]
AlphaArray = npt.NDArray[np.float32]

ORIENTATION_TAG = 0x0112
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003
_OPENCV_FORMATS = frozenset({"JPEG", "PNG", "TIFF", "WEBP", "BMP", "MPO"})
_OPENCV_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "I;16", "I;16B", "I;16L", "I;16N"})
_SRGB = ImageCms.createProfile("sRGB")
_UNSUPPORTED_MODES = frozenset({"I", "F", "LAB", "HSV", "I;32", "I;32B", "I;32L"})

# What Pillow, pillow-heif and OpenCV raise on bytes they cannot make sense of. A fuzzed
# TIFF header gives TypeError("Missing dimensions"), a bad offset struct.error or
# IndexError, a short file EOFError, libheif RuntimeError, OpenCV cv2.error when its
# header disagrees with Pillow's. Each is a verdict on the file, not a bug of ours.
_DECODER_ERRORS: tuple[type[Exception], ...] = (
    OSError, ValueError, TypeError, SyntaxError, struct.error, EOFError, IndexError, KeyError,
    ZeroDivisionError, RuntimeError, cv2.error,
)
# A damaged ICC profile: ImageCmsProfile() raises OSError (not PyCMSError) on garbage bytes.
_PROFILE_ERRORS = (ImageCms.PyCMSError, OSError, ValueError, TypeError)


@dataclass(frozen=True)
class Metadata:
    """What the output PNG carries besides pixels (EXIF orientation already reset to 1)."""

    exif: bytes | None = None
    xmp: bytes | None = None
    capture_time: str | None = None


@dataclass(frozen=True)
class SourceImage:
    rgb: UInt8Array
    """(H, W, 3) upright 8-bit RGB: what the model sees and, at 8 bits, the output colours."""
    deep: UInt16Array | None = None
    """(H, W, 3) upright 16-bit RGB when the output keeps the source depth."""
    alpha: AlphaArray | None = None
    """(H, W) the source's own transparency in [0, 1], if it has any."""
    icc_profile: bytes | None = None
    """The profile to embed unchanged; None with `srgb` after a conversion."""
    srgb: bool = False
    metadata: Metadata = field(default_factory=Metadata)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Header:
    format: str
    mode: str
    width: int
    height: int
    frames: int
    icc_profile: bytes | None
    orientation: int
    metadata: Metadata
    notes: tuple[str, ...]


# --- The decoders' edge ------------------------------------------------------------------
@contextmanager
def _decoding(what: str) -> Iterator[None]:
    """Around every call into a decoder: what it raises on a broken file becomes Undecodable
    (TooLarge for Pillow's bomb check), naming what the decoder said, so the worker never
    sees a foreign exception caused by a file's bytes (it would retry it as internal_error).
    Pillow's warnings are silenced once at start-up (`daemon.logs.silence_decoder_warnings`),
    never here: this runs on the stage pool, where `catch_warnings()` is not thread-safe."""
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"{what}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise Undecodable(f"{what} (unknown or damaged format)") from exc
    except _DECODER_ERRORS as exc:
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise Undecodable(f"{what}: {type(exc).__name__}: {said}") from exc


# --- Probe ----------------------------------------------------------------------------
def _open(data: bytes) -> Image.Image:
    with _decoding("not a readable image"):
        return Image.open(io.BytesIO(data))


def _exif(image: Image.Image, data: bytes) -> tuple[Image.Exif | None, str | None]:
    """The EXIF block, or None and why, for a broken one (never fatal).

    Pillow's PNG getexif() decodes the whole image in case an eXIf chunk follows the
    pixels; when none can (nothing but IDAT after the first IDAT), the header's is read.
    """
    try:
        if image.format == "PNG" and not png_has_late_chunks(data):
            return Image.Image.getexif(image), None
        return image.getexif(), None
    except Exception as exc:  # a corrupt EXIF block must never fail the image
        return None, f"EXIF block unreadable, ignored ({type(exc).__name__})"


def _orientation(exif: Image.Exif | None) -> int:
    value = exif.get(ORIENTATION_TAG, 1) if exif is not None else 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _metadata(image: Image.Image, exif: Image.Exif | None) -> tuple[Metadata, str | None]:
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    xmp_bytes = xmp.encode() if isinstance(xmp, str) else xmp if isinstance(xmp, bytes) else None
    return _exif_metadata(exif, xmp=xmp_bytes)


def _exif_metadata(exif: Image.Exif | None, *, xmp: bytes | None) -> tuple[Metadata, str | None]:
    """The EXIF block to copy (orientation reset to 1), its capture time, and the XMP as given."""
    if exif is None or len(exif) == 0:
        return Metadata(xmp=xmp), None
    try:
        capture = exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL)
        exif[ORIENTATION_TAG] = 1  # the pixels are made upright: the tag must not rotate them again
        raw = exif.tobytes()
    except Exception as exc:  # unserialisable EXIF: keep the image, drop the block
        return Metadata(xmp=xmp), f"EXIF not copied ({type(exc).__name__})"
    return Metadata(exif=raw.removeprefix(b"Exif\x00\x00"), xmp=xmp, capture_time=_iso(capture)), None


def _iso(value: object) -> str | None:
    """EXIF 'YYYY:MM:DD HH:MM:SS' as 'YYYY-MM-DDTHH:MM:SS'."""
    if not isinstance(value, str) or len(value) < 19:
        return None
    return value[:10].replace(":", "-") + "T" + value[11:19]


def probe(data: bytes, *, options: ImageOptions) -> _Header:
    """Everything but the pixels, from the header; the size limit checked on it."""
    try:
        image = _open(data)
    except Undecodable:
        return _opencv_only(data, options=options)
    check_limits(image.width, image.height, options=options)
    exif, exif_note = _exif(image, data)
    orientation = _orientation(exif)  # before _metadata, which resets the tag for the copy
    metadata, metadata_note = _metadata(image, exif)
    with _decoding("damaged image header"):  # n_frames walks every frame's header (TIFF IFDs)
        frames = getattr(image, "n_frames", 1)
    return _Header(
        format=image.format or "",
        mode=image.mode,
        width=image.width,
        height=image.height,
        frames=frames,
        icc_profile=image.info.get("icc_profile") or None,
        orientation=orientation,
        metadata=metadata,
        notes=tuple(note for note in (exif_note, metadata_note) if note),
    )


def check_limits(width: int, height: int, *, options: ImageOptions) -> None:
    """Refuse decompression bombs from the header alone."""
    pixels = width * height
    if pixels > options.max_pixels:
        raise TooLarge(
            f"{width}x{height} is {pixels / 1e6:.0f} MP, above limits.max_pixels "
            f"({options.max_pixels / 1e6:.0f} MP); it was not decoded"
        )


def _opencv_only(data: bytes, *, options: ImageOptions) -> _Header:
    """A TIFF Pillow cannot read (12-bit packed samples) but OpenCV can: pixels, no metadata."""
    size = tiff_size(data)
    if size is None:
        raise Undecodable("not a readable image (unknown or damaged format)")
    check_limits(*size, options=options)
    return _Header("TIFF", "RGB", size[0], size[1], 1, None, 1, Metadata(), ("read by OpenCV only: no metadata",))


# --- Decode ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Pixels:
    color: UInt8Array | UInt16Array
    """(H, W, 3) RGB, uint8 or uint16, as stored (not yet upright)."""
    alpha: AlphaArray | None
    converted_to_srgb: bool = False
    upright: bool = False
    """True when the decoder already applied the orientation (OpenCV does for TIFF)."""


_TO_RGB = {1: cv2.COLOR_GRAY2RGB, 2: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}


def _split_opencv(decoded: npt.NDArray[Any]) -> _Pixels:
    """OpenCV's gray / gray+alpha / BGR / BGRA arrays as RGB and alpha (cvtColor: one fast pass)."""
    if decoded.ndim == 2:
        decoded = decoded[..., np.newaxis]
    channels = decoded.shape[2]
    color = np.asarray(cv2.cvtColor(decoded[..., :1] if channels == 2 else decoded, _TO_RGB[channels]), decoded.dtype)
    alpha = decoded[..., -1] if channels in (2, 4) else None
    scale = 65535.0 if decoded.dtype == np.uint16 else 255.0
    alpha_float = None if alpha is None else (alpha.astype(np.float32) / np.float32(scale))
    return _Pixels(color, alpha_float)


def _decode_opencv(data: bytes) -> _Pixels:
    with _decoding("not a readable image (OpenCV)"):
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0 or decoded.dtype not in (np.uint8, np.uint16):
        raise Undecodable("not a readable image (OpenCV could not decode it)")
    return _split_opencv(decoded)


def _decode_pillow(data: bytes, header: _Header) -> _Pixels:
    """First frame, through LittleCMS to sRGB when the colour space is not RGB (CMYK, gray profile)."""
    image = _open(data)
    with _decoding("not a readable image"):
        image.seek(0)
        image.load()
    if image.mode in _UNSUPPORTED_MODES:
        raise Unsupported(
            f"{image.mode} images (32-bit integer, floating point or Lab) are not supported: export 8- or 16-bit RGB"
        )
    if header.mode == "CMYK" or _profile_space(header.icc_profile) not in (None, "RGB "):
        with _decoding("colours could not be converted"):
            return _to_srgb_pixels(image, header.icc_profile)
    with _decoding("colours could not be converted"):
        rgba = np.asarray(image.convert("RGBA"))
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    alpha = rgba[..., 3].astype(np.float32) / np.float32(255.0) if has_alpha else None
    return _Pixels(np.ascontiguousarray(rgba[..., :3]), alpha)


def _to_srgb_pixels(image: Image.Image, profile: bytes | None) -> _Pixels:
    """Through LittleCMS to sRGB (CMYK, a grey profile); the alpha, if any, is set aside first."""
    alpha = None
    if "A" in image.getbands():
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / np.float32(255.0)
        image = image.convert(image.mode.replace("A", "") or "L")
    if profile is not None:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
            if converted is not None:
                return _Pixels(np.asarray(converted, dtype=np.uint8), alpha, converted_to_srgb=True)
        except _PROFILE_ERRORS:
            pass  # a broken profile: fall back to Pillow's plain conversion below
    return _Pixels(np.asarray(image.convert("RGB"), dtype=np.uint8), alpha, converted_to_srgb=True)


def _profile_space(profile: bytes | None) -> str | None:
    """The ICC header's data colour space ('RGB ', 'GRAY', 'CMYK'), if there is a profile."""
    return profile[16:20].decode("latin-1") if profile and len(profile) >= 20 else None


def decode_pixels(data: bytes, header: _Header) -> _Pixels:
    # A multi-page TIFF is a document, not an animation: OpenCV reads its first page at full depth.
    single = header.frames == 1 or header.format == "TIFF"
    use_opencv = header.format in _OPENCV_FORMATS and header.mode in _OPENCV_MODES and single
    if use_opencv and _profile_space(header.icc_profile) in (None, "RGB "):
        pixels = _decode_opencv(data)
        # OpenCV's TIFF decoder orients the image itself, whatever the flags (tested for all 8).
        return replace(pixels, upright=header.format == "TIFF")
    return _decode_pillow(data, header)


# --- Orientation ------------------------------------------------------------------------
def orient(array: npt.NDArray[np.generic], orientation: int) -> npt.NDArray[np.generic]:
    """EXIF orientation 1-8 applied to an (H, W, ...) array, so the result is upright."""
    transposed = np.swapaxes(array, 0, 1)
    upright = {
        1: array,
        2: array[:, ::-1],
        3: array[::-1, ::-1],
        4: array[::-1],
        5: transposed,
        6: transposed[:, ::-1],
        7: transposed[::-1, ::-1],
        8: transposed[::-1],
    }[orientation]
    return np.ascontiguousarray(upright)


# --- Colour -------------------------------------------------------------------------------
def _convert_rgb_to_srgb(rgb: UInt8Array, profile: bytes) -> UInt8Array | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        converted = ImageCms.profileToProfile(Image.fromarray(rgb), source, _SRGB, outputMode="RGB")
    except _PROFILE_ERRORS:
        return None
    return None if converted is None else np.asarray(converted, dtype=np.uint8)


def _eight_bit(color: UInt8Array | UInt16Array) -> UInt8Array:
    """16-bit to 8-bit by the high byte, as OpenCV's IMREAD_COLOR does for PNG (the seed's
    IMREAD_COLOR path rounds TIFFs instead: at most one level apart)."""
    if color.dtype == np.uint16:
        return (color >> 8).astype(np.uint8)
    return color.astype(np.uint8, copy=False)


# --- Camera RAW -----------------------------------------------------------------------------
_RAW_CONTAINER_TAGS = frozenset({
    254, 256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 322, 323, 324, 325, 330, 513, 514,
    33421, 33422, 0x02BC,  # layout of the container's own images, its CFA pattern, and XMP (kept apart)
})
"""IFD0 tags of a TIFF-based RAW that describe the RAW's container, not the photograph: their
offsets and sizes mean nothing in the cutout's EXIF. So do the DNG tags (colour matrices,
calibration, private data: 50706-52999)."""


def _raw_exif(data: bytes) -> tuple[Metadata, tuple[str, ...]]:
    """EXIF from a TIFF-based RAW's first directory (DNG, NEF, CR2, ARW: what the camera wrote,
    Exif sub-IFD included), without the container's tags; CR3, RAF, ORF and RW2 give none."""
    try:
        exif = Image.Exif()
        exif.load(data)
        xmp = exif.get(0x02BC)
        for tag in [tag for tag in exif if tag in _RAW_CONTAINER_TAGS or 50706 <= tag < 53000]:
            del exif[tag]
    except Exception as exc:  # a damaged or non-TIFF container: the pixels matter, not the EXIF
        return Metadata(), (f"EXIF not read from the RAW container ({type(exc).__name__})",)
    xmp_bytes = bytes(xmp) if isinstance(xmp, (bytes, tuple)) else xmp.encode() if isinstance(xmp, str) else None
    metadata, note = _exif_metadata(exif, xmp=xmp_bytes)
    return metadata, (note,) if note else ()


def read_raw(data: bytes, *, name: str, options: ImageOptions) -> SourceImage:
    """A camera RAW: its container checked whole, its header size limited, then LibRaw.

    LibRaw has already turned the pixels upright and into sRGB: no orientation is applied
    here, and the EXIF copy has its orientation reset like every other format's.
    """
    if RAW_AVAILABLE and (why := raw_truncation(io.BytesIO(data), size=len(data))) is not None:
        raise Truncated(why)
    decoded = decode_raw(data, name=name, check_size=lambda width, height: check_limits(width, height, options=options))
    metadata: Metadata = Metadata()
    notes: tuple[str, ...] = ()
    if options.keep_metadata:
        metadata, notes = _raw_exif(data) if data[:4] in (b"II*\x00", b"MM\x00*") else (Metadata(), ())
        metadata = replace(metadata, capture_time=metadata.capture_time or decoded.capture_time)
    deep = decoded.rgb if options.bit_depth == "source" else None
    return SourceImage(_eight_bit(decoded.rgb), deep, None, None, True, metadata, notes)


# --- Together -----------------------------------------------------------------------------
def read_source(data: bytes, *, name: str, options: ImageOptions) -> SourceImage:
    """The file's bytes as an upright SourceImage, or a JobError that says why not."""
    if is_raw_name(name):
        return read_raw(data, name=name, options=options)
    header = probe(data, options=options)
    pixels = decode_pixels(data, header)
    notes = header.notes + (("several frames or pages: the first one only",) if header.frames > 1 else ())
    orientation = 1 if pixels.upright else header.orientation
    color = orient(pixels.color, orientation)
    alpha = None if pixels.alpha is None else orient(pixels.alpha, orientation)
    rgb = _eight_bit(color)  # type: ignore[arg-type]
    deep = color if options.bit_depth == "source" and color.dtype == np.uint16 else None
    icc, srgb = (None, True) if pixels.converted_to_srgb else (header.icc_profile, False)
    if options.convert_to_srgb and icc is not None:
        converted = _convert_rgb_to_srgb(rgb, icc)
        if converted is not None:
            rgb, icc, srgb, deep = converted, None, True, None
    metadata = header.metadata if options.keep_metadata else Metadata()
    return SourceImage(rgb, deep, alpha, icc, srgb, metadata, notes)  # type: ignore[arg-type]
