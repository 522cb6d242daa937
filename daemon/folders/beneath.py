"""File operations beneath one of the daemon's own folders, never through a link inside them.

Anyone who can write in a shared output or quarantine folder could plant a link there
(`out/shop -> /elsewhere`): a path-based `mkdir(parents=True)` and `rename` would then write,
move and overwrite outside the folder. So every folder under one of the daemon's roots is
opened (and made) one component at a time with `O_NOFOLLOW`, and files are created, renamed
and checked relative to that open folder (`dir_fd`): a link anywhere on the way, or a folder
or other non-file entry where a file must go, is `PathBlocked`, never followed. The root
itself is the configured folder and may be a link (a volume mounted elsewhere).

    with folder_beneath(root, PurePosixPath("shop/day1")) as folder:   # made if missing
        check_name(folder, "x.png", shown=root / "shop/day1/x.png")      # nothing but a file there
        temp = stage(folder, data)                                        # whole and flushed
        os.replace(temp, "x.png", src_dir_fd=folder, dst_dir_fd=folder)
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath

from daemon.atomic import FILE_MODE, TEMP_SUFFIX, sync_file, temp_prefix
from daemon.errors import PathBlocked

_FOLDER = os.O_RDONLY | os.O_DIRECTORY


@contextmanager
def folder_beneath(root: Path, rel: PurePosixPath, *, create: bool = True) -> Iterator[int]:
    """An open descriptor of `root / rel`, every component below `root` opened without following
    a link (and made first when missing and `create`; the root too: it is the configured folder)."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, _FOLDER)
    try:
        for index, part in enumerate(rel.parts):
            if create:
                with suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
            try:
                inner = os.open(part, _FOLDER | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise PathBlocked(_blocked(root.joinpath(*rel.parts[: index + 1]), fd=fd, name=part)) from exc
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def check_name(folder: int, name: str, *, shown: Path) -> None:
    """Nothing at `name` in the open `folder`, or a regular file (to be replaced)."""
    try:
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise PathBlocked(_blocked(shown, fd=folder, name=name))


def stage(folder: int, data: bytes, *, mode: int = FILE_MODE, durable: bool = True) -> str:
    """`data` whole (and flushed, when `durable`) under a new temp name in the open `folder`."""
    temp = f"{temp_prefix()}{uuid.uuid4().hex[:10]}{TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                sync_file(handle.fileno())
            os.fchmod(handle.fileno(), mode)
    except BaseException:
        remove_quietly(folder, temp)
        raise
    return temp


def write_beneath(folder: int, name: str, data: bytes, *, shown: Path) -> None:
    """`name` in the open `folder` holds `data` whole, or its old bytes: never a mix, never a link followed."""
    check_name(folder, name, shown=shown)
    temp = stage(folder, data)
    try:
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        remove_quietly(folder, temp)
    sync_folder(folder)


def move_beneath(source: Path, root: Path, rel: PurePosixPath) -> None:
    """`source` to `root / rel`: a rename on one file system, else a whole, flushed copy under a
    temp name renamed into place, and only then the source removed."""
    with folder_beneath(root, rel.parent) as folder:
        check_name(folder, rel.name, shown=root / rel)
        try:
            os.rename(source, rel.name, dst_dir_fd=folder)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_across(source, folder, rel.name)
            source.unlink()
        sync_folder(folder)


def _copy_across(source: Path, folder: int, name: str) -> None:
    temp = f"{temp_prefix()}{uuid.uuid4().hex[:10]}{TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb") as target, open(source, "rb") as original:
            shutil.copyfileobj(original, target, 1 << 20)
            target.flush()
            sync_file(target.fileno())
            info = os.fstat(original.fileno())
            os.fchmod(target.fileno(), stat.S_IMODE(info.st_mode))
            os.utime(target.fileno(), ns=(info.st_atime_ns, info.st_mtime_ns))
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        remove_quietly(folder, temp)


def remove_quietly(folder: int, name: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=folder)


def sync_folder(folder: int) -> None:
    """Make the renames in the open `folder` durable (a no-op where folders cannot be flushed)."""
    with suppress(OSError):
        os.fsync(folder)


def _blocked(shown: Path, *, fd: int, name: str) -> str:
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    what = ("a symbolic link: the daemon never writes or moves anything through a link in its own folders"
            if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else
            "a file, where a folder must be" if stat.S_ISREG(mode) else "not a regular file")
    return f"{shown} is {what} (rename or remove it, then cutout retry the file)"
