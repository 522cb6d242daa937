"""Which files the dashboard may serve: regular files under one of its roots, nothing else.

A request names a root (`input`, `output`, `quarantine`, `archive`) and a path relative to
it. The path is refused (None: the caller answers 404, saying nothing about what exists)
when it is absolute, has a `..` or an empty part, a NUL byte, does not exist, is not a
regular file, or resolves (through any symbolic link) outside the root's own real path.
URL-encoded tricks (`%2e%2e`, `%2f`) arrive here decoded, so they meet the same rules.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from stat import S_ISREG
from types import MappingProxyType
from typing import Mapping

from daemon.outputs import Folders

ROOTS = ("input", "output", "quarantine", "archive")


def roots_of(folders: Folders) -> Mapping[str, Path]:
    return MappingProxyType({name: getattr(folders, name) for name in ROOTS})


def safe_file(roots: Mapping[str, Path], root: str, relative: str) -> Path | None:
    """The real path of `relative` under root `root`, or None when it may not be served."""
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
