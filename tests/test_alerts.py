"""Alerts: what the monitor derives from a real store, and how messages reach a real HTTP endpoint.

A local HTTP server on 127.0.0.1 stands in for the webhook (Slack, ntfy, ...); it can answer
500 a number of times first. Clocks are `FakeClock`s where time matters (windows, backoff,
stalls); the daemon test runs the real daemon in-process with its real threads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath as P
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.companions.alerts import Alerts, CommandNotifier, Event, Message, desktop_notifier, redact_url, urllib_post, webhook_request
from daemon.companions.monitor import DiskUsage, Monitor
from daemon.settings import AlertSettings, QueueSettings
from daemon.store.jobs import FailedRecord, Fingerprint
from daemon.store.sqlite import JobQueue
from daemon.store.view import open_view
from daemon.testing import BrightModel, FakeClock, wait_until
from daemon.watch.runner import Daemon
from tests.conftest import subject_image, write_image
from tests.test_runner import Running, drop, outputs, settings_for
from tests.test_runner import folders as folders  # noqa: F401 (the fixture)

SECRET_PATH = "/services/T000/B000/very-secret-key"


class Hook:
    """A webhook endpoint on 127.0.0.1 that records what it gets; fails `failures` times first."""

    def __init__(self, *, failures: int = 0, status: int = 500) -> None:
        self.failures, self.status = failures, status
        self.requests: list[tuple[dict[str, str], bytes]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.requests.append((dict(self.headers), body))
                failing = len(hook.requests) <= hook.failures
                self.send_response(hook.status if failing else 200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}?key=also-secret"

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _settings(hook: Hook, **values: Any) -> AlertSettings:
    return AlertSettings(webhook_url=hook.url, **values)


def _failed(n: int, *, reason: str, at: float, start: int = 0) -> list[FailedRecord]:
    return [FailedRecord(source=P(f"shoot/{reason}-{i}.jpg"), fingerprint=Fingerprint(1, 1), reason=reason,
                         message=f"{reason} file", quarantine=P(f"shoot/{reason}-{i}.jpg"), attempts=1, first_seen=at,
                         finished_at=at + i * 0.01) for i in range(start, start + n)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobQueue]:
    queue = JobQueue(tmp_path / "state" / "queue.sqlite3")
    yield queue
    queue.close()


def _monitor(store: JobQueue, alerts: Alerts, clock: FakeClock, **values: Any) -> Monitor:
    state = store.path.parent
    return Monitor(settings=AlertSettings(**values), alerts=alerts, output=state, state=state, clock=clock,
                   open_view=lambda: open_view(QueueSettings(), state=state),
                   disk_usage=lambda path: DiskUsage(total=100, used=50, free=50))


# --- grouping -------------------------------------------------------------------------------
def test_fifty_quarantined_files_become_one_grouped_message(hook: Hook, store: JobQueue, clock: FakeClock) -> None:
    alerts = Alerts(_settings(hook, group_seconds=60), clock=clock, host="studio-mini")
    store.record_failed(_failed(1, reason="undecodable", at=clock() - 5))  # before the daemon started: not news
    monitor = _monitor(store, alerts, clock)
    monitor.tick()
    store.record_failed(_failed(30, reason="undecodable", at=clock() + 1, start=1))
    store.record_failed(_failed(20, reason="no_foreground", at=clock() + 2))
    monitor.tick()
    alerts.tick()
    assert hook.requests == []  # the window is still open
    clock.advance(61)
    monitor.tick()
    alerts.tick()
    monitor.close()
    [message] = hook.messages()
    body = message["cutout"]
    assert body["kind"] == "quarantined" and body["count"] == 50 and body["host"] == "studio-mini"
    assert body["reasons"] == {"undecodable": 30, "no_foreground": 20} and len(body["files"]) == 10
    assert message["text"].startswith("cutout on studio-mini: 50 files quarantined (undecodable 30, no_foreground 20)")
    assert "and 40 more" in message["text"]


def test_a_single_quarantine_names_the_file_and_why(hook: Hook, store: JobQueue, clock: FakeClock) -> None:
    alerts = Alerts(_settings(hook, group_seconds=0), clock=clock, host="mini")
    monitor = _monitor(store, alerts, clock)
    monitor.tick()
    store.record_failed(_failed(1, reason="truncated", at=clock() + 1))
    monitor.tick()
    alerts.tick()
    [message] = hook.messages()
    assert message["text"] == "cutout on mini: quarantined shoot/truncated-0.jpg: truncated: truncated file"


# --- a webhook that fails ------------------------------------------------------------------
def test_a_failing_webhook_is_retried_with_backoff_until_it_answers(hook: Hook, clock: FakeClock) -> None:
    hook.failures = 2
    alerts = Alerts(_settings(hook, group_seconds=0), clock=clock)
    with capture_logs() as logs:
        alerts.post_event(Event(kind="disk_low", detail="2% free", at=clock()))
        alerts.tick()
        assert len(hook.requests) == 1  # failed (500)
        alerts.tick()
        assert len(hook.requests) == 1  # waits 1 s
        clock.advance(1)
        alerts.tick()
        assert len(hook.requests) == 2  # failed again: waits 2 s
        clock.advance(1)
        alerts.tick()
        assert len(hook.requests) == 2
        clock.advance(1)
        alerts.tick()
    assert len(hook.requests) == 3 and [m.kind for m in alerts.sent] == ["disk_low"]
    assert [e["status"] for e in logs if e["event"] == "webhook_failed"] == [500, 500]
    assert "very-secret-key" not in json.dumps(logs) and "also-secret" not in json.dumps(logs)


def test_an_unreachable_webhook_never_raises_and_never_blocks_the_caller(clock: FakeClock) -> None:
    closed = "http://127.0.0.1:9/hook"  # the discard port: nothing listens
    alerts = Alerts(AlertSettings(webhook_url=closed, group_seconds=0), clock=clock)
    with capture_logs() as posting:
        for index in range(500):
            alerts.post_event(Event(kind="quarantined", detail="x", at=clock(), file=f"{index}.jpg",
                                    reason="undecodable"))
    assert posting == []  # posting is an append: no connection is tried on the caller's thread
    with capture_logs() as logs:
        alerts.tick()
    assert [e["event"] for e in logs][-1] == "webhook_failed" and not alerts.sent


def test_a_webhook_that_answers_garbage_is_backed_off_like_any_failure(clock: FakeClock) -> None:
    import socketserver

    class Garbage(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(65536)
            self.request.sendall(b"this is not HTTP\r\n\r\n")  # http.client: BadStatusLine, not an OSError

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Garbage) as server:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}"
        alerts = Alerts(AlertSettings(webhook_url=url, group_seconds=0), clock=clock)
        alerts.post_event(Event(kind="disk_low", detail="2% free", at=clock()))
        with capture_logs() as logs:
            alerts.tick()
            alerts.tick()  # within the backoff: no second POST
        server.shutdown()
    failures = [e.get("error") for e in logs if e["event"] == "webhook_failed"]
    assert failures == ["WebhookUnreachable"] and not [e for e in logs if e["event"] == "alerts_tick_failed"]
    assert "very-secret-key" not in json.dumps(logs) and not alerts.sent


def test_the_daemon_processes_its_files_while_the_webhook_fails(
    hook: Hook, folders: Any, tmp_path: Path,  # noqa: F811
) -> None:
    hook.failures = 10**6  # it never accepts
    settings = settings_for(folders, **{"alerts.webhook_url": hook.url, "alerts.group_seconds": 0.0,
                                        "alerts.check_seconds": 0.05, "alerts.disk_free_percent": 0.0})
    with capture_logs() as logs, Running(Daemon(settings=settings, folders=folders, model=BrightModel())) as running:
        wait_until(lambda: any(e["event"] == "daemon_started" for e in logs), what="start-up")
        drop(folders, "a.png")
        write_image(folders.input / "dark.png", subject_image(60, 80, (0, 0, 0, 0)))  # no subject: quarantined
        wait_until(lambda: outputs(folders) == ["a.png"] and (folders.quarantine / "dark.png").exists(),
                   what="the cutout and the quarantine", timeout=20)
        wait_until(lambda: len(hook.requests) >= 1, what="the webhook tried (and refused)", timeout=20)
        running.daemon.request_stop()
        assert running.finished(timeout=10) == 0  # a dead webhook does not hold the stop up
    sent = json.loads(hook.requests[0][1])
    assert sent["cutout"]["kind"] == "quarantined" and sent["cutout"]["files"] == ["dark.png"]
    assert any(e["event"] == "webhook_failed" for e in logs)


# --- what the monitor finds ------------------------------------------------------------------
class Recorder:
    """A webhook poster that keeps the payloads (no network)."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        self.payloads.append(json.loads(body))
        return 200

    def kinds(self) -> list[str]:
        return [p["cutout"]["kind"] for p in self.payloads]


def test_the_stall_alert_fires_once_after_the_configured_minutes_and_moving_follows(
    store: JobQueue, clock: FakeClock
) -> None:
    sent = Recorder()
    alerts = Alerts(AlertSettings(webhook_url="http://127.0.0.1:9/", group_seconds=0), clock=clock, post=sent)
    monitor = _monitor(store, alerts, clock, stall_minutes=15)
    store.offer(P("a.jpg"), Fingerprint(1, 1))
    for minutes in (0, 5, 9):  # 14 minutes in all
        clock.advance(minutes * 60)
        monitor.tick()
        alerts.tick()
    assert sent.payloads == []
    clock.advance(60.5)  # 15 minutes without anything ending
    monitor.tick()
    monitor.tick()
    alerts.tick()
    assert sent.kinds() == ["stalled"]
    assert "1 jobs waiting and none finished for 15 min" in sent.payloads[0]["text"]
    job = store.claim()
    assert job is not None and store.finish(job, content_hash="h", fingerprint=Fingerprint(1, 1), publish=lambda: None)
    monitor.tick()
    alerts.tick()
    assert sent.kinds() == ["stalled", "moving"]
    monitor.close()


def test_a_nearly_full_disk_alerts_once_until_space_returns(store: JobQueue, clock: FakeClock) -> None:
    alerts = Alerts(AlertSettings(desktop=True, group_seconds=0), clock=clock)
    free = [50]
    monitor = _monitor(store, alerts, clock, disk_free_percent=5.0)
    monitor.disk_usage = lambda path: DiskUsage(total=100, used=100 - free[0], free=free[0])
    with capture_logs() as logs:
        for level in (50, 4, 3, 5, 4, 10, 2):
            free[0] = level
            monitor.tick()
            alerts.tick()
    said = [e["text"] for e in logs if e["event"] == "alert"]
    assert len(said) == 2 and said[0].startswith("4.0% free")  # again only after it went back above 6 %
    monitor.close()


# --- formats and channels ------------------------------------------------------------------
def _message(kind: Any = "stalled") -> Message:
    return Message(kind=kind, title="queue stalled", text="3 jobs waiting", count=1, first_at=0.0, last_at=0.0,
                   host="mini")


def test_the_json_payload_reads_as_slack_text_and_carries_the_details() -> None:
    body, headers = webhook_request(_message(), fmt="json")
    payload = json.loads(body)
    assert payload["text"] == "cutout on mini: 3 jobs waiting" and payload["cutout"]["kind"] == "stalled"
    assert headers["Content-Type"] == "application/json"


def test_the_ntfy_format_is_plain_text_with_a_title_header(hook: Hook) -> None:
    body, headers = webhook_request(_message(), fmt="ntfy")
    assert body == b"3 jobs waiting" and headers["Title"] == "cutout on mini: queue stalled"
    assert headers["Priority"] == "high"
    assert urllib_post(hook.url, body, headers) == 200 and hook.requests[0][0]["Title"] == headers["Title"]


def test_desktop_notifications_pass_the_text_as_arguments_never_as_script() -> None:
    calls: list[list[str]] = []
    notify = CommandNotifier("/usr/bin/osascript", run=calls.append)
    notify('cutout: quarantined', 'a "b" & c.jpg" end tell')
    argv = calls[0]
    assert argv[0] == "/usr/bin/osascript" and argv[-2:] == ["cutout: quarantined", 'a "b" & c.jpg" end tell']
    assert all('"b"' not in part for part in argv[:-2])
    CommandNotifier("/usr/bin/notify-send", run=calls.append)("t", "x")
    assert calls[1] == ["/usr/bin/notify-send", "--app-name=cutout", "t", "x"]
    assert desktop_notifier(system="Darwin", which=lambda name: f"/usr/bin/{name}") == CommandNotifier("/usr/bin/osascript")
    assert desktop_notifier(system="Linux", which=lambda name: None) is None  # log only


def test_a_webhook_url_is_logged_by_its_host_alone() -> None:
    assert redact_url("https://hooks.slack.com/services/T0/B0/XYZ?token=1") == "https://hooks.slack.com/…"


def test_doubtful_cut_outs_waiting_for_review_are_said_with_how_many_wait(
    hook: Hook, store: JobQueue, clock: FakeClock
) -> None:
    alerts = Alerts(_settings(hook, group_seconds=0), clock=clock, host="mini")
    monitor = _monitor(store, alerts, clock)
    monitor.tick()
    for name in ("a.jpg", "b.jpg"):
        store.offer(P(name), Fingerprint(1, 1))
        job = store.claim()
        assert job is not None
        store.finish(job, content_hash="h", fingerprint=Fingerprint(1, 1), publish=lambda: None, doubt=0.9, review=True)
    monitor.tick()
    alerts.tick()
    monitor.tick()  # nothing new waits: nothing more to say
    alerts.tick()
    [message] = hook.messages()
    assert message["cutout"]["kind"] == "review"
    assert message["text"] == ("cutout on mini: 2 doubtful cut-outs wait for review (2 new): cutout review list, "
                               "or the dashboard's Review view")
    monitor.close()
