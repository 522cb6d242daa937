"""The dashboard's routes (Starlette).

    GET  /                       the page (server-rendered; its script keeps it live)
    GET  /parts                  the page's parts as JSON, for the live update (every 2 s while visible)
    GET  /api/status             the figures as JSON, for scripts
    GET  /view/{job id}          before / after of one cutout (`?fragment=1`: for the page's overlay)
    GET  /thumb/{root}/{path}    a thumbnail (`?px=s` grid, `?px=l` before/after), WebP
    GET  /file/{root}/{path}     the file itself (the full cutout)
    POST /retry                  `file=<quarantined path>` or `reason=<code>`: exactly `cutout retry`
    GET  /metrics                Prometheus
    GET  /static/...             the stylesheet, the script, the icon (shipped in the package)

`{root}` is input, output, quarantine or archive; anything outside them is a 404
(daemon/companions/dashboard/paths.py), and what is served is read from the descriptor that path check
opened without following links, never from the path again. Every request first passes
`auth.Guard`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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
from daemon.companions.dashboard.board import Board
from daemon.companions.dashboard.metrics import metrics_text
from daemon.companions.dashboard.paths import OpenFile, open_file, roots_of
from daemon.companions.dashboard.thumbs import MEDIA_TYPE, ThumbCache
from daemon.errors import ConfigError, QueueError
from daemon.folders.outputs import Folders
from daemon.settings import Settings, routing
from daemon.store.steering import retry

STATIC = Path(__file__).parent / "static"
MAX_FORM_BYTES = 64 * 1024
NOT_FOUND = "not found"
CHUNK_BYTES = 256 * 1024


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
        if job is None or job.state != "done":
            return PlainTextResponse(NOT_FOUND, status_code=404)
        body = views.before_after(
            job, original=dash.board.original(job), timing=dash.board.timing(job),
            output_info=_png_info(open_file(roots, "output", job.output.as_posix())), now=dash.board.clock(),
            fragment=request.query_params.get("fragment") == "1",
        )
        return HTMLResponse(body)

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

    def metrics(request: Request) -> Response:
        return Response(metrics_text(dash.board.overview), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/", index), Route("/parts", parts), Route("/api/status", status),
        Route("/view/{job_id:int}", view), Route("/thumb/{root}/{path:path}", thumb),
        Route("/file/{root}/{path:path}", file), Route("/retry", retry_files, methods=["POST"]),
        Route("/metrics", metrics), Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Guard, access=dash.access)])
    app.router.redirect_slashes = False  # `/file/x.jpg` must be a 404, not a redirect to `/file/x.jpg/`
    return app


async def _retry(request: Request, dash: Dashboard) -> Response:
    """`cutout retry` for one quarantined file (`file`) or every file of one reason (`reason`)."""
    wants_json = "application/json" in request.headers.get("accept", "")

    def answer(status: int, **data: Any) -> Response:
        if wants_json or status >= 400:
            return JSONResponse(data, status_code=status)
        return RedirectResponse("/", status_code=303)

    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        return answer(413, error="request too large")
    form = {k: v[0] for k, v in parse_qs((await request.body())[:MAX_FORM_BYTES].decode("utf-8", "replace")).items()}
    if not csrf_ok(request, dash.access, form_value=form.get(CSRF_FIELD)):
        return answer(403, error="the page is out of date (CSRF check failed): reload it and try again")
    target, reason = form.get("file"), form.get("reason")
    if (target is None) == (reason is None):
        return answer(400, error="give either file or reason")
    try:  # the very call `cutout retry` makes (commands.cmd_retry), narrowed to one reason for "Retry all"
        lines = await run_in_threadpool(
            retry, dash.folders, target=Path(target) if target else None, every=reason is not None, reason=reason,
            queue_settings=dash.settings.queue, routing=routing(dash.settings),
        )
    except ConfigError as exc:
        return answer(404, error=str(exc))
    except QueueError as exc:
        return answer(503, error=f"the job store cannot be changed now: {exc}")
    dash.board.invalidate()
    return answer(200, lines=lines or ["nothing in quarantine with that reason"])


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
