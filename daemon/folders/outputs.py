"""The folders, and every file operation the daemon makes in them.

Nothing here deletes an original except `originals: delete`, and only after its
cutout is on disk. Failed originals move to the quarantine folder at the same
relative path, with `<name>.error.json` beside them.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from daemon import __version__
from daemon.atomic import access_problem, make_private_dir, sync_dir
from daemon.errors import ConfigError, PathBlocked, from_os_error
from daemon.folders.beneath import check_name, folder_beneath, move_beneath, remove_quietly, stage, sync_folder, write_beneath
from daemon.folders.layout import NAME_MAX, name_bytes

ERROR_SUFFIX = ".error.json"
REJECTED_INFIX = ".cutout-"
"""A rejected cut-out lies in quarantine beside its original as `<original>.cutout-<its name>`."""

OriginalsPolicy = Literal["keep", "archive", "delete"]
"""What happens to an original once its cut-out is on disk (`originals:` in the config)."""


@dataclass(frozen=True)
class Folders:
    """Absolute, validated folders of one daemon."""

    input: Path
    output: Path
    quarantine: Path
    archive: Path
    state: Path
    review: Path | None = None
    """Where doubtful cut-outs wait for a person (`review.folder`); None: the review step is off."""

    def claimed(self) -> dict[str, Path]:
        """The folders one daemon (or one fleet) owns: `.cutout-claim.json` in each (claims.py)."""
        return {"hot": self.input, "output": self.output, **({"review": self.review} if self.review else {})}

    def written(self) -> tuple[Path, ...]:
        """The folders the daemon writes files into, whose leftover temp files a start sweeps."""
        return (self.output, self.quarantine, self.archive, *((self.review,) if self.review else ()))

    @classmethod
    def resolved(cls, *, input: Path, output: Path, quarantine: Path | None, archive: Path | None,
                 state: Path, review: Path | None = None) -> Folders:
        """Absolute, with the quarantine and the archive beside the output folder unless given."""
        output = _absolute(output)
        return cls(
            input=_absolute(input),
            output=output,
            quarantine=_absolute(quarantine or output.parent / "quarantine"),
            archive=_absolute(archive or output.parent / "archive"),
            state=_absolute(state),
            review=None if review is None else _absolute(review),
        )


def _absolute(path: Path) -> Path:
    """Absolute with symlinks resolved: FSEvents reports real paths (/private/tmp, ...)."""
    return Path(os.path.realpath(path.expanduser()))


# --- Which folders may share a place: none -------------------------------------------
ROLES = ("input", "output", "quarantine", "archive", "review", "state")
"""The daemon's folders in the order the rules name them (the first of a colliding pair first)."""

_CONSEQUENCES: dict[frozenset[str], str] = {
    frozenset({"input", "output"}): "cutouts would overwrite PNG originals or come back as new inputs",
    frozenset({"input", "quarantine"}): "quarantined originals would come back as new inputs",
    frozenset({"input", "archive"}): "archived originals would come back as new inputs",
    frozenset({"output", "quarantine"}): "the cutout of c.jpg could overwrite a quarantined original c.png",
    frozenset({"output", "archive"}): "the cutout of c.jpg could overwrite an archived original c.png",
    frozenset({"quarantine", "archive"}): "failed and finished originals would be mixed up",
    frozenset({"input", "review"}): "cut-outs waiting for review would come back as new inputs",
    frozenset({"output", "review"}): "cut-outs waiting for review would be delivered unseen",
    frozenset({"quarantine", "review"}): "a cut-out waiting for review could overwrite a quarantined original",
    frozenset({"archive", "review"}): "a cut-out waiting for review could overwrite an archived original",
}
_STATE_CONSEQUENCE = "the queue database and the lock would sit among the images"


def used_folders(folders: Folders, *, policy: OriginalsPolicy) -> dict[str, Path]:
    """The folders a daemon with this originals policy touches: the archive only with `archive`,
    the review folder only when the review step is on."""
    named = {role: path for role in ROLES if (path := getattr(folders, role)) is not None}
    if policy != "archive":
        del named["archive"]
    return named


def check_folder_rules(named: dict[str, Path], *, labels: dict[str, str] | None = None) -> None:
    """Refuse any two of `named` (role -> folder) that are one folder or nested, naming both.

    `labels` says how a message names a role (default: its key, `folders.<role>`).
    """
    label = {role: f"folders.{role}" for role in named} | {"review": "review.folder"} | (labels or {})
    roles = [role for role in ROLES if role in named]
    for index, first in enumerate(roles):
        for second in roles[index + 1 :]:
            relation = folder_relation(named[second], named[first])
            if relation is not None:
                consequence = _CONSEQUENCES.get(frozenset({first, second}), _STATE_CONSEQUENCE)
                raise ConfigError(
                    f"{label[second]} ({named[second]}) {relation} {label[first]} ({named[first]}): "
                    f"{consequence}; give each its own folder, neither inside the other"
                )


def same_or_nested(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one folder or one contains the other, as the file system sees
    them: after symlinks and `..`, ignoring case where the file system does (macOS's default)."""
    return folder_relation(a, b) is not None


def folder_relation(a: Path, b: Path) -> str | None:
    """How `a` lies relative to `b`: "is the same folder as", "is inside", "contains", or None."""
    a_in_b, b_in_a = _inside(a, b), _inside(b, a)
    if a_in_b and b_in_a:
        return "is the same folder as"
    return "is inside" if a_in_b else "contains" if b_in_a else None


def _inside(inner: Path, outer: Path) -> bool:
    """`inner` is `outer` or below it: by name, or by inode for what exists (a hard link, a
    bind mount, another spelling the file system accepts)."""
    real_inner, real_outer = _absolute(inner), _absolute(outer)
    fold = is_case_insensitive(real_inner) or is_case_insensitive(real_outer)
    if parts_inside(real_inner.parts, real_outer.parts, fold_case=fold):
        return True
    try:
        target = os.stat(real_outer)
    except OSError:
        return False  # nothing exists below a folder that does not exist
    existing = _nearest_existing(real_inner)
    return any(_same_inode(place, target) for place in (existing, *existing.parents))


def parts_inside(inner: tuple[str, ...], outer: tuple[str, ...], *, fold_case: bool) -> bool:
    """The path `inner` (as parts) equals or lies below `outer`, comparing names case-blind when `fold_case`."""
    if len(inner) < len(outer):
        return False
    if fold_case:
        inner, outer = tuple(p.casefold() for p in inner), tuple(p.casefold() for p in outer)
    return inner[: len(outer)] == outer


def _same_inode(path: Path, target: os.stat_result) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (target.st_dev, target.st_ino)


def is_case_insensitive(path: Path) -> bool:
    """Whether the file system holding `path` (or its nearest existing folder) ignores the case
    of names: the nearest existing name with letters, spelled with its case swapped, is the same file."""
    existing = _nearest_existing(path)
    for place in (existing, *existing.parents):
        swapped = place.with_name(place.name.swapcase()) if place.name else place
        if swapped != place:
            try:
                return os.path.samefile(swapped, place)
            except OSError:  # the other spelling does not exist: case matters here
                return False
    return False


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# --- Start-up checks ------------------------------------------------------------------
def validate_folders(folders: Folders, *, policy: OriginalsPolicy, state_files: tuple[str, ...] = ()) -> None:
    """Refuse what would loop or lose files (two folders in one place, one inside another), a
    missing hot folder, a folder it cannot write, and `state_files` in the state folder it
    cannot read and write. Creates missing folders (the state folder private, 0700)."""
    if not folders.input.is_dir():
        raise ConfigError(f"folders.input: hot folder {folders.input} does not exist (create it first)")
    named = used_folders(folders, policy=policy)
    check_folder_rules(named)
    for name, path in named.items():
        ensure_writable(path, label="review.folder" if name == "review" else f"folders.{name}", private=name == "state")
    check_state_files(folders.state, names=state_files)


def check_state_files(state: Path, *, names: tuple[str, ...]) -> None:
    """Refuse a queue or lock file this user cannot read and write (made by `sudo cutout ...`,
    a chmod, an immutable flag) now, with the fix, instead of a traceback later."""
    for name in names:
        path = state / name
        problem = access_problem(path) if path.is_file() else None
        if problem is not None:
            raise ConfigError(f"folders.state: {problem}")


def ensure_writable(path: Path, *, label: str, private: bool = False) -> None:
    """The folder `path` exists (made if missing; `private`: 0700) and this user can write in it."""
    try:
        if private:
            make_private_dir(path)
        else:
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot create {path}: {exc.strerror or exc}") from exc
    problem = access_problem(path, folder=True)
    if problem is not None:
        raise ConfigError(f"{label}: {problem}")


# --- Moves -----------------------------------------------------------------------
def free_name(path: Path, *, reserved: Collection[Path] = ()) -> Path:
    """`path`, or `name (2).ext`, `name (3).ext`, ... if something is already there (or the
    name is `reserved`: another move is on its way to it)."""
    candidate, count = path, 2
    while (candidate in reserved or candidate.exists()
           or candidate.with_name(candidate.name + ERROR_SUFFIX).exists()):
        candidate = path.with_name(f"{path.stem} ({count}){path.suffix}")
        count += 1
    return candidate


@dataclass(frozen=True)
class ErrorReport:
    """What `<name>.error.json` says about a quarantined file."""

    file: str
    reason: str
    message: str
    attempts: int
    first_seen: float
    last_attempt: float

    def to_json(self, *, quarantined_as: Path) -> bytes:
        body = {
            "file": self.file,
            "quarantined_as": str(quarantined_as),
            "reason": self.reason,
            "message": self.message,
            "attempts": self.attempts,
            "first_seen": _iso(self.first_seen),
            "last_attempt": _iso(self.last_attempt),
            "version": __version__,
        }
        return (json.dumps(body, indent=2) + "\n").encode()


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def error_file(path: Path) -> Path:
    return path.with_name(path.name + ERROR_SUFFIX)


def quarantine_target(
    folders: Folders, rel: PurePosixPath, *, previous: PurePosixPath | None, reserved: Collection[PurePosixPath] = ()
) -> PurePosixPath:
    """Where a failed original goes, relative to the quarantine folder.

    A retried file that fails again goes back to its previous place (its error file is
    rewritten); anything else never overwrites: `name (2).ext`, ... A place whose folders cross
    a link or a file (planted in the quarantine folder) is never used: the file goes to the
    quarantine folder's top instead, its folders joined into its name (`shop__x.jpg`).
    """
    if (previous is not None and previous not in reserved and not (folders.quarantine / previous).exists()
            and clear_path(folders.quarantine, previous)):
        return previous
    return free_target(folders.quarantine, rel, room=len(ERROR_SUFFIX) + len(" (99)"), reserved=reserved)


def free_target(
    root: Path, rel: PurePosixPath, *, room: int = len(" (99)"), reserved: Collection[PurePosixPath] = ()
) -> PurePosixPath:
    """`rel` under `root`, or `name (2).ext`, ... when taken or `reserved`; flattened to the top
    when its folders cross a link or a file."""
    if not clear_path(root, rel):
        rel = PurePosixPath("__".join(rel.parts))
    fitting = rel.with_name(fit_name(rel.name, room=room))
    free = free_name(root / fitting, reserved={root / name for name in reserved})
    return PurePosixPath(free.relative_to(root).as_posix())


def clear_path(root: Path, rel: PurePosixPath) -> bool:
    """Whether every folder of `rel` under `root` is a real folder or not there yet (no link, no file)."""
    place = root
    for part in rel.parent.parts:
        place = place / part
        if place.is_symlink() or (place.exists() and not place.is_dir()):
            return False
    return True


def fit_name(name: str, *, room: int) -> str:
    """`name`, or its stem cut short (at a character boundary, with `~`) so that `room` more
    bytes still fit in a file name: a 250-byte name's `.error.json` must exist too."""
    limit = NAME_MAX - room
    if name_bytes(name) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".") if "." in name else (name, "", "")
    keep = limit - name_bytes(dot + suffix) - len("~")
    cut = os.fsencode(stem)[:keep].decode("utf-8", "ignore")
    return f"{cut}~{dot}{suffix}"


def move_to_quarantine(folders: Folders, rel: PurePosixPath, target: PurePosixPath, report: ErrorReport) -> None:
    """The original to quarantine/target, then `<target>.error.json` beside it (never through a link)."""
    destination = folders.quarantine / target
    try:
        move_beneath(folders.input / rel, folders.quarantine, target)
        with folder_beneath(folders.quarantine, target.parent) as folder:
            report_name = target.name + ERROR_SUFFIX
            write_beneath(folder, report_name, report.to_json(quarantined_as=destination),
                          shown=destination.with_name(report_name))
    except OSError as exc:
        raise from_os_error(exc, doing=f"quarantining {rel} to {destination}") from exc


def restore_from_quarantine(folders: Folders, *, quarantined: PurePosixPath, source: PurePosixPath) -> None:
    """`cutout retry`: the original goes back into the hot folder at its old place."""
    target = folders.input / source
    if not (folders.quarantine / quarantined).exists():
        raise ConfigError(f"cannot retry {quarantined}: it is no longer in {folders.quarantine}")
    if target.exists():
        raise ConfigError(f"cannot retry {quarantined}: {target} exists again in the hot folder")
    try:
        move_beneath(folders.quarantine / quarantined, folders.input, source)
    except PathBlocked as exc:
        raise ConfigError(f"cannot retry {quarantined}: {exc}") from exc
    except OSError as exc:  # a full disk, a permission: the same classification as everywhere
        raise from_os_error(exc, doing=f"moving {folders.quarantine / quarantined} back to {target}") from exc


@contextmanager
def staged_outputs(root: Path, files: Sequence[tuple[PurePosixPath, bytes]]) -> Iterator[Callable[[], list[Path]]]:
    """Every file of a job on the disk beside its final name under `root` (the output folder, or
    the review folder for a doubtful cut-out); `publish()` renames them all into place. The daemon calls it inside the job store's transaction, so only the current claim
    publishes; a crash between two renames leaves the job not done, and its rerun replaces them.

    Beneath the output folder nothing is followed or overwritten but files: a link on the way,
    or a folder where a file goes, is `PathBlocked` before anything is written, and checked
    again for every file before the first rename (all or none)."""
    if not root.is_dir():
        raise from_os_error(FileNotFoundError(2, "the folder is missing"), doing=f"writing {root}")
    paths = [root / rel for rel, _ in files]
    try:
        with ExitStack() as stack:
            staged = [_stage(stack, root, rel, data) for rel, data in files]

            def publish() -> list[Path]:
                for folder, _, rel in staged:
                    check_name(folder, rel.name, shown=root / rel)
                for folder, temp, rel in staged:
                    os.replace(temp, rel.name, src_dir_fd=folder, dst_dir_fd=folder)
                for folder in dict.fromkeys(folder for folder, _, _ in staged):
                    sync_folder(folder)
                return paths

            yield publish
    except OSError as exc:
        raise from_os_error(exc, doing=f"writing {_where(paths)}") from exc


def _stage(stack: ExitStack, root: Path, rel: PurePosixPath, data: bytes) -> tuple[int, str, PurePosixPath]:
    """One file whole under a temp name in its folder (made, never through a link): (folder, temp, rel)."""
    folder = stack.enter_context(folder_beneath(root, rel.parent))
    check_name(folder, rel.name, shown=root / rel)
    temp = stage(folder, data)
    stack.callback(remove_quietly, folder, temp)  # runs before the folder closes: whatever was not renamed
    return folder, temp, rel


def _where(paths: Sequence[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more"


def apply_originals_policy(folders: Folders, rel: PurePosixPath, *, policy: OriginalsPolicy) -> Path | None:
    """After a durable cutout: keep, archive or delete the original; where it now is."""
    source = folders.input / rel
    if source.is_symlink():  # never delete or archive through a link: the link stays, its target too
        return source
    if policy == "keep" or not source.exists():
        return source if source.exists() else None
    try:
        if policy == "delete":
            with folder_beneath(folders.input, rel.parent, create=False) as folder:  # never through a link
                os.unlink(rel.name, dir_fd=folder)
                sync_folder(folder)
            return None
        target = free_target(folders.archive, rel)
        move_beneath(source, folders.archive, target)
        return folders.archive / target
    except OSError as exc:
        raise from_os_error(exc, doing=f"applying originals: {policy} to {source}") from exc


def forget_error_file(folders: Folders, quarantined: PurePosixPath | None) -> None:
    """A retried file succeeded: its old error report goes, and the cut-outs a person rejected beside it."""
    if quarantined is None:
        return
    try:
        with folder_beneath(folders.quarantine, quarantined.parent, create=False) as folder:
            remove_quietly(folder, quarantined.name + ERROR_SUFFIX)
            for name in os.listdir(folder):
                if name.startswith(quarantined.name + REJECTED_INFIX):
                    remove_quietly(folder, name)
    except (PathBlocked, FileNotFoundError):
        pass  # its folder is gone, or a link now: nothing of ours to remove there
