"""The local web dashboard: `cutout dashboard`, or `dashboard.enabled: true` beside `cutout watch`.

    app.py        the routes (Starlette): the page, its live parts, before/after, retry, the Review view and
                  its approve/reject/redo, files, /metrics
    board.py      what the page shows, read from the store and the session record (cached 1 s)
    views.py      server-rendered HTML: Jinja2 templates (templates/, autoescaped), static/ beside them
    paths.py      which files may be served: only under the input, output, quarantine, archive and review roots
    thumbs.py     thumbnails made on demand at a bounded size, cached (and capped) in the state folder
    metrics.py    the Prometheus text format, from the store and the daemon's telemetry
    auth.py       the token (cookie after a first `?token=`), the CSRF check, the Host check (Starlette's)
    server.py     uvicorn on a thread of its own; the token file; `cutout dashboard` in the foreground

Why Starlette and uvicorn: they are the standard small ASGI pair (Starlette is what FastAPI is
built on), pure Python wheels on every platform the daemon runs on, with a test client for
in-process tests and a server that runs on a thread of the daemon and stops on request. A
framework with templates, ORM or auth of its own would bring more than this page needs; the
standard library's http.server has no keep-alive pool, no graceful stop and no test client.

Nothing here is on the worker's path: the store is read through its own read-only connection
(daemon/store/view.py), thumbnails are made one at a time, and every asset is served from the
package (no CDN: the page works without internet).
"""
