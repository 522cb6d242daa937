"""The review step from outside the worker: `cutout review` and the dashboard's Review view.

A cut-out whose doubt is over `review.threshold` waits in the review folder and its job is
`review` in the store, its output names still claimed and its original still in the hot
folder. A person then decides, one line per file saying what happened (a file that cannot
be decided is reported, not fatal):

- **approve**: its files move into the output folder and the job is done, in one store
  transaction that first checks it still waits (daemon/folders/review.py says why a kill
  half-way loses nothing); then the originals policy, as after any cut-out;
- **reject**: the job fails with reason `rejected`, the original goes to quarantine with
  its report, and the cut-out beside it;
- **redo**: the job goes back to pending, with another recipe if asked; the new result is
  scored again, and replaces the waiting one wherever it goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path, PurePosixPath

from daemon.errors import ConfigError, JobError, Rejected
from daemon.folders.layout import display
from daemon.folders.outputs import ErrorReport, Folders, OriginalsPolicy, apply_originals_policy, move_to_quarantine
from daemon.folders.outputs import quarantine_target
from daemon.folders.review import approve_mark, approving, forget_waiting, review_folder, set_aside
from daemon.folders.routing import SEED_ROUTING, Routing, unknown_recipe
from daemon.settings import QueueSettings
from daemon.store.jobs import Fingerprint, Job, JobStore
from daemon.store.steering import DEFAULT_QUEUE, names_one_of, steering

MOVED_ON = "no longer waits for review (approved, rejected or redone meanwhile)"
"""Why a decision changed nothing: another one (a command, the dashboard) came first."""
EVERY = 10_000_000
"""How many jobs `--all` reads: every one a queue can hold."""


def names_of(job: Job, *, routing: Routing) -> list[PurePosixPath]:
    """Every file of a job, relative to the output folder (and the review folder, mirrored)."""
    return [file.path for file in routing.files(job.source, claimed=job.output, chosen=job.recipes)]


@contextmanager
def _reviewing(folders: Folders, *, queue_settings: QueueSettings, routing: Routing) -> Iterator[JobStore]:
    review_folder(folders)  # off: said before the queue is opened
    with steering(folders, queue_settings=queue_settings, routing=routing) as queue:
        yield queue


def waiting(
    folders: Folders, *, queue_settings: QueueSettings = DEFAULT_QUEUE, routing: Routing = SEED_ROUTING,
) -> list[tuple[Job, list[Path]]]:
    """Every job waiting for review, the most doubtful first, with its files in the review folder."""
    with _reviewing(folders, queue_settings=queue_settings, routing=routing) as queue:
        jobs = queue.jobs(state="review", limit=EVERY)
    jobs.sort(key=lambda job: (-(job.doubt or 0.0), job.source))
    review = review_folder(folders)
    return [(job, [review / rel for rel in names_of(job, routing=routing)]) for job in jobs]


def approve(
    folders: Folders, *, target: Path | None, policy: OriginalsPolicy, queue_settings: QueueSettings = DEFAULT_QUEUE,
    routing: Routing = SEED_ROUTING,
) -> list[str]:
    """Approve one waiting cut-out (`target`) or every one (None): into the output folder, done."""
    with _reviewing(folders, queue_settings=queue_settings, routing=routing) as queue:
        return [_approve(folders, queue, job, routing=routing, policy=policy)
                for job in _chosen(folders, queue, target, routing=routing)]


def _approve(folders: Folders, queue: JobStore, job: Job, *, routing: Routing, policy: OriginalsPolicy) -> str:
    names, mark = names_of(job, routing=routing), approve_mark(folders, job_id=job.id, token=job.token)
    try:
        if not queue.approve(job, publish=approving(folders, names, source=display(job.source), mark=mark)):
            return f"skipped: {display(job.source)} {MOVED_ON}"
    except (ConfigError, JobError) as exc:
        return f"skipped: {exc}"
    mark.unlink(missing_ok=True)  # committed: what it vouched for is done
    note = _original_after(folders, job, policy=policy)
    return f"approved: {display(job.source)} -> {folders.output / names[0]}{note}"


def _original_after(folders: Folders, job: Job, *, policy: OriginalsPolicy) -> str:
    """The originals policy, now that the cut-out is delivered: only on the very file that was
    cut out (a file replaced since is new work, and the watcher queues it)."""
    if policy == "keep" or Fingerprint.read(folders.input / job.source) != Fingerprint(job.size, job.mtime_ns):
        return ""
    try:
        where = apply_originals_policy(folders, job.source, policy=policy)
    except JobError as exc:  # the cut-out is delivered; the original simply stays where it is
        return f" (the original stays in the hot folder: {exc})"
    return " (the original deleted)" if where is None else f" (the original archived to {where})"


def reject(
    folders: Folders, *, target: Path | None, why: str | None = None, queue_settings: QueueSettings = DEFAULT_QUEUE,
    routing: Routing = SEED_ROUTING, clock: Callable[[], float] = time.time,
) -> list[str]:
    """Reject one waiting cut-out (`target`) or every one: the original to quarantine as `rejected`
    (`why`: the person's reason, in its report), the cut-out beside it."""
    with _reviewing(folders, queue_settings=queue_settings, routing=routing) as queue:
        return [_reject(folders, queue, job, error=Rejected(why or "its cut-out was rejected on review"),
                        routing=routing, now=clock())
                for job in _chosen(folders, queue, target, routing=routing)]


def _reject(folders: Folders, queue: JobStore, job: Job, *, error: Rejected, routing: Routing, now: float) -> str:
    """Recorded first, then moved, as the worker quarantines: a kill in between leaves the original
    in the hot folder under a failed row, which the next scan queues again; it is never lost."""
    if approve_mark(folders, job_id=job.id, token=job.token).exists():
        return (f"skipped: {display(job.source)}: an approve of it was cut short, and part of it is delivered; "
                "approve it again to finish (then reprocess it, if it should not go out)")
    present = (folders.input / job.source).is_file()
    target = quarantine_target(folders, job.source, previous=job.quarantine)
    if not queue.mark_failed(job, reason=error.reason, message=str(error), quarantine=target if present else None,
                             was="review"):
        return f"skipped: {display(job.source)} {MOVED_ON}"
    report = ErrorReport(file=job.source.as_posix(), reason=error.reason, message=str(error), attempts=job.attempts,
                         first_seen=job.first_seen, last_attempt=now)
    try:
        if present:
            move_to_quarantine(folders, job.source, target, report)
        beside = set_aside(folders, names_of(job, routing=routing), beside=target)
    except JobError as exc:
        return f"skipped: {display(job.source)} is rejected, but {exc}; the next scan of the hot folder queues it again"
    where = folders.quarantine / target if present else "nowhere (the original was gone)"
    return f"rejected: {display(job.source)} -> {where}" + "".join(f"; its cut-out: {path}" for path in beside)


def redo(
    folders: Folders, *, target: Path | None, recipe: str | None = None, model: str | None = None,
    queue_settings: QueueSettings = DEFAULT_QUEUE, routing: Routing = SEED_ROUTING,
) -> list[str]:
    """One waiting cut-out (`target`) or every one made again (with `recipe` instead of its route's,
    `model` instead of the daemon's: a name the caller checked, as `model.name` takes it):
    its job back to pending. The new result is scored again; the waiting cut-out stays until it
    replaces it, and goes once a result is delivered."""
    if recipe is not None and (problem := unknown_recipe(recipe, recipes=routing.recipes, key="--recipe")):
        raise ConfigError(problem)
    with _reviewing(folders, queue_settings=queue_settings, routing=routing) as queue:
        chosen = None if recipe is None else (recipe,)
        return [_redo(folders, queue, job, recipes=chosen, model=model, routing=routing)
                for job in _chosen(folders, queue, target, routing=routing)]


def _redo(
    folders: Folders, queue: JobStore, job: Job, *, recipes: tuple[str, ...] | None, model: str | None, routing: Routing,
) -> str:
    if not (folders.input / job.source).is_file():
        return f"skipped: {display(job.source)}: its original is no longer in the hot folder {folders.input}"
    if not queue.redo(job, recipes=recipes, model=model):
        taken = ", ".join(f"{name} is {display(holder)}'s" for name, holder in queue.name_conflicts(
            replace(job, recipes=recipes)))
        why = f"its new files would take names of other files: {taken}" if taken else f"it {MOVED_ON}"
        return f"skipped: {display(job.source)}: {why}"
    # Files the new recipes do not write are nothing the new result replaces: they go now.
    new_names = set(names_of(replace(job, recipes=recipes), routing=routing))
    forget_waiting(folders, [rel for rel in names_of(job, routing=routing) if rel not in new_names])
    chosen = [f"the recipe {name}" for name in recipes or ()]
    if model is not None:
        chosen.append(f"the model {model}")
    return f"queued again{' with ' + ' and '.join(chosen) if chosen else ''}: {display(job.source)}"


def _chosen(folders: Folders, queue: JobStore, target: Path | None, *, routing: Routing) -> list[Job]:
    """The waiting jobs `target` names (every one when None): by a file of it in the review
    folder, or by its original in the hot folder, absolute or relative to either."""
    jobs = queue.jobs(state="review", limit=EVERY)
    if target is None:
        return jobs
    chosen = [job for job in jobs if _names(folders, job, target, routing=routing)]
    if not chosen:
        raise ConfigError(f"{target} is no cut-out waiting for review (see: cutout review list)")
    if len(chosen) > 1:  # `a.png`: one file's original, another's cut-out; never act on both
        named = ", ".join(str(review_folder(folders) / names_of(job, routing=routing)[0]) for job in chosen)
        raise ConfigError(f"{target} names {len(chosen)} waiting cut-outs ({named}): give the one you mean by its "
                          "full path in the review folder")
    return chosen


def _names(folders: Folders, job: Job, target: Path, *, routing: Routing) -> bool:
    """Whether `target` is `job`'s original or one of its files in the review folder."""
    files = names_of(job, routing=routing)
    return names_one_of(target, places={folders.input / job.source, *(review_folder(folders) / rel for rel in files)},
                        relative={job.source, *files})
