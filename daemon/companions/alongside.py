"""What runs beside the daemon's work: its telemetry, the dashboard, the alerts.

`alongside()` is entered first in `Daemon.setup()` and left last in `teardown()`:

- always: the session record (daemon/store/session.py) is begun, which tells how the last
  daemon ended, and ended by a clean stop; each job's `JobRecord` feeds `Telemetry`
  (daemon/companions/telemetry.py), published into the record every couple of seconds;
- `dashboard.enabled`: the dashboard's server, on its own thread (daemon/companions/dashboard/);
- `alerts:` with a webhook or desktop notifications: the monitor and the sender.

One thread (`cutout-companions`) ticks the publisher and the monitor; the dashboard and the
alert sender have their own. None of them is on the worker's path, and none can stop the
daemon: a dashboard that cannot listen is logged and left out, a failing tick is logged and
tried again.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import structlog

from daemon.atomic import make_private_dir
from daemon.companions.telemetry import Telemetry, TelemetryPublisher
from daemon.errors import ConfigError
from daemon.folders.outputs import Folders
from daemon.settings import Settings
from daemon.store.session import SessionRecord

log = structlog.get_logger("cutout.companions")

TICK_SECONDS = 1.0


@contextmanager
def alongside(
    *, settings: Settings, folders: Folders, session: SessionRecord, model: str, device: str,
    clock: Callable[[], float] = time.time,
) -> Iterator[Telemetry]:
    """Start the companions; on the way out stop them and record a clean stop."""
    make_private_dir(folders.state)  # as the lock does; setup() may run without it in tests
    telemetry = Telemetry(model=model, device=device, clock=clock)
    publisher = TelemetryPublisher(telemetry, session=session)
    crashed = _begin(session, now=clock())  # before the daemon re-arms its crash report
    with ExitStack() as stack:
        stack.callback(publisher.stopped)  # last: reached only by a stop under control
        ticks: list[tuple[float, Callable[[], None]]] = [(2.0, publisher.tick)]
        if settings.alerts.active:
            ticks.append((settings.alerts.check_seconds, _start_alerts(stack, settings, folders, crashed, clock)))
        if settings.dashboard.enabled:
            _start_dashboard(stack, settings, folders, telemetry)
        stop = threading.Event()
        thread = threading.Thread(target=_loop, args=(stop, ticks), name="cutout-companions", daemon=True)
        thread.start()
        stack.callback(thread.join, 5)
        stack.callback(stop.set)
        yield telemetry


def _begin(session: SessionRecord, *, now: float) -> str | None:
    """Best effort: on a state folder that takes no file the daemon still starts (a crash of this
    life is then not told at the next start, which is all that part of the record is for)."""
    try:
        return session.begin(now=now)
    except OSError as exc:
        log.warning("session_not_written", path=str(session.path), error=exc.strerror or str(exc))
        return None


def _loop(stop: threading.Event, ticks: list[tuple[float, Callable[[], None]]]) -> None:
    due = [0.0] * len(ticks)
    while not stop.is_set():
        now = time.monotonic()
        for index, (every, tick) in enumerate(ticks):
            if now >= due[index]:
                due[index] = now + every
                try:
                    tick()
                except Exception:  # the daemon goes on; the next tick tries again
                    log.exception("companion_tick_failed", tick=getattr(tick, "__qualname__", str(tick)))
        stop.wait(max(0.01, min(min(due), time.monotonic() + TICK_SECONDS) - time.monotonic()))


def _start_alerts(
    stack: ExitStack, settings: Settings, folders: Folders, crashed: str | None, clock: Callable[[], float],
) -> Callable[[], None]:
    from daemon.companions.alerts import Alerts, Event, desktop_notifier
    from daemon.companions.monitor import Monitor
    from daemon.store.view import open_view

    alerts = Alerts(settings.alerts, clock=clock,
                    notifier=desktop_notifier() if settings.alerts.desktop else None).start()
    stack.callback(alerts.close)
    if crashed:
        alerts.post_event(Event(kind="crashed", detail=crashed, at=clock()))
    monitor = Monitor(settings=settings.alerts, alerts=alerts, output=folders.output, state=folders.state,
                      open_view=lambda: open_view(settings.queue, state=folders.state), clock=clock)
    stack.callback(monitor.close)
    return monitor.tick


def _start_dashboard(stack: ExitStack, settings: Settings, folders: Folders, telemetry: Telemetry) -> None:
    from daemon.companions.dashboard.server import DashboardServer, announce, build_dashboard

    try:
        dash = build_dashboard(settings, folders, telemetry=telemetry.snapshot)
        server = DashboardServer(dash, bind=settings.dashboard.bind, port=settings.dashboard.port).start()
    except ConfigError as exc:  # the port is taken: the cutouts matter more than the page
        log.error("dashboard_not_started", error=str(exc))
        return
    stack.callback(server.stop)
    announce(server, state=folders.state, out=lambda line: print(line, file=sys.stderr, flush=True) if sys.stderr.isatty() else None)
