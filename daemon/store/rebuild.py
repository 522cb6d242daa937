"""A damaged, empty or missing queue database: find it, refuse it, rebuild it.

The queue (`queue.sqlite3` in the state folder) is the daemon's memory of what is
done. Starting on a queue that has lost that memory would redo every kept original
and overwrite its cutout; starting on damaged pages leaves files unprocessed while
everything looks healthy. So the file is checked before anything uses it:

- **Damaged** (sqlite's `quick_check` finds broken pages, or the header is not a
  database's): the daemon refuses to start, with the file, what sqlite found, and
  the command that repairs it, `cutout queue rebuild`; its exit status (78, see
  `QueueDamaged`) tells the service manager not to restart it. It does not repair
  by itself: something damaged data on this disk, and a person should know that
  before trusting the disk with more; a restart would only find the same damage.
- **Empty** (zero bytes, or a database without the jobs table) or **missing**: the
  daemon rebuilds it by itself at start and logs `queue_rebuilt`. Nothing was
  damaged that a person could act on (an empty file is what a crash right after
  creation, a half-restored backup or a copy that lost its content leaves; a
  missing one is a state folder that was cleared or a new `folders.state`), the
  rebuild loses nothing, and a hot folder should never need a person. On a first
  start it finds nothing and the queue simply starts empty.

A rebuild (`cutout queue rebuild`, or the automatic one) holds the daemon's lock,
builds the new queue under a temporary name, then moves the old file (with its
`-wal` and `-shm`) aside to `queue.sqlite3.damaged-<UTC time>`, never deleting it,
and renames the new one into place: a crash part-way leaves the old file (refused
again) or no file (rebuilt again), never an empty queue that would redo everything.
The new queue learns:

- the done set from the output folder: an input in the hot folder is done when every
  file its recipes derive from the output name the layout rules gave it (the seed's PNG
  alone without recipes) is complete and written after the input last changed (its
  mtime and its ctime, which a copy or move into the folder sets). It is recorded with
  its current fingerprint and content hash and claims those names, so names stay stable
  and a re-drop of the same bytes is not redone.
  A cutout older than its input is stale: the input is processed again.
- the cut-outs waiting for review, the same way from the review folder (when `review.folder`
  is set) for the inputs the output folder did not give: `review` again, their doubt unknown.
- the failed set from the quarantine folder's `<name>.error.json` reports (their
  `file` is the original path), so `cutout retry` works on them.

Everything else is found by the daemon's start-up scan: inputs without a current
cutout are queued as new. What a rebuild cannot know: attempt and crash counts
start over; a cutout whose input is gone (archived, deleted, moved away) is left
alone on disk but unclaimed, so a later input of the same stem and another
extension may take its name; and two inputs that differ only by a double
extension (`x.jpg`, `x.jpg.jpg`) may be paired wrongly, which costs one redo.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from stat import S_ISREG

import structlog

from daemon.atomic import sync_dir
from daemon.errors import ConfigError, QueueDamaged, QueueError
from daemon.folders.layout import candidate_outputs, claim_key, content_hash, is_candidate_name, is_storable, iter_inputs
from daemon.folders.outputs import ERROR_SUFFIX, Folders
from daemon.folders.routing import SEED_ROUTING, Routing
from daemon.pipeline.formats import PNG_SIGNATURE, file_truncation
from daemon.store.jobs import DoneRecord, FailedRecord, Fingerprint
from daemon.store.statedir import acquire_lock, daemon_pid, inspect_queue, open_job_queue, queue_path

log = structlog.get_logger("cutout.queue")

SIDE_FILES = ("-wal", "-shm")
"""SQLite's companions of the database file: they travel with it, or the pair is inconsistent."""
BUILDING_SUFFIX = ".rebuilding"


def prepare_queue(
    folders: Folders, *, clock: Callable[[], float] = time.time, routing: Routing = SEED_ROUTING
) -> RebuildReport | None:
    """At `cutout watch` start, before the model loads: refuse a damaged queue, rebuild an empty or missing one."""
    health = inspect_queue(queue_path(folders.state))
    if health.state == "damaged":
        raise QueueDamaged(health.path, health.problem)
    if health.state == "healthy":
        return None
    report = rebuild_queue(folders, clock=clock, routing=routing)
    if health.state == "empty" or report.done or report.quarantined:
        log.warning("queue_rebuilt", previous=report.previous, moved_to=[str(p) for p in report.moved],
                    done=report.done, quarantined=report.quarantined, without_current_cutout=report.not_done,
                    kept_without_input=report.held)
    return report


# --- Rebuilding ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RebuildReport:
    path: Path
    previous: str  # what the old file was, as the end of "the old queue ..."
    moved: list[Path]
    done: int
    quarantined: int
    not_done: int  # inputs without a current cutout: the daemon queues them
    held: int = 0  # cut-outs whose input is gone: their names stay taken
    waiting: int = 0  # cut-outs found in the review folder: waiting for review again
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        where = f"moved to {self.moved[0]}" if self.moved else "nothing to move aside"
        if len(self.moved) > 1:
            where += " (with its " + ", ".join(p.name.rsplit("-", 1)[-1] for p in self.moved[1:]) + ")"
        return [
            f"the old queue {self.previous}; {where}",
            f"rebuilt {self.path}: {self.done} done (kept, not redone), "
            f"{self.quarantined} quarantined (cutout retry works on them)"
            + (f", {self.waiting} waiting for review (cutout review list)" if self.waiting else ""),
            f"{self.not_done} inputs have no current cutout: the daemon processes them when it runs",
            f"{self.held} files in the output folder belong to no input in the hot folder (deleted or archived "
            "originals): kept, and no new input will take their names",
            *(f"note: {note}" for note in self.notes),
        ]


def rebuild_queue(
    folders: Folders, *, clock: Callable[[], float] = time.time, routing: Routing = SEED_ROUTING
) -> RebuildReport:
    """A fresh queue from the output and quarantine folders, the old file kept aside; never while a daemon runs."""
    path = queue_path(folders.state)
    if (pid := daemon_pid(folders.state)) is not None:
        owner = f"a daemon (pid {pid})" if pid > 0 else "a daemon"
        raise ConfigError(
            f"cannot rebuild {path}: {owner} is running on {folders.state}; stop it first "
            f"({f'kill {pid}' if pid > 0 else 'Ctrl-C'}, or stop its service), then run cutout queue rebuild again"
        )
    lock = acquire_lock(folders.state)  # also refuses a daemon that starts right now
    try:
        return _rebuild(folders, path=path, clock=clock, routing=routing)
    finally:
        lock.close()


def _rebuild(folders: Folders, *, path: Path, clock: Callable[[], float], routing: Routing) -> RebuildReport:
    if not folders.input.is_dir():
        raise ConfigError(
            f"folders.input: hot folder {folders.input} does not exist, so the rebuild cannot tell which cutouts "
            "are done: mount or create it, then run cutout queue rebuild again"
        )
    previous = _describe(path)
    building = path.with_name(path.name + BUILDING_SUFFIX)
    _remove_with_side_files(building)  # a rebuild that died part-way
    adopted, not_done = adopt_outputs(folders, routing=routing)
    waiting: list[DoneRecord] = []
    if folders.review is not None:
        waiting, not_done = adopt_outputs(folders, routing=routing, waiting=True, skip={r.source for r in adopted})
    adopted += waiting
    failed, notes = quarantined_jobs(folders, done={record.source for record in adopted})
    orphans = unowned_outputs(folders, adopted=adopted, routing=routing)
    queue = open_job_queue(building, clock=clock)
    queue.name_outputs(routing.name_deriver)  # each done job claims every file its recipes wrote
    try:
        queue.bind_input(folders.input)
        queue.record_done(adopted)
        queue.record_failed(failed)
        queue.record_held(orphans)
    finally:
        queue.close()  # the last connection checkpoints: the WAL is merged into the file
    moved = _move_aside(path, word="replaced" if previous == "was healthy" else "damaged", clock=clock)
    _move_with_side_files(building, path)
    return RebuildReport(path=path, previous=previous, moved=moved, done=len(adopted) - len(waiting),
                         quarantined=len(failed), not_done=not_done, held=len(orphans), waiting=len(waiting), notes=notes)


def _describe(path: Path) -> str:
    try:
        health = inspect_queue(path)
    except QueueError as exc:
        return f"could not be read ({exc})"
    return f"was {health.state}" if health.state in ("missing", "healthy") else health.problem


def _move_aside(path: Path, *, word: str, clock: Callable[[], float]) -> list[Path]:
    """The old file and its side files to `<name>.<word>-<UTC time>[-wal|-shm]`; what moved, main file first."""
    present = [suffix for suffix in ("", *SIDE_FILES) if Path(f"{path}{suffix}").exists()]
    if not present:
        return []
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
    target, count = path.with_name(f"{path.name}.{word}-{stamp}"), 2
    while any(Path(f"{target}{suffix}").exists() for suffix in ("", *SIDE_FILES)):
        target, count = path.with_name(f"{path.name}.{word}-{stamp}-{count}"), count + 1
    for suffix in present:
        os.rename(f"{path}{suffix}", f"{target}{suffix}")
    sync_dir(path.parent)
    return [Path(f"{target}{suffix}") for suffix in present]


def _move_with_side_files(source: Path, target: Path) -> None:
    # Side files first: the main file appearing last means a reader never sees it without them.
    for suffix in (*SIDE_FILES, ""):
        if Path(f"{source}{suffix}").exists():
            os.rename(f"{source}{suffix}", f"{target}{suffix}")
    sync_dir(target.parent)


def _remove_with_side_files(path: Path) -> None:
    for suffix in ("", *SIDE_FILES):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# --- The done set: cutouts in the output folder ------------------------------------------------------
def adopt_outputs(
    folders: Folders, *, routing: Routing = SEED_ROUTING, waiting: bool = False, skip: Collection[PurePosixPath] = (),
) -> tuple[list[DoneRecord], int]:
    """Done records for inputs (but `skip`) whose recipes' current files are all in the output
    folder (`waiting`: in the review folder); and how many inputs have none."""
    # A name that is not UTF-8 was never processed (it is refused as invalid_name): never done.
    inputs = sorted(rel for rel in iter_inputs(folders.input)
                    if is_candidate_name(rel.name) and is_storable(rel) and rel not in skip)
    place = folders.review if waiting else folders.output
    if place is None or not place.is_dir():
        return [], len(inputs)

    def files(source: PurePosixPath, claimed: PurePosixPath) -> list[Path]:
        return [place / file.path for file in routing.files(source, claimed=claimed)]

    def exists(source: PurePosixPath, claimed: PurePosixPath) -> bool:
        return all(path.is_file() for path in files(source, claimed))

    def current(source: PurePosixPath, claimed: PurePosixPath) -> bool:
        return all(is_current_cutout(folders.input / source, path) for path in files(source, claimed))

    pairs = pair_outputs(inputs, exists=exists, current=current)
    records = [r for source, claimed in pairs.items()
               if (r := _done_record(folders, source, claimed, files=files(source, claimed), waiting=waiting)) is not None]
    return records, len(inputs) - len(records)


def unowned_outputs(folders: Folders, *, adopted: list[DoneRecord], routing: Routing) -> list[PurePosixPath]:
    """Every file in the output folder that no adopted input's recipes wrote: the cut-outs of
    originals deleted or archived after success (or of inputs since replaced). Their names
    stay taken, so that no new input ever writes over them."""
    owned = {claim_key(file.path) for record in adopted for file in routing.files(record.source, claimed=record.output)}
    found = []
    for folder, dirnames, names in os.walk(folders.output):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        relative = PurePosixPath(Path(folder).relative_to(folders.output).as_posix())
        found += [relative / name for name in sorted(names) if not name.startswith(".")]
    return [rel for rel in found if is_storable(rel) and claim_key(rel) not in owned]


def pair_outputs(
    inputs: Iterable[PurePosixPath],
    *,
    exists: Callable[[PurePosixPath, PurePosixPath], bool],
    current: Callable[[PurePosixPath, PurePosixPath], bool],
) -> dict[PurePosixPath, PurePosixPath]:
    """Which input each existing cutout belongs to, by the layout rules (daemon/folders/layout.py).

    `exists(source, claimed)` and `current(source, claimed)` answer for the files the input's
    recipes derive from the claimed name (the seed's PNG alone without recipes).
    An input gets its own extension in the output name (`x.jpg` -> `x.jpg.png`, then
    `x.jpg.2.png`) only when another input held `x.png`; so such names are paired first,
    with the last of the run (the one given last). Then, in sorted order, each remaining
    input takes its plain name if that holds a cutout newer than the input and nobody
    has it yet. An input whose own-extension names exist never takes the plain name.
    """
    claimed: set[str] = set()
    pairs: dict[PurePosixPath, PurePosixPath] = {}
    plain: list[PurePosixPath] = []
    for source in sorted(inputs):
        displaced = list(_existing_run(source, exists=exists))
        if not displaced:
            plain.append(source)
        elif current(source, displaced[-1]) and claim_key(displaced[-1]) not in claimed:
            pairs[source] = displaced[-1]
            claimed.add(claim_key(displaced[-1]))
    for source in plain:
        name = next(candidate_outputs(source))
        if claim_key(name) not in claimed and exists(source, name) and current(source, name):
            pairs[source] = name
            claimed.add(claim_key(name))
    return pairs


def _existing_run(
    source: PurePosixPath, *, exists: Callable[[PurePosixPath, PurePosixPath], bool]
) -> Iterator[PurePosixPath]:
    """The own-extension output names of `source` that exist, up to the first one missing."""
    names = candidate_outputs(source)
    next(names)  # the plain name: shared by every input of that stem, no evidence of ownership
    for name in names:
        if not exists(source, name):
            return
        yield name


def is_current_cutout(source: Path, output: Path) -> bool:
    """A complete output file written after the input last changed (content: mtime; arrival by copy
    or move: ctime)."""
    try:
        made, changed = output.stat(), source.stat()
    except OSError:
        return False
    if not S_ISREG(made.st_mode) or made.st_mtime_ns < max(changed.st_mtime_ns, changed.st_ctime_ns):
        return False
    return _complete(output)


def _complete(path: Path) -> bool:
    """A PNG that is one (signature) and whole; any other format whole as far as its structure tells."""
    try:
        if path.suffix.lower() == ".png":
            with open(path, "rb") as handle:
                if handle.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                    return False
        return file_truncation(path) is None
    except OSError:
        return False


def _done_record(
    folders: Folders, source: PurePosixPath, output: PurePosixPath, *, files: list[Path], waiting: bool
) -> DoneRecord | None:
    path = folders.input / source
    fingerprint = Fingerprint.read(path)
    if fingerprint is None:
        return None
    try:
        digest = content_hash(path)
        finished = max(path.stat().st_mtime for path in files)
    except OSError:  # gone while we looked: the daemon's scan decides about it
        return None
    if Fingerprint.read(path) != fingerprint:  # changed while hashed: the hash may be of neither version
        return None
    return DoneRecord(source=source, output=output, fingerprint=fingerprint, content_hash=digest, finished_at=finished,
                      waiting=waiting)


# --- The failed set: error reports in the quarantine folder -----------------------------------------
def quarantined_jobs(folders: Folders, *, done: set[PurePosixPath]) -> tuple[list[FailedRecord], list[str]]:
    """One failed record per original path, from the newest error report; notes on reports not used."""
    newest: dict[PurePosixPath, FailedRecord] = {}
    notes: list[str] = []
    for report in sorted(folders.quarantine.rglob(f"*{ERROR_SUFFIX}")) if folders.quarantine.is_dir() else []:
        record = _failed_record(folders, report, notes=notes)
        if record is None:
            continue
        if record.source in done or os.path.lexists(folders.input / record.source):
            notes.append(f"{report}: {record.source} is in the hot folder again (that file is processed; "
                         "this quarantined copy stays where it is)")
            continue
        older = newest.get(record.source)
        if older is not None:
            kept, dropped = (record, older) if record.finished_at >= older.finished_at else (older, record)
            notes.append(f"{folders.quarantine / dropped.quarantine}: an older failure of {record.source}; "
                         f"cutout retry works on the newest, {folders.quarantine / kept.quarantine}")
            record = kept
        newest[record.source] = record
    return list(newest.values()), notes


def _failed_record(folders: Folders, report: Path, *, notes: list[str]) -> FailedRecord | None:
    quarantined = report.with_name(report.name.removesuffix(ERROR_SUFFIX))
    try:
        body = json.loads(report.read_text(encoding="utf-8"))
        source = PurePosixPath(str(body["file"]))
        reason, message = str(body["reason"]), str(body.get("message", ""))
        attempts = int(body.get("attempts", 1))
        first_seen, last = _timestamp(body.get("first_seen")), _timestamp(body.get("last_attempt"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        notes.append(f"{report}: not a readable error report ({exc}); left as it is")
        return None
    if source.is_absolute() or ".." in source.parts or source.name in ("", ".") or not is_storable(source):
        notes.append(f"{report}: its file {source} is not a path inside the hot folder; left as it is")
        return None
    fingerprint = Fingerprint.read(quarantined)
    if fingerprint is None:
        notes.append(f"{report}: the quarantined file {quarantined} is not there; nothing to retry")
        return None
    when = last or first_seen or quarantined.stat().st_mtime
    return FailedRecord(
        source=source, fingerprint=fingerprint, reason=reason, message=message,
        quarantine=PurePosixPath(quarantined.relative_to(folders.quarantine).as_posix()),
        attempts=max(0, attempts), first_seen=first_seen or when, finished_at=when,
    )


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value).timestamp()
