"""Thumbnails: made when first asked for, at a bounded size, cached in the state folder, capped.

- A JPEG is decoded at 1/2, 1/4 or 1/8 of its size straight from the file (Pillow's draft
  mode: libjpeg's DCT scaling), so a 50 MP original costs a fraction of its full decode.
- Anything over `limits.max_pixels` is never decoded (the daemon would not either).
- One thumbnail is made at a time (a semaphore): the dashboard takes at most one core from
  the worker, however many phones are looking.
- The cache key is the file's path, size and mtime and the thumbnail's size, so a replaced
  file gets a new thumbnail. When the cache passes `dashboard.thumbnail_cache_mb`, the least
  recently served files go until it is under 80 % of that.
- WebP keeps the cutout's transparency at a tenth of a PNG's size (Safari 14+, Chrome, Firefox).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from daemon.atomic import make_private_dir, write_atomic
from daemon.companions.dashboard.paths import OpenFile

THUMBS_FOLDER = "thumbnails"
MEDIA_TYPE = "image/webp"
QUALITY = 80
TRIM_TO = 0.8
"""After passing the cap, the cache is trimmed to this fraction of it."""


class ThumbCache:
    """Thumbnails of image files, under `folder`, at most `max_bytes` of them."""

    def __init__(self, folder: Path, *, max_bytes: int, max_pixels: int) -> None:
        self.folder, self.max_bytes, self.max_pixels = folder, max_bytes, max_pixels
        self._making = threading.Semaphore(1)
        self._lock = threading.Lock()
        self._total: int | None = None

    def get(self, source: OpenFile, *, size: int) -> Path | None:
        """The thumbnail of `source` (longer side at most `size`), or None when it does not decode."""
        key = hashlib.sha256(f"{source.path}\0{source.size}\0{source.mtime_ns}\0{size}".encode()).hexdigest()
        target = self.folder / f"{key[:32]}.webp"
        if target.exists():
            _touch(target)
            return target
        with self._making:
            if target.exists():  # made by the request that held the semaphore
                return target
            data = make_thumbnail(source.handle, size=size, max_pixels=self.max_pixels)
            if data is None:
                return None
            make_private_dir(self.folder)
            write_atomic(target, data, durable=False)
        self._added(len(data))
        return target

    def _added(self, size: int) -> None:
        with self._lock:
            if self._total is None:
                self._total = sum(f.stat().st_size for f in self._files())
            else:
                self._total += size
            if self._total > self.max_bytes:
                self._total = self._trim()

    def _files(self) -> list[Path]:
        try:
            return [f for f in self.folder.iterdir() if f.suffix == ".webp"]
        except OSError:
            return []

    def _trim(self) -> int:
        """Remove the least recently served thumbnails until under TRIM_TO of the cap; the new total."""
        found = []
        for file in self._files():
            try:
                stat = file.stat()
            except OSError:
                continue
            found.append((stat.st_mtime, stat.st_size, file))
        found.sort()
        total = sum(size for _, size, _ in found)
        for _, size, file in found:
            if total <= self.max_bytes * TRIM_TO:
                break
            file.unlink(missing_ok=True)
            total -= size
        return total


def _touch(path: Path) -> None:
    try:
        os.utime(path)  # mtime = last served: what the trim goes by
    except OSError:
        pass


def make_thumbnail(source: Path | BinaryIO, *, size: int, max_pixels: int) -> bytes | None:
    """WebP bytes of `source` scaled to fit `size` x `size`, upright, alpha kept; None if it does not decode."""
    try:  # Pillow's warnings (a big image among them: our own limit is checked below) are silenced at start
        with Image.open(source) as image:
            if image.width * image.height > max_pixels:
                return None
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, never the full 50 MP
            return _encode(ImageOps.exif_transpose(image), size=size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError):
        return None


def _encode(image: Image.Image, *, size: int) -> bytes:
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    has_alpha = "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info)
    image = image.convert("RGBA" if has_alpha else "RGB")
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=QUALITY, method=4)
    return out.getvalue()
