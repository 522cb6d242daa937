"""The dashboard's routes (Starlette).

    GET  /                       the page (server-rendered; its script keeps it live)
    GET  /parts                  the page's parts as JSON, for the live update (every 2 s while visible)
    GET  /api/status             the figures as JSON, for scripts
    GET  /view/{job id}          before / after of one cutout, done or waiting for review (`?fragment=1`:
                                 for the page's overlay)
    GET  /thumb/{root}/{path}    a thumbnail (`?px=s` grid, `?px=l` before/after), WebP
    GET  /file/{root}/{path}     the file itself (the full cutout)
    POST /retry                  `file=<quarantined path>` or `reason=<code>`: exactly `cutout retry`
    GET  /review                 the Review view: the cut-outs waiting for review (`?sort=score`, `file` or
                                 `time`; `-` first: descending)
    GET  /review/parts           its parts as JSON, for the live update
    POST /review/approve         `file=<waiting cut-out or its original>`: exactly `cutout review approve`
    POST /review/reject          the same, and `reason=<text>` (optional): `cutout review reject --reason`
    POST /review/redo            the same, and `recipe=<a recipe of the config>`, `model=<a BiRefNet of the
                                 family>` (optional, empty: none): `cutout review redo --recipe --model`
    GET  /metrics                Prometheus
    GET  /static/...             the stylesheet, the script, the icon (shipped in the package)

Every POST passes the same checks (`_form`: its size, the page's CSRF value) and runs its
command off the event loop with the same answers (`_steered`).

`{root}` is input, output, quarantine, archive, or review while the review step is on; anything
outside them is a 404 (daemon/companions/dashboard/paths.py), and what is served is read from the
descriptor that path check opened without following links, never from the path again. Every
request first passes `auth.Guard`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, quote

from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from daemon.companions.dashboard import views
from daemon.companions.dashboard.auth import CSRF_FIELD, Access, Guard, csrf_ok
from daemon.companions.dashboard.board import Board, ReviewList
from daemon.companions.dashboard.metrics import metrics_text
from daemon.companions.dashboard.paths import OpenFile, open_file, roots_of
from daemon.companions.dashboard.thumbs import MEDIA_TYPE, ThumbCache
from daemon.errors import ConfigError, QueueError
from daemon.folders.outputs import Folders
from daemon.folders.routing import unknown_recipe
from daemon.pipeline.modelspec import FAMILY
from daemon.settings import Settings, check_model_choice, routing
from daemon.store import review
from daemon.store.steering import retry

STATIC = Path(__file__).parent / "static"
MAX_FORM_BYTES = 64 * 1024
NOT_FOUND = "not found"
CHUNK_BYTES = 256 * 1024
REVIEW_ACTIONS = ("approve", "reject", "redo")
CUTOUT_ROOTS = {"done": "output", "review": "review"}
"""Where a job's cut-out is, by its state: the output folder, or the review folder while it waits."""
REDO_MODELS = tuple(FAMILY)
"""The models Redo offers: the BiRefNet family by name. Never a path or a repository typed into
a browser; any other model `model.name` takes is `cutout review redo --model`'s."""

Answer = Callable[..., Response]
"""`answer(status, **data)`: JSON to a script (and any refusal), a redirect back to a plain form."""


@dataclass(frozen=True, kw_only=True)
class Dashboard:
    """What the routes need: one per server."""

    board: Board
    thumbs: ThumbCache
    access: Access
    folders: Folders
    settings: Settings
    exposed_at: str | None = None
    """`host:port` when reachable from the network (the page says so), else None."""


IMAGE_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
    ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff",
}
"""What the browser may show inline. Anything else in the folders (a dropped `.html` or `.js`,
a RAW, a HEIC) is sent as an opaque download, so a file someone put in a shared hot folder can
never run as script in the dashboard's origin."""


def served(opened: OpenFile) -> StreamingResponse:
    """The open file as the answer, read from its descriptor (never its path again): an image
    type shown inline, else an attachment; sandboxed either way."""
    headers = {"Cache-Control": "private, no-cache", "Content-Security-Policy": "sandbox",  # + Guard's headers
               "Content-Length": str(opened.size)}
    media = IMAGE_TYPES.get(opened.path.suffix.lower())
    if media is None:
        media, headers["Content-Disposition"] = "application/octet-stream", _attachment(opened.path.name)
    return StreamingResponse(_chunks(opened.handle), media_type=media, headers=headers)


def _attachment(name: str) -> str:
    quoted = quote(name)
    return f"attachment; filename*=utf-8''{quoted}" if quoted != name else f'attachment; filename="{name}"'


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def create_app(dash: Dashboard) -> Starlette:
    roots = roots_of(dash.folders)

    def index(request: Request) -> Response:
        return HTMLResponse(views.page(dash.board.overview(), csrf=dash.access.csrf, exposed_at=dash.exposed_at))

    def parts(request: Request) -> Response:
        rendered = views.parts(dash.board.overview(), csrf=dash.access.csrf, exposed_at=dash.exposed_at)
        return JSONResponse({"csrf": dash.access.csrf, "parts": rendered}, headers={"Cache-Control": "no-store"})

    def status(request: Request) -> Response:
        return JSONResponse(_status_json(dash.board))

    def view(request: Request) -> Response:
        job = dash.board.job(int(request.path_params["job_id"]))
        root = CUTOUT_ROOTS.get(job.state) if job else None
        if job is None or root is None or root not in roots:
            return PlainTextResponse(NOT_FOUND, status_code=404)
        body = views.before_after(
            job, root=root, original=dash.board.original(job), timing=dash.board.timing(job),
            output_info=_png_info(open_file(roots, root, job.output.as_posix())), now=dash.board.clock(),
            fragment=request.query_params.get("fragment") == "1",
        )
        return HTMLResponse(body)

    def review_page(request: Request) -> Response:
        page = _review_page(dash, sort=request.query_params.get("sort"))
        return HTMLResponse(views.review_page(dash.board.overview(), page, csrf=dash.access.csrf,
                                              exposed_at=dash.exposed_at))

    def review_parts(request: Request) -> Response:
        page = _review_page(dash, sort=request.query_params.get("sort"))
        rendered = views.review_parts(dash.board.overview(), page, csrf=dash.access.csrf, exposed_at=dash.exposed_at)
        return JSONResponse({"csrf": dash.access.csrf, "parts": rendered}, headers={"Cache-Control": "no-store"})

    def thumb(request: Request) -> Response:
        opened = open_file(roots, request.path_params["root"], request.path_params["path"])
        large = request.query_params.get("px") == "l"
        size = dash.settings.dashboard.preview_px if large else dash.settings.dashboard.thumbnail_px
        made = None
        if opened is not None:
            with opened.handle:
                made = dash.thumbs.get(opened, size=size)
        if made is None:
            return PlainTextResponse(NOT_FOUND, status_code=404)
        return FileResponse(made, media_type=MEDIA_TYPE, headers={"Cache-Control": "private, max-age=86400"})

    def file(request: Request) -> Response:
        opened = open_file(roots, request.path_params["root"], request.path_params["path"])
        if opened is None:
            return PlainTextResponse(NOT_FOUND, status_code=404)
        return served(opened)

    async def retry_files(request: Request) -> Response:
        return await _retry(request, dash)

    def reviewing(action: str) -> Callable[[Request], Awaitable[Response]]:
        async def act(request: Request) -> Response:
            return await _review(request, dash, action=action)
        return act

    def metrics(request: Request) -> Response:
        return Response(metrics_text(dash.board.overview), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/", index), Route("/parts", parts), Route("/api/status", status),
        Route("/view/{job_id:int}", view), Route("/thumb/{root}/{path:path}", thumb),
        Route("/file/{root}/{path:path}", file), Route("/retry", retry_files, methods=["POST"]),
        Route("/review", review_page), Route("/review/parts", review_parts),
        *(Route(f"/review/{action}", reviewing(action), methods=["POST"]) for action in REVIEW_ACTIONS),
        Route("/metrics", metrics), Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Guard, access=dash.access)])
    app.router.redirect_slashes = False  # `/file/x.jpg` must be a 404, not a redirect to `/file/x.jpg/`
    return app


def _answerer(request: Request, *, back: str) -> Answer:
    """How this request is answered: JSON to a script (`Accept: application/json`) and for any
    refusal, else (a plain form, scripts off) a redirect back to the page at `back`."""
    wants_json = "application/json" in request.headers.get("accept", "")

    def answer(status: int, **data: Any) -> Response:
        if wants_json or status >= 400:
            return JSONResponse(data, status_code=status)
        return RedirectResponse(back, status_code=303)

    return answer


async def _form(request: Request, dash: Dashboard, answer: Answer) -> dict[str, str] | Response:
    """The POSTed form, once its size and the page's CSRF value pass; else the refusal. (The
    token and the Origin were checked before any route: `auth.Guard`.)"""
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        return answer(413, error="request too large")
    form = {k: v[0] for k, v in parse_qs((await request.body())[:MAX_FORM_BYTES].decode("utf-8", "replace")).items()}
    if not csrf_ok(request, dash.access, form_value=form.get(CSRF_FIELD)):
        return answer(403, error="the page is out of date (CSRF check failed): reload it and try again")
    return form


async def _steered(dash: Dashboard, answer: Answer, command: Callable[[], list[str]], *, nothing: str) -> Response:
    """Run one of the commands that steer the queue off the event loop (it takes the store's
    write lock and moves files), and say what it did, one line per file."""
    try:
        lines = await run_in_threadpool(command)
    except ConfigError as exc:
        return answer(404, error=str(exc))
    except QueueError as exc:
        return answer(503, error=f"the job store cannot be changed now: {exc}")
    dash.board.invalidate()
    return answer(200, lines=lines or [nothing])


async def _retry(request: Request, dash: Dashboard) -> Response:
    """`cutout retry` for one quarantined file (`file`) or every file of one reason (`reason`)."""
    answer = _answerer(request, back="/")
    form = await _form(request, dash, answer)
    if isinstance(form, Response):
        return form
    target, reason = form.get("file"), form.get("reason")
    if (target is None) == (reason is None):
        return answer(400, error="give either file or reason")
    # the very call `cutout retry` makes (commands.cmd_retry), narrowed to one reason for "Retry all"
    command = partial(retry, dash.folders, target=Path(target) if target else None, every=reason is not None,
                      reason=reason, queue_settings=dash.settings.queue, routing=routing(dash.settings))
    return await _steered(dash, answer, command, nothing="nothing in quarantine with that reason")


async def _review(request: Request, dash: Dashboard, *, action: str) -> Response:
    """`cutout review approve|reject|redo` for one waiting cut-out (`file`: its path in the review
    folder, or its original's); a rejection's `reason` goes into its report."""
    answer = _answerer(request, back="/review")
    form = await _form(request, dash, answer)
    if isinstance(form, Response):
        return form
    target = form.get("file")
    if not target:
        return answer(400, error="give file: a cut-out waiting for review")
    try:
        command = _review_command(dash, action, target=Path(target), form=form)
    except ConfigError as exc:  # a recipe or a model Redo does not offer: nothing is changed
        return answer(400, error=str(exc))
    return await _steered(dash, answer, command, nothing="nothing waits for review")


def _review_command(dash: Dashboard, action: str, *, target: Path, form: dict[str, str]) -> Callable[[], list[str]]:
    """The very call `cutout review <action>` makes (commands.cmd_review_*), for one target.
    ConfigError: Redo's recipe or model is refused."""
    settings = dash.settings
    if action == "approve":
        return partial(review.approve, dash.folders, target=target, policy=settings.originals,
                       queue_settings=settings.queue, routing=routing(settings))
    if action == "reject":
        return partial(review.reject, dash.folders, target=target, why=form.get("reason", "").strip() or None,
                       queue_settings=settings.queue, routing=routing(settings))
    assert action == "redo", action  # REVIEW_ACTIONS: the only routes
    recipe = _redo_recipe(settings, form.get("recipe", "").strip() or None)
    model = _redo_model(settings, form.get("model", "").strip() or None)
    return partial(review.redo, dash.folders, target=target, recipe=recipe, model=model,
                   queue_settings=settings.queue, routing=routing(settings))


def _redo_recipe(settings: Settings, name: str | None) -> str | None:
    """A recipe of the config, or None (the file's own)."""
    if name is not None and (problem := unknown_recipe(name, recipes=settings.all_recipes, key="recipe")):
        raise ConfigError(problem)
    return name


def _redo_model(settings: Settings, name: str | None) -> str | None:
    """One of REDO_MODELS, checked as `cutout review redo --model` checks it, or None (the daemon's)."""
    if name is None:
        return None
    if name not in REDO_MODELS:
        raise ConfigError(f"model: {name!r} is not one Redo offers (known: {', '.join(REDO_MODELS)}); "
                          "any other model is `cutout review redo --model`'s")
    check_model_choice(settings, name)
    return name


def _review_page(dash: Dashboard, *, sort: str | None) -> views.ReviewPage:
    waiting = dash.board.in_review() if dash.folders.review else ReviewList(jobs=[], total=0)
    return views.ReviewPage(waiting=waiting, folders=dash.folders, threshold=dash.settings.review.threshold,
                            sort=views.review_sort(sort), recipes=tuple(dash.settings.all_recipes), models=REDO_MODELS)


def _png_info(opened: OpenFile | None) -> tuple[int, int, int] | None:
    """Width, height (from the header alone) and bytes of an image file."""
    if opened is None:
        return None
    try:
        with opened.handle, Image.open(opened.handle) as image:
            return image.width, image.height, opened.size
    except (OSError, ValueError, SyntaxError):
        return None


def _status_json(board: Board) -> dict[str, object]:
    o = board.overview()
    return {
        "daemon": {"running": o.daemon.running, "pid": o.daemon.pid, "model": o.daemon.model,
                   "device": o.daemon.device, "last_seen": o.daemon.last_seen},
        "counts": o.counts, "done_today": o.done_today, "quarantined": o.quarantined,
        "oldest_pending_age": o.oldest_pending_age, "per_minute": o.per_minute, "last_success": o.last_success,
        "store_problem": o.store_problem, "hot_folder_problem": o.hot_folder_problem,
        "workers": [{"host": w.host, "pid": w.pid, "device": w.device, "done": w.done, "leader": w.leader}
                    for w in o.workers],
    }
