"""The dashboard's HTML, rendered on the server: every value is escaped here, and only here.

The page is `templates/page.html` with its parts filled in; the live update asks for the
same parts again (`parts()`) and the page's script swaps those that changed, so there is
one renderer, no client-side templates, and a page that works (without live updates)
with scripts off.
"""

from __future__ import annotations

import html
from datetime import datetime
from importlib import resources
from pathlib import PurePosixPath
from string import Template
from urllib.parse import quote

from daemon.companions.dashboard.board import CHART_MINUTES, Overview
from daemon.companions.telemetry import JobTiming
from daemon.store.jobs import Job

PARTS = ("status", "banner", "summary", "fleet", "recent", "quarantine")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


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


# --- the page --------------------------------------------------------------------------------
def page(overview: Overview, *, csrf: str, exposed_at: str | None) -> str:
    template = Template(resources.files("daemon.companions.dashboard").joinpath("templates/page.html").read_text("utf-8"))
    rendered = parts(overview, csrf=csrf, exposed_at=exposed_at)
    return template.substitute(csrf=esc(csrf), exposed="true" if exposed_at else "false", **rendered)


def parts(overview: Overview, *, csrf: str, exposed_at: str | None) -> dict[str, str]:
    return {
        "status": status(overview),
        "banner": banner(overview, exposed_at=exposed_at),
        "summary": summary(overview),
        "fleet": fleet(overview),
        "recent": recent(overview),
        "quarantine": quarantine(overview, csrf=csrf),
    }


def status(o: Overview) -> str:
    d, now = o.daemon, o.taken_at
    if d.running:
        bits = [f"pid {d.pid}"] if d.pid and d.pid > 0 else []
        bits += [b for b in (_model_name(d.model), d.device) if b]
        if d.started_at:
            bits.append(f"up {ago(now - d.started_at)}")
        return f'<span class="pill ok" data-daemon="running">● running</span> <span class="meta">{esc(" · ".join(bits))}</span>'
    since = f" since {when(d.last_seen, now=now)}" if d.last_seen else ""
    return f'<span class="pill bad" data-daemon="stopped">● daemon not running{esc(since)}</span>'


def _model_name(model: str | None) -> str | None:
    """A model file by its name (its folder says little and takes the line); hub names as they are."""
    return PurePosixPath(model).name if model and model.startswith("/") else model


def banner(o: Overview, *, exposed_at: str | None) -> str:
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
    return "".join(f'<p class="note {kind}">{esc(text)}</p>' for kind, text in notes)


def summary(o: Overview) -> str:
    tiles = [
        ("pending", o.counts.get("pending", 0), ""),
        ("running", o.counts.get("running", 0), ""),
        ("done today", o.done_today, ""),
        ("quarantined", o.quarantined_total, "bad" if o.quarantined_total else ""),
        ("oldest pending", ago(o.oldest_pending_age), ""),
        ("last cutout", f"{ago(o.taken_at - o.last_success)} ago" if o.last_success else "–", ""),
    ]
    cells = "".join(
        f'<div class="tile {cls}" data-tile="{esc(name)}"><b>{esc(value)}</b><span>{esc(name)}</span></div>'
        for name, value, cls in tiles
    )
    return cells + chart(o)


def chart(o: Overview) -> str:
    top = max(o.per_minute) or 1
    bars = "".join(
        f'<rect x="{i * 2}" y="{30 - 28 * n / top:.1f}" width="1.6" height="{28 * n / top:.1f}">'
        f"<title>{n} at {CHART_MINUTES - i} min ago</title></rect>"
        for i, n in enumerate(o.per_minute) if n
    )
    rate = f"{o.per_minute_last_hour:.1f} / min"
    return (f'<div class="tile chart"><svg viewBox="0 0 120 30" preserveAspectRatio="none" role="img" '
            f'aria-label="cutouts per minute, last hour">{bars}</svg><span>{esc(rate)} over the last hour</span></div>')


def fleet(o: Overview) -> str:
    if not o.workers:
        return ""
    rows = "".join(
        f"<tr><td>{esc(w.host)}</td><td>{w.pid}</td><td>{'watcher' if w.leader else 'worker'}</td>"
        f"<td>{esc(w.device)}</td><td>{esc(w.model)}</td><td>{w.done}</td><td>{esc(w.current or '–')}</td>"
        f"<td>{esc(ago(o.taken_at - w.seen_at))} ago</td></tr>"
        for w in o.workers
    )
    return ("<h2>Fleet</h2><table><thead><tr><th>host</th><th>pid</th><th>role</th><th>device</th><th>model</th>"
            f"<th>done</th><th>now on</th><th>last heard</th></tr></thead><tbody>{rows}</tbody></table>")


def recent(o: Overview) -> str:
    if not o.recent:
        return '<p class="empty">No cutouts yet: drop photos into the hot folder.</p>'
    return "".join(_thumb(job, now=o.taken_at) for job in o.recent)


def _thumb(job: Job, *, now: float) -> str:
    src = file_url("thumb", "output", job.output, px="s", version=job.finished_at)
    return (
        f'<a class="thumb" href="/view/{job.id}" data-job="{job.id}" data-source="{esc(job.source)}">'
        f'<span class="checker"><img loading="lazy" src="{esc(src)}" alt="{esc(job.output.name)}"></span>'
        f'<span class="cap"><span>{esc(job.output.name)}</span><time>{esc(ago(now - (job.finished_at or now)))} ago</time></span></a>'
    )


def quarantine(o: Overview, *, csrf: str) -> str:
    if not o.quarantine:
        return '<p class="empty">Nothing in quarantine.</p>'
    groups: dict[str, list[Job]] = {}
    for job in o.quarantine:
        groups.setdefault(job.reason or "error", []).append(job)
    counts = o.quarantined
    out = []
    for reason in sorted(groups, key=lambda r: (-counts.get(r, len(groups[r])), r)):
        total = counts.get(reason, len(groups[reason]))
        button = _retry_form(csrf, "reason", reason, f"Retry all {total}")
        items = "".join(_quarantined(job, csrf=csrf, now=o.taken_at) for job in groups[reason])
        out.append(f'<div class="reason" data-reason="{esc(reason)}"><h3><code>{esc(reason)}</code>'
                   f'<span class="n">{total}</span>{button}</h3><ul>{items}</ul></div>')
    return "".join(out)


def _quarantined(job: Job, *, csrf: str, now: float) -> str:
    assert job.quarantine is not None
    src = file_url("thumb", "quarantine", job.quarantine, px="s", version=job.finished_at)
    return (
        f'<li class="qitem" data-file="{esc(job.quarantine)}"><span class="qthumb"><img loading="lazy" src="{esc(src)}" '
        f'alt=""></span><div><b>{esc(job.source)}</b><p>{esc(job.message or "")}</p>'
        f"<small>{esc(when(job.finished_at, now=now))} · {job.attempts} attempt{'s' if job.attempts != 1 else ''}</small>"
        f"</div>{_retry_form(csrf, 'file', job.quarantine.as_posix(), 'Retry')}</li>"
    )


def _retry_form(csrf: str, field: str, value: str, label: str) -> str:
    return (f'<form class="retry" method="post" action="/retry"><input type="hidden" name="csrf" value="{esc(csrf)}">'
            f'<input type="hidden" name="{field}" value="{esc(value)}"><button type="submit">{esc(label)}</button></form>')


# --- before / after -------------------------------------------------------------------------
def before_after(
    job: Job, *, original: tuple[str, str] | None, timing: JobTiming | None, output_info: tuple[int, int, int] | None,
    now: float, fragment: bool,
) -> str:
    """The original and its cutout side by side, with where they are and where the time went."""
    before = (f'<img class="before" src="{esc(file_url("thumb", original[0], original[1], px="l"))}" alt="original">'
              if original else '<p class="empty">The original is no longer in the hot folder or the archive.</p>')
    after_src = file_url("thumb", "output", job.output, px="l", version=job.finished_at)
    facts = [("file", str(job.source)), ("cutout", str(job.output))]
    if output_info:
        width, height, nbytes = output_info
        facts.append(("output size", f"{width} × {height} px, {size_text(nbytes)}"))
    facts.append(("finished", when(job.finished_at, now=now)))
    if job.started_at is not None:
        facts.append(("queue wait", f"{max(0.0, job.started_at - job.queued_at):.2f} s"))
        if job.finished_at is not None:
            facts.append(("claim to done", f"{max(0.0, job.finished_at - job.started_at):.2f} s"))
    stages = timing.stages if timing else {}
    timings = "".join(f"<li><span>{esc(name)}</span><b>{seconds:.3f} s</b></li>" for name, seconds in stages.items())
    facts_html = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    body = (
        f'<article class="ba" data-job="{job.id}"><header><h2>{esc(job.source)}</h2>'
        f'<a class="close" href="/" aria-label="Close">×</a></header>'
        f'<div class="pair"><figure><figcaption>Before</figcaption>{before}</figure>'
        f'<figure><figcaption>After</figcaption><div class="checker"><img class="after" src="{esc(after_src)}" '
        f'alt="cutout"></div></figure></div><dl>{facts_html}</dl>'
        + (f'<h3>Stages</h3><ul class="stages">{timings}</ul>' if timings else
           '<p class="empty">Stage timings are kept for the last 500 jobs of the running daemon.</p>')
        + f'<p><a href="{esc(file_url("file", "output", job.output))}" download>Download the cutout</a></p></article>'
    )
    if fragment:
        return body
    return ('<!doctype html><html lang="en"><meta charset="utf-8"><meta name="viewport" content="width=device-width, '
            f'initial-scale=1"><title>cutout: {esc(job.source)}</title><link rel="stylesheet" href="/static/app.css">'
            f'<body class="single">{body}</body></html>')
