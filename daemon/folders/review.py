"""The review folder's files: a doubtful cut-out waits there, at the path it would have in the
output folder, until a person approves it (moved into the output folder), rejects it (moved
into quarantine beside its original) or has it redone (its next result replaces it, wherever
that result goes).

Every move is a rename beneath our folders (beneath.py), so each file is whole in one place
or the other, never neither (on one volume never both; across volumes a move killed between
its copy and its unlink leaves both, and the next approve finishes it). A move killed half-way
leaves some of a job's files approved and some waiting; the job is still `review` in the store
(its done row is written in the same transaction as the moves, after them), and approving it
again moves the rest: the approve's mark (`approve_mark`) says that a file gone from the review
folder and in the output folder was moved by it, not an older cut-out of the same name.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path, PurePosixPath

from daemon.atomic import write_atomic
from daemon.errors import ConfigError, from_os_error
from daemon.folders.beneath import folder_beneath, move_beneath, remove_quietly, sync_folder
from daemon.folders.outputs import REJECTED_INFIX, Folders, free_target

APPROVING_PREFIX = ".cutout-approving-"


def review_folder(folders: Folders) -> Path:
    if folders.review is None:
        raise ConfigError("the review step is off: set review.folder in the config to use it")
    return folders.review


def is_file_beneath(root: Path, rel: PurePosixPath) -> bool:
    """A regular file at `root / rel`, reached without following a link below `root`."""
    try:
        with folder_beneath(root, rel.parent, create=False) as folder:
            return stat.S_ISREG(os.stat(rel.name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:  # missing, or a link or a file on the way (PathBlocked is one too)
        return False


def waiting(folders: Folders, names: Sequence[PurePosixPath]) -> list[PurePosixPath]:
    """Which of a job's files are in the review folder now."""
    return [rel for rel in names if is_file_beneath(review_folder(folders), rel)]


def approve_mark(folders: Folders, *, job_id: int, token: int) -> Path:
    """Written (durably) before an approve's first move, removed after its commit: while it is
    there, a file of that job missing from the review folder and present in the output folder was
    moved by that approve. Without it, such a file is an older cut-out of the same name, not this one."""
    return review_folder(folders) / f"{APPROVING_PREFIX}{job_id}-{token}"


def approving(
    folders: Folders, names: Sequence[PurePosixPath], *, source: str, mark: Path
) -> Callable[[], list[Path]]:
    """`publish()` for the store's `approve`: every file of the job moved from the review folder
    to the same path in the output folder. Checked first, all or none: each is in the review
    folder, or (`mark` there: an approve killed before its commit) already in the output folder."""
    review = review_folder(folders)
    resumed = mark.exists()
    lost = [rel for rel in names
            if not is_file_beneath(review, rel) and not (resumed and is_file_beneath(folders.output, rel))]
    if lost:
        raise ConfigError(f"cannot approve {source}: {review / lost[0]} is no longer in the review folder (moved "
                          "or deleted by hand?); `cutout review redo` makes it again")

    def publish() -> list[Path]:
        write_atomic(mark, b"")
        for rel in names:
            if is_file_beneath(review, rel):
                _move(review / rel, folders.output, rel)
        return [folders.output / rel for rel in names]

    return publish


def set_aside(folders: Folders, names: Sequence[PurePosixPath], *, beside: PurePosixPath) -> list[Path]:
    """A rejected job's files from the review folder to quarantine, beside its original (quarantined
    as `beside`), each as `<original>.cutout-<name>`, never over another file; where they now are."""
    review, moved = review_folder(folders), []
    for rel in waiting(folders, names):
        target = free_target(folders.quarantine, beside.with_name(f"{beside.name}{REJECTED_INFIX}{rel.name}"))
        _move(review / rel, folders.quarantine, target)
        moved.append(folders.quarantine / target)
    return moved


def forget_waiting(folders: Folders, names: Sequence[PurePosixPath]) -> None:
    """A job ended some other way (its new result published, or quarantined): its old cut-outs in
    the review folder go, so the folder holds only what waits for a person."""
    if folders.review is None:
        return
    for rel in names:
        with suppress(OSError), folder_beneath(folders.review, rel.parent, create=False) as folder:
            remove_quietly(folder, rel.name)
            sync_folder(folder)


def _move(source: Path, root: Path, rel: PurePosixPath) -> None:
    try:
        move_beneath(source, root, rel)
    except OSError as exc:
        raise from_os_error(exc, doing=f"moving {source} to {root / rel}") from exc
