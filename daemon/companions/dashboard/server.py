"""Serving the dashboard: uvicorn on a thread of its own, in the daemon or in `cutout dashboard`.

The socket is bound here, before uvicorn starts, so a port in use is our ConfigError with
the setting to change (uvicorn itself would exit the process). uvicorn runs on a thread,
where it installs no signal handlers: the daemon's main thread, or `serve()` below, owns
the signals and stops it with `should_exit`, which closes the connections within a
couple of seconds. uvicorn's access log is off (it would print `?token=`), and it logs
through the standard library into our handlers (`log_config=None`).

The token: `dashboard.token` when set; otherwise, when the dashboard is reachable from the
network, one is generated once and kept in `dashboard-token` in the state folder (0600),
the same at every start, so a bookmarked link keeps working.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import structlog
import uvicorn

from daemon.atomic import write_atomic
from daemon.companions.dashboard.app import Dashboard, create_app
from daemon.companions.dashboard.auth import TOKEN_PARAM, Access, is_local
from daemon.companions.dashboard.board import Board
from daemon.companions.dashboard.thumbs import THUMBS_FOLDER, ThumbCache
from daemon.companions.telemetry import Snapshot
from daemon.errors import ConfigError
from daemon.folders.outputs import Folders
from daemon.settings import DashboardSettings, Settings, routing

log = structlog.get_logger("cutout.dashboard")

TOKEN_FILE = "dashboard-token"
STOP_SECONDS = 5.0


def resolve_token(dashboard: DashboardSettings, *, state: Path) -> str | None:
    """The token every request must carry, or None (local, and none configured)."""
    if dashboard.token:
        return dashboard.token
    if is_local(dashboard.bind):
        return None
    path = state / TOKEN_FILE
    try:
        kept = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        kept = ""
    if len(kept) >= 16:
        return kept
    token = secrets.token_urlsafe(24)
    write_atomic(path, token.encode(), mode=0o600)
    return token


def build_dashboard(
    settings: Settings, folders: Folders, *, telemetry: Callable[[], Snapshot | None] | None = None,
) -> Dashboard:
    dash = settings.dashboard
    exposed = not is_local(dash.bind)
    return Dashboard(
        board=Board(folders=folders, queue=settings.queue, dashboard=dash, telemetry=telemetry,
                    routing=routing(settings)),
        thumbs=ThumbCache(folders.state / THUMBS_FOLDER, max_bytes=dash.thumbnail_cache_mb * 1_000_000,
                          max_pixels=settings.limits.max_pixels),
        access=Access(token=resolve_token(dash, state=folders.state), exposed=exposed),
        folders=folders, settings=settings, exposed_at=f"{dash.bind}:{dash.port}" if exposed else None,
    )


class DashboardServer:
    """One dashboard, listening, on its own thread."""

    def __init__(self, dash: Dashboard, *, bind: str, port: int) -> None:
        self.dash, self.bind, self.port = dash, bind, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "127.0.0.1", "localhost") else self.bind
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def start(self) -> DashboardServer:
        self._socket = listen(self.bind, self.port)
        self.port = self._socket.getsockname()[1]  # port 0: the one the system chose
        config = uvicorn.Config(create_app(self.dash), log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, timeout_keep_alive=5, server_header=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="cutout-dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_SECONDS)
        if self._socket is not None:
            self._socket.close()
        self.dash.board.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def listen(bind: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        sock = socket.create_server((bind, port), family=family, backlog=64)
    except OSError as exc:
        raise ConfigError(f"dashboard: cannot listen on {bind}:{port}: {exc.strerror or exc}"
                          " (another program has the port? set dashboard.port)") from exc
    sock.set_inheritable(False)
    return sock


def announce(server: DashboardServer, *, state: Path, out: Callable[[str], None]) -> None:
    """Say where the dashboard is. The token goes to a terminal only, never to a log or a file
    that is not its own: under a service the line names the token's file instead."""
    token = server.dash.access.token
    log.info("dashboard_started", url=server.url, exposed=server.dash.access.exposed, token_required=token is not None)
    if token is None:
        out(f"dashboard: {server.url}")
        return
    where = "reachable from the network; " if server.dash.access.exposed else ""
    if sys.stderr.isatty():
        out(f"dashboard: {server.url}?{TOKEN_PARAM}={token} ({where}open this link once, it sets a cookie)")
    else:
        out(f"dashboard: {server.url} ({where}needs the token in {state / TOKEN_FILE} or dashboard.token: "
            f"open {server.url}?{TOKEN_PARAM}=<token> once)")


def serve(settings: Settings, folders: Folders) -> int:
    """`cutout dashboard`: serve until SIGTERM or SIGINT; 0 after a clean stop."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    server = DashboardServer(build_dashboard(settings, folders), bind=settings.dashboard.bind,
                             port=settings.dashboard.port).start()
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        announce(server, state=folders.state, out=lambda line: print(line, file=sys.stderr, flush=True))
        while not stop.wait(0.5):
            if not server.alive:
                log.error("dashboard_server_stopped")
                return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    log.info("dashboard_stopped", pid=os.getpid())
    return 0
