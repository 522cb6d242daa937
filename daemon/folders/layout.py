"""Which files are inputs, and where each one's output goes.

An input `a/b/c.jpg` becomes `a/b/c.png`. Two inputs of one folder can share a
stem (`x.jpg`, `x.png`); they must not share an output. The rule: the first to
claim `x.png` keeps it, every later one gets its own extension in the name
(`x.png.png`, then a counter should even that be taken). "First" is sorted path
order in `cutout process` and arrival order in the daemon, whose queue remembers
every claim, so an output name never changes once given. Names are compared
case-insensitively because the default macOS filesystem is.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from daemon.pipeline.formats import is_image_name

OUTPUT_SUFFIX = ".png"
IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".download", ".partial")
"""Names of files still being downloaded or written by another program."""


def is_candidate_name(name: str) -> bool:
    """An image name that is not a temp, lock or hidden file."""
    lowered = name.lower()
    return is_input_name(name) and not name.startswith("~$") and not lowered.endswith(IGNORED_SUFFIXES)


def content_hash(path: Path) -> str:
    """The sha256 of a file's bytes, read a megabyte at a time (how a re-drop is recognised)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_input_name(name: str) -> bool:
    """Image extensions only; hidden files and AppleDouble `._*` files never are inputs."""
    return is_image_name(name)


NAME_MAX = 255
"""Bytes in one file name on every file system the daemon meets (APFS, ext4, SMB, NFS)."""


def display(rel: PurePosixPath | str) -> str:
    """A path for logs and messages: bytes that are not UTF-8 shown as escapes (`\\xff`), never lost."""
    return os.fsencode(str(rel)).decode("utf-8", "backslashreplace")


def storable(rel: PurePosixPath) -> PurePosixPath:
    """The name a path can be stored and shown under: bytes that are not UTF-8 become U+FFFD."""
    return PurePosixPath(os.fsencode(rel.as_posix()).decode("utf-8", "replace"))


def is_storable(rel: PurePosixPath) -> bool:
    """Whether the path is valid UTF-8 (a name from an SMB/NFS share or Linux disk may not be)."""
    try:
        rel.as_posix().encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def name_bytes(name: str) -> int:
    return len(os.fsencode(name))


def iter_inputs(root: Path) -> Iterator[PurePosixPath]:
    """Every input under `root`, as a relative POSIX path, skipping hidden folders."""
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        relative = PurePosixPath(Path(folder).relative_to(root).as_posix())
        for name in sorted(filenames):
            if is_input_name(name):
                yield relative / name


def claim_key(rel: PurePosixPath) -> str:
    """How two output names are compared: as APFS/HFS+ do, case- and normalisation-insensitively."""
    return unicodedata.normalize("NFC", rel.as_posix()).casefold()


def candidate_outputs(rel: PurePosixPath) -> Iterator[PurePosixPath]:
    """`x.png`, then `x.<ext>.png`, then `x.<ext>.2.png`, ... for input `x.<ext>`."""
    yield rel.with_suffix(OUTPUT_SUFFIX)
    yield rel.with_name(rel.name + OUTPUT_SUFFIX)
    count = 2
    while True:
        yield rel.with_name(f"{rel.name}.{count}{OUTPUT_SUFFIX}")
        count += 1
