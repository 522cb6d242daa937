"""Which files the dashboard may serve: regular files under one of its roots, nothing else.

A request names a root (`input`, `output`, `quarantine`, `archive`, and `review` while the
review step is on) and a path relative to it. The path is refused (None: the caller answers
404, saying nothing about what exists) when it is absolute, has a `..` or an empty part, a NUL
byte, does not exist, is not a regular file, or resolves (through any symbolic link) outside the
root's own real path.
URL-encoded tricks (`%2e%2e`, `%2f`) arrive here decoded, so they meet the same rules.

Checked, then opened, is not enough: whoever can write in the hot folder could swap a checked
folder for a link between the two. So `open_file` opens what the check resolved one component
at a time from the root, never following a link (`O_NOFOLLOW` at each step), and the answer
is served from that open descriptor: a swap after the check makes the open fail (404), never
reach outside.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from types import MappingProxyType
from typing import BinaryIO, Mapping

from daemon.folders.outputs import Folders

ROOTS = ("input", "output", "quarantine", "archive", "review")


def roots_of(folders: Folders) -> Mapping[str, Path]:
    """Each root the dashboard serves and its folder: `review` only while the review step is on."""
    found = {name: getattr(folders, name) for name in ROOTS}
    return MappingProxyType({name: path for name, path in found.items() if path is not None})


@dataclass(frozen=True)
class OpenFile:
    """A regular file under a root, open for reading: serve `handle`, never the path again."""

    path: Path
    handle: BinaryIO
    size: int
    mtime_ns: int


def open_file(roots: Mapping[str, Path], root: str, relative: str) -> OpenFile | None:
    """`relative` under root `root` opened as `safe_file` resolves it, without following a link
    on the way; None when it may not be served (or changed into a link since the check). The
    caller closes `handle`."""
    real = safe_file(roots, root, relative)
    base = roots.get(root)
    return None if real is None or base is None else _open_beneath(base.resolve(), real)


def _open_beneath(base: Path, real: Path) -> OpenFile | None:
    """Open `real` by walking down from `base`, each folder `O_NOFOLLOW | O_DIRECTORY`, the file
    `O_NOFOLLOW | O_NONBLOCK` (a FIFO must not hang the request), then check it is a regular file."""
    *folders, name = real.relative_to(base).parts
    try:
        with ExitStack() as closing:
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
            closing.callback(os.close, fd)
            for folder in folders:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                closing.callback(os.close, fd)
            file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except OSError:  # swapped for a link, gone, or not a folder any more
        return None
    handle = os.fdopen(file_fd, "rb")
    info = os.fstat(file_fd)
    if not S_ISREG(info.st_mode):
        handle.close()
        return None
    return OpenFile(real, handle, info.st_size, info.st_mtime_ns)


def safe_file(roots: Mapping[str, Path], root: str, relative: str) -> Path | None:
    """The real path of `relative` under root `root`, or None when it may not be served. Only
    a check: open what it allows with `open_file`."""
    base = roots.get(root)
    if base is None or not relative or "\x00" in relative or relative.startswith("/"):
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    try:
        real_base = base.resolve(strict=True)
        real = (real_base / PurePosixPath(relative)).resolve(strict=True)
        mode = real.stat().st_mode
    except (OSError, RuntimeError, ValueError):  # missing, a link loop, an unusable name
        return None
    if not real.is_relative_to(real_base) or not S_ISREG(mode):
        return None
    return real
