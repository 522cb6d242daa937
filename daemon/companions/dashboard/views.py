"""The dashboard's HTML, rendered on the server from Jinja2 templates with autoescaping on.

Every value reaches the page through a template (`templates/`), and the environment escapes
whatever a template prints unless it is marked safe; the only values marked safe are the
parts, which a template rendered (and escaped) first. So a file named `<script>.jpg` shows
as text however a template is edited. Why not Starlette's `Jinja2Templates`: it wraps a
response, and the live update sends the same parts as JSON; the environment here is the same
(autoescape on) and renders strings.

The page is `templates/page.html` with its parts filled in; the live update asks for the
same parts again (`parts()`) and the page's script swaps those that changed, so there is
one renderer, no client-side templates, and a page that works (without live updates)
with scripts off. The Review view (`templates/review.html`) is built the same way from its
own parts (`review_parts()`). The functions below only choose and format values; the markup
is in the templates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from daemon.companions.dashboard.board import CHART_MINUTES, Overview, ReviewList
from daemon.companions.telemetry import JobTiming
from daemon.folders.outputs import Folders
from daemon.pipeline.constants import DOUBTFUL, doubt_reasons
from daemon.store.jobs import Job

PARTS = ("status", "banner", "summary", "fleet", "recent", "doubtful", "quarantine")
REVIEW_PARTS = ("status", "banner", "review")


def file_url(kind: str, root: str, path: PurePosixPath | str, *, px: str | None = None, version: float | None = None) -> str:
    """`/thumb/output/a%20b.png?px=s&v=...`: each path segment percent-encoded."""
    query = "&".join(part for part in (f"px={px}" if px else "", f"v={int(version)}" if version else "") if part)
    return f"/{kind}/{root}/{quote(str(path), safe='/')}" + (f"?{query}" if query else "")


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0.0, seconds)
    for limit, unit, size in ((60, "s", 1), (3600, "min", 60), (86400, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds / 86400:.0f} d"


def when(at: float | None, *, now: float) -> str:
    if at is None:
        return "–"
    moment, today = datetime.fromtimestamp(at), datetime.fromtimestamp(now)
    return moment.strftime("%H:%M:%S" if moment.date() == today.date() else "%Y-%m-%d %H:%M")


def size_text(count: int | None) -> str:
    if count is None:
        return "–"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


# --- what the templates show -----------------------------------------------------------------
def running_facts(o: Overview) -> list[str]:
    d = o.daemon
    facts = [f"pid {d.pid}"] if d.pid and d.pid > 0 else []
    facts += [fact for fact in (_model_name(d.model), d.device) if fact]
    if d.started_at:
        facts.append(f"up {ago(o.taken_at - d.started_at)}")
    return facts


def _model_name(model: str | None) -> str | None:
    """A model file by its name (its folder says little and takes the line); hub names as they are."""
    return PurePosixPath(model).name if model and model.startswith("/") else model


def banner_notes(o: Overview, *, exposed_at: str | None) -> list[tuple[str, str]]:
    notes = []
    if exposed_at:
        notes.append(("info", f"Reachable from the network at {exposed_at}: every request needs the token."))
    if o.store_problem:
        notes.append(("bad", f"{o.store_problem}. Showing the last figures read."))
    if o.hot_folder_problem:
        notes.append(("warn", f"Paused: {o.hot_folder_problem} (nothing is lost; it resumes when the folder is back)."))
    if o.unqueued:
        count = len(o.unqueued)
        notes.append(("bad", f"{count} new file{'s' if count != 1 else ''} could not be queued: "
                             f"{o.unqueued[0].unqueued}. Offered again until the job store takes them: "
                             "free space on the state folder's disk."))
    return notes


def tiles(o: Overview) -> list[tuple[str, object, str]]:
    waiting = o.counts.get("review", 0)
    return [
        ("pending", o.counts.get("pending", 0), ""),
        ("running", o.counts.get("running", 0), ""),
        ("done today", o.done_today, ""),
        ("quarantined", o.quarantined_total, "bad" if o.quarantined_total else ""),
        *([("waiting for review", waiting, "warn")] if waiting else []),
        ("oldest pending", ago(o.oldest_pending_age), ""),
        ("last cutout", f"{ago(o.taken_at - o.last_success)} ago" if o.last_success else "–", ""),
    ]


@dataclass(frozen=True)
class Bar:
    x: int
    y: float
    height: float
    count: int
    minutes_ago: int


def chart_bars(o: Overview) -> Iterator[Bar]:
    """One bar per minute of the last hour that had cut-outs, scaled to the busiest minute."""
    top = max(o.per_minute) or 1
    for i, count in enumerate(o.per_minute):
        if count:
            height = 28 * count / top
            yield Bar(x=i * 2, y=30 - height, height=height, count=count, minutes_ago=CHART_MINUTES - i)


def quarantine_groups(o: Overview) -> list[tuple[str, int, list[Job]]]:
    """(reason, how many the store holds, the ones shown), the largest group first."""
    groups: dict[str, list[Job]] = {}
    for job in o.quarantine:
        groups.setdefault(job.reason or "error", []).append(job)
    total = {reason: o.quarantined.get(reason, len(jobs)) for reason, jobs in groups.items()}
    return [(reason, total[reason], groups[reason]) for reason in sorted(groups, key=lambda r: (-total[r], r))]


def facts_of(job: Job, *, output_info: tuple[int, int, int] | None, now: float) -> list[tuple[str, str]]:
    facts = [("file", str(job.source)), ("cutout", str(job.output))]
    if output_info:
        width, height, nbytes = output_info
        facts.append(("output size", f"{width} × {height} px, {size_text(nbytes)}"))
    facts.append(("finished", when(job.finished_at, now=now)))
    if job.doubt is not None:
        facts.append(("doubt", f"{job.doubt:.2f} ({doubt_reasons(job.doubt_parts or {})})"))
    if job.started_at is not None:
        facts.append(("queue wait", f"{max(0.0, job.started_at - job.queued_at):.2f} s"))
        if job.finished_at is not None:
            facts.append(("claim to done", f"{max(0.0, job.finished_at - job.started_at):.2f} s"))
    return facts


# --- the Review view -------------------------------------------------------------------------
REVIEW_SORTS: dict[str, Callable[[Job], float | str]] = {
    "score": lambda job: job.doubt or 0.0,
    "file": lambda job: job.source.as_posix(),
    "time": lambda job: job.finished_at or 0.0,
}
"""The Review list's columns that sort it (`?sort=score`, `-` first for descending)."""
FIRST_DIRECTION = {"score": "-", "file": "", "time": "-"}
"""A first click on a column's header: the most doubtful, A to Z, the latest first."""
REVIEW_SORT = "-score"


def review_sort(asked: str | None) -> str:
    """The sort asked for when it is one of REVIEW_SORTS (`-` first: descending), else REVIEW_SORT."""
    return asked if asked and asked.removeprefix("-") in REVIEW_SORTS else REVIEW_SORT


def sort_link(column: str, *, current: str) -> str:
    """What a click on `column`'s header asks for: the other direction when the list is sorted by it."""
    if current.removeprefix("-") == column:
        return current.removeprefix("-") if current.startswith("-") else f"-{column}"
    return f"{FIRST_DIRECTION[column]}{column}"


def parts_by_size(parts: dict[str, float] | None) -> list[tuple[str, float]]:
    """The parts of a doubt score that count (as `doubt_reasons` says them), the largest first."""
    return sorted(((name, value) for name, value in (parts or {}).items() if value > 0),
                  key=lambda part: (-part[1], part[0]))


@dataclass(frozen=True)
class ReviewRow:
    job: Job
    target: str
    """The cut-out's path in the review folder: what Approve, Reject and Redo name."""
    original: str
    """The original's path in the hot folder."""
    parts: list[tuple[str, float]]


def review_rows(jobs: list[Job], *, folders: Folders, sort: str) -> list[ReviewRow]:
    """The waiting cut-outs in the order `sort` asks (ties by file name)."""
    column = sort.removeprefix("-")
    by_name = sorted(jobs, key=lambda job: job.source.as_posix())
    ordered = sorted(by_name, key=REVIEW_SORTS[column], reverse=sort.startswith("-"))  # stable: ties stay by name
    review = folders.review
    return [ReviewRow(job=job, target=str(review / job.output) if review else job.output.as_posix(),
                      original=str(folders.input / job.source), parts=parts_by_size(job.doubt_parts))
            for job in ordered]


# --- rendering --------------------------------------------------------------------------------
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("daemon.companions.dashboard", "templates"),
        autoescape=True,  # every template, whatever its name: an unescaped value is never the default
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the render, never shows as ""
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(ago=ago, when=lambda at, now: when(at, now=now))
    env.globals.update(file_url=file_url, running_facts=running_facts, banner_notes=banner_notes, tiles=tiles,
                       chart_bars=chart_bars, quarantine_groups=quarantine_groups, doubtful=DOUBTFUL,
                       doubt_reasons=doubt_reasons, sort_link=sort_link)
    return env


TEMPLATES = _environment()


def page(overview: Overview, *, csrf: str, exposed_at: str | None) -> str:
    rendered = {name: Markup(html) for name, html in parts(overview, csrf=csrf, exposed_at=exposed_at).items()}
    return TEMPLATES.get_template("page.html").render(csrf=csrf, exposed_at=exposed_at, parts=rendered)


def parts(overview: Overview, *, csrf: str, exposed_at: str | None) -> dict[str, str]:
    return {name: TEMPLATES.get_template(f"parts/{name}.html").render(o=overview, csrf=csrf, exposed_at=exposed_at)
            for name in PARTS}


@dataclass(frozen=True, kw_only=True)
class ReviewPage:
    """What the Review view shows besides the overview's status and banner."""

    waiting: ReviewList
    folders: Folders
    threshold: float
    sort: str
    recipes: tuple[str, ...]
    """The recipes Redo offers: the config's, `default` first."""
    models: tuple[str, ...]
    """The models Redo offers (app.REDO_MODELS)."""


def review_page(overview: Overview, review: ReviewPage, *, csrf: str, exposed_at: str | None) -> str:
    rendered = {name: Markup(html)
                for name, html in review_parts(overview, review, csrf=csrf, exposed_at=exposed_at).items()}
    return TEMPLATES.get_template("review.html").render(csrf=csrf, exposed_at=exposed_at, parts=rendered,
                                                        sort=review.sort)


def review_parts(overview: Overview, review: ReviewPage, *, csrf: str, exposed_at: str | None) -> dict[str, str]:
    rows = review_rows(review.waiting.jobs, folders=review.folders, sort=review.sort)
    context = {"o": overview, "csrf": csrf, "exposed_at": exposed_at, "w": review.waiting, "rows": rows,
               "sort": review.sort, "review_on": review.folders.review is not None, "threshold": review.threshold,
               "recipes": review.recipes, "models": review.models}
    return {name: TEMPLATES.get_template(f"parts/{name}.html").render(context) for name in REVIEW_PARTS}


def before_after(
    job: Job, *, root: str, original: tuple[str, str] | None, timing: JobTiming | None,
    output_info: tuple[int, int, int] | None, now: float, fragment: bool,
) -> str:
    """The original and its cutout (in `root`: the output folder, or the review folder while it
    waits) side by side, with where they are and where the time went."""
    return TEMPLATES.get_template("before_after.html").render(
        job=job, root=root, original=original, stages=timing.stages if timing else {}, fragment=fragment,
        facts=facts_of(job, output_info=output_info, now=now),
    )
