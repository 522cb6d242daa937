"""Camera RAW files through LibRaw (rawpy, the optional `raw` extra): upright 16-bit sRGB.

So that a hot folder can sit on a tethered capture folder, the sensor data is demosaiced
here, with what LibRaw is asked for chosen to match what the rest of the pipeline expects:

- The camera's white balance (`use_camera_wb`: as shot, what the photographer saw on the
  tethering screen) and the camera's orientation (LibRaw's own flip, read from the file:
  the pixels come out upright, and the caller resets the EXIF tag so that nothing rotates
  them a second time).
- sRGB primaries with the sRGB tone curve (gamma 2.4, toe slope 12.92), not LibRaw's BT.709
  curve and not linear light: everything downstream works on sRGB-encoded values, like the
  seed's JPEG path (the model's normalisation, the cutout's colours, the sRGB chunk the
  encoder writes). Linear values would need converting before each of them, and would band
  once cut to 8 bits.
- 16 bits per channel: one demosaic serves both the model's 8-bit RGB (the high byte, as
  source.py does for 16-bit PNG and TIFF) and, with `bit_depth: source`, a 16-bit cutout that
  keeps the sensor's 12-14 bits of gradation, which an 8-bit decode would throw away.
- No automatic brightening: dcraw's default stretches every frame until 1 % of it clips, so
  the brightness of a series would depend on each frame's content. Here the camera's white
  level is white and the exposure stays the photographer's. Highlights are clipped (LibRaw's
  default), so blown areas stay white rather than turning pink.

A file LibRaw cannot read fails here as one of the project's errors, never as rawpy's own.
"""

from __future__ import annotations

import errno
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from daemon.errors import TooLarge, Undecodable, Unsupported
from daemon.pipeline.installs import RAW_EXTRA, RAW_UPGRADE

try:
    import rawpy
except ImportError:  # the `raw` extra is not installed (or LibRaw would not load)
    RAW_AVAILABLE = False
else:
    RAW_AVAILABLE = True

SRGB_GAMMA = (2.4, 12.92)
"""LibRaw's (power, toe slope) for the sRGB curve; its default (2.222, 4.5) is BT.709's."""


@dataclass(frozen=True)
class RawImage:
    rgb: npt.NDArray[np.uint16]
    """(H, W, 3) upright 16-bit sRGB."""
    capture_time: str | None
    """'YYYY-MM-DDTHH:MM:SS' as the camera recorded it, when the file says."""


def libraw_version() -> str:
    """'0.22.2', or 'not installed'."""
    return ".".join(map(str, rawpy.libraw_version)) if RAW_AVAILABLE else "not installed"


def decode_raw(data: bytes, *, name: str, check_size: Callable[[int, int], None]) -> RawImage:
    """The RAW file's pixels, demosaiced (see the module's docstring for how and why).

    `check_size(width, height)` is called with the size from the file's header, before the
    sensor data is unpacked: the caller's pixel limit refuses a bomb before any memory is spent.
    """
    if not RAW_AVAILABLE:
        raise Unsupported(
            f"{name} is a camera RAW file, and RAW support is not installed: {RAW_EXTRA}. "
            "Or export it as JPEG or TIFF (Capture One: Export Variants; Lightroom: File > Export) "
            "into the hot folder"
        )
    with _libraw(name), rawpy.imread(io.BytesIO(data)) as raw:
        check_size(raw.sizes.width, raw.sizes.height)
        rgb = raw.postprocess(
            use_camera_wb=True,
            output_color=rawpy.ColorSpace.sRGB,
            output_bps=16,
            gamma=SRGB_GAMMA,
            no_auto_bright=True,
        )
        taken = _capture_time(raw)
    if rgb.ndim == 3 and rgb.shape[2] == 1:  # a sensor without a colour filter (Leica Monochrom): grey
        rgb = np.repeat(rgb, 3, axis=2)
    if rgb.dtype != np.uint16 or rgb.ndim != 3 or rgb.shape[2] != 3:  # the contract of what follows
        raise Undecodable(f"{name}: LibRaw gave {rgb.dtype} pixels shaped {rgb.shape}, not 16-bit RGB")
    return RawImage(np.ascontiguousarray(rgb), taken)


def _capture_time(raw: rawpy.RawPy) -> str | None:
    """LibRaw's capture time: the EXIF date read as local time, turned back into local time
    by rawpy, so the camera's own clock reading. None when the file has none (the epoch), and
    with a rawpy without `RawPy.other` (0.25, the last release with wheels for Intel Macs)."""
    try:
        taken = getattr(raw, "other").timestamp
        none = datetime.fromtimestamp(0)
    except (AttributeError, OverflowError, OSError, ValueError):  # old rawpy, or a date out of range
        return None
    return None if not isinstance(taken, datetime) or taken == none else taken.isoformat(timespec="seconds")


@contextmanager
def _libraw(name: str) -> Iterator[None]:
    """rawpy's exceptions, translated where they happen into what the worker acts on.

    Running out of memory is not the file's fault: it becomes a plain MemoryError, which the
    worker retries like any other unexpected failure (and quarantines as internal_error after
    `queue.max_attempts`), rather than a verdict on the file.
    """
    try:
        yield
    except rawpy.LibRawTooBigError as exc:
        raise TooLarge(f"{name}: LibRaw refused it as too large to decode ({_said(exc)})") from exc
    except (rawpy.LibRawUnsufficientMemoryError, rawpy.LibRawMemPoolOverflowError) as exc:
        raise MemoryError(f"{name}: LibRaw ran out of memory decoding it ({_said(exc)})") from exc
    # rawpy itself raises the built-in exception for a colour filter layout it has no code for.
    except (rawpy.LibRawNotImplementedError, rawpy.NotSupportedError, NotImplementedError) as exc:
        raise Unsupported(
            f"{name}: LibRaw {libraw_version()} cannot decode this kind of RAW ({_said(exc)}): "
            f"update rawpy ({RAW_UPGRADE}), or export it as TIFF"
        ) from exc
    except rawpy.LibRawFileUnsupportedError as exc:
        raise Undecodable(
            f"{name}: LibRaw {libraw_version()} does not recognise it as a camera RAW file: it is damaged, "
            f"or its camera is newer than this LibRaw (update rawpy: {RAW_UPGRADE})"
        ) from exc
    except OSError as exc:  # rawpy raises OSError((errno, text)) for LibRaw's system errors
        if exc.args and isinstance(exc.args[0], tuple) and exc.args[0][:1] == (errno.ENOMEM,):
            raise MemoryError(f"{name}: LibRaw ran out of memory decoding it") from exc
        raise Undecodable(f"{name}: LibRaw could not read it: {_said(exc)}") from exc
    except (rawpy.LibRawError, AssertionError) as exc:  # AssertionError: rawpy's check of LibRaw's output
        raise Undecodable(f"{name}: LibRaw could not decode it: {type(exc).__name__}: {_said(exc)}") from exc


def _said(exc: BaseException) -> str:
    """What the exception says, readable: rawpy passes LibRaw's messages as bytes."""
    said = exc.args[0] if len(exc.args) == 1 else exc.args
    if isinstance(said, bytes):
        said = said.decode("utf-8", "replace")
    text = str(said).strip()
    return text.splitlines()[0] if text else "no detail"
