"""Telling people when something is wrong: grouped, rate-limited, and never in the worker's way.

    Event ──post()──▶ Grouper ──(window over)──▶ Message ──▶ webhook   (retried with backoff)
    (monitor.py:       one window per kind:                  └─▶ desktop (Notification Center,
     quarantined,      200 bad files in a minute                          notify-send, or the log)
     stalled, ...)     are one message with a count

`post()` only appends to a list under a lock; everything else runs on the `cutout-alerts`
thread. A webhook that is down, slow or wrong is retried (1 s, doubling to 5 min, at most
`MAX_TRIES` times) while new messages queue behind it (at most `MAX_QUEUED`; the oldest
are dropped, and the log says how many): it can delay an alert, never the daemon.

The webhook URL is a secret (Slack's and Teams' carry their key in the path): logs name
only its scheme and host (`redact_url`).
"""

from __future__ import annotations

import http.client
import json
import platform
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol
from urllib.parse import urlsplit

import structlog

from daemon import __version__
from daemon.settings import AlertSettings, WebhookFormat

log = structlog.get_logger("cutout.alerts")

Kind = Literal["quarantined", "stalled", "moving", "crashed", "disk_low", "not_queued", "review"]
TITLES: dict[Kind, str] = {
    "quarantined": "files quarantined",
    "stalled": "queue stalled",
    "moving": "queue moving again",
    "crashed": "daemon restarted after a crash",
    "disk_low": "output disk nearly full",
    "not_queued": "new files cannot be queued",
    "review": "cut-outs wait for review",
}
MAX_FILES_NAMED = 10
"""A message names this many files; the count says how many more."""
MAX_QUEUED = 100
MAX_TRIES = 8
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 300.0
POST_TIMEOUT = 5.0
FINAL_TRIES = 3
"""Messages still queued when the daemon stops get one try each, the latest this many."""


@dataclass(frozen=True)
class Event:
    kind: Kind
    detail: str
    """One sentence: what happened (for a quarantine, the message of the error)."""
    at: float
    file: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Message:
    """What is sent: one kind, everything of it that happened in one window."""

    kind: Kind
    title: str
    text: str
    count: int
    first_at: float
    last_at: float
    host: str
    files: tuple[str, ...] = ()
    reasons: dict[str, int] = field(default_factory=dict)

    def payload(self) -> dict[str, object]:
        """The webhook's JSON (docs/dashboard.md documents it): `text` for chat tools, `cutout` for programs."""
        return {
            "text": f"cutout on {self.host}: {self.text}",
            "cutout": {
                "kind": self.kind, "title": self.title, "count": self.count, "host": self.host,
                "files": list(self.files), "reasons": self.reasons,
                "first_at": _iso(self.first_at), "last_at": _iso(self.last_at), "version": __version__,
            },
        }


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")


def summarize(events: Sequence[Event], *, host: str) -> Message:
    """Events of one kind as one message."""
    kind, first = events[0].kind, events[0]
    reasons = dict(Counter(e.reason for e in events if e.reason).most_common())
    files = tuple(e.file for e in events if e.file)[:MAX_FILES_NAMED]
    if kind == "quarantined":
        text = _quarantine_text(events, reasons=reasons, files=files)
    else:
        text = first.detail if len(events) == 1 else f"{events[-1].detail} (and {len(events) - 1} earlier)"
    return Message(kind=kind, title=TITLES[kind], text=text, count=len(events), first_at=first.at,
                   last_at=events[-1].at, host=host, files=files, reasons=reasons)


def _quarantine_text(events: Sequence[Event], *, reasons: dict[str, int], files: tuple[str, ...]) -> str:
    if len(events) == 1:
        return f"quarantined {events[0].file}: {events[0].reason}: {events[0].detail}"
    by_reason = ", ".join(f"{reason} {count}" for reason, count in reasons.items())
    more = len(events) - len(files)
    named = ", ".join(files) + (f" and {more} more" if more > 0 else "")
    return f"{len(events)} files quarantined ({by_reason}): {named}"


class Grouper:
    """Holds events per kind until `window` seconds after the first of them, then gives one message."""

    def __init__(self, *, window: float, host: str) -> None:
        self.window, self.host = window, host
        self._held: dict[Kind, list[Event]] = {}
        self._opened: dict[Kind, float] = {}
        self._lock = threading.Lock()

    def add(self, event: Event, *, now: float) -> None:
        with self._lock:
            self._held.setdefault(event.kind, []).append(event)
            self._opened.setdefault(event.kind, now)

    def due(self, *, now: float, everything: bool = False) -> list[Message]:
        with self._lock:
            ready = [kind for kind, at in self._opened.items() if everything or now - at >= self.window]
            taken = [self._held.pop(kind) for kind in ready]
            for kind in ready:
                del self._opened[kind]
        return [summarize(events, host=self.host) for events in taken]


# --- Where messages go ------------------------------------------------------------------------
def redact_url(url: str) -> str:
    """A webhook URL as it may be logged: its scheme and host, never its path or query (the key)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…"


Poster = Callable[[str, bytes, dict[str, str]], int]
"""POST `body` with `headers` to a URL; the HTTP status (raises WebhookUnreachable when nothing answered)."""


class WebhookUnreachable(Exception):
    """The POST got no HTTP answer: refused, timed out, DNS, TLS, or a broken reply."""


def urllib_post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST and return the HTTP status; every way of getting no status is one error of ours
    (http.client's BadStatusLine and IncompleteRead are not OSErrors)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=POST_TIMEOUT) as response:  # noqa: S310 (http(s) only: settings)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise WebhookUnreachable(type(exc).__name__) from None  # `from None`: the URL (a secret) is in the cause


def webhook_request(message: Message, *, fmt: WebhookFormat) -> tuple[bytes, dict[str, str]]:
    """The body and headers for one message: JSON (Slack, Mattermost, Teams, any program) or ntfy's plain text."""
    agent = {"User-Agent": f"cutout/{__version__}"}
    if fmt == "ntfy":
        priority = "high" if message.kind in ("crashed", "disk_low", "stalled", "not_queued") else "default"
        title = f"cutout on {message.host}: {message.title}"
        return message.text.encode(), {**agent, "Content-Type": "text/plain; charset=utf-8",
                                       "Title": title.encode("ascii", "replace").decode(), "Priority": priority,
                                       "Tags": "warning" if message.kind != "moving" else "white_check_mark"}
    return json.dumps(message.payload()).encode(), {**agent, "Content-Type": "application/json"}


class Notifier(Protocol):
    """A notification on this machine's screen."""

    def __call__(self, title: str, text: str) -> None: ...


Runner = Callable[[list[str]], object]


def _run_quietly(argv: list[str]) -> object:
    return subprocess.run(argv, capture_output=True, timeout=10, check=True)


@dataclass(frozen=True)
class CommandNotifier:
    """`osascript` (macOS Notification Center) or `notify-send` (a Linux desktop), given as arguments,
    never spliced into a script: a file name cannot inject AppleScript."""

    tool: str
    run: Runner = _run_quietly

    def __call__(self, title: str, text: str) -> None:
        if self.tool.endswith("osascript"):
            script = ["-e", "on run argv", "-e", "display notification (item 2 of argv) with title (item 1 of argv)",
                      "-e", "end run"]
            self.run([self.tool, *script, title, text])
        else:
            self.run([self.tool, "--app-name=cutout", title, text])


def desktop_notifier(*, system: str | None = None, which: Callable[[str], str | None] = shutil.which) -> Notifier | None:
    """The machine's notifier: osascript on macOS, notify-send on Linux where installed, else None (log only)."""
    system = system or platform.system()
    tool = which("osascript") if system == "Darwin" else which("notify-send")
    return CommandNotifier(tool) if tool else None


# --- The sender ---------------------------------------------------------------------------------
@dataclass
class _Outgoing:
    message: Message
    tries: int = 0
    next_at: float = 0.0


class Alerts:
    """Events in (from any thread, never blocking), messages out (on its own thread)."""

    def __init__(
        self, settings: AlertSettings, *, clock: Callable[[], float] = time.time, post: Poster = urllib_post,
        notifier: Notifier | None = None, host: str | None = None, first_backoff: float = FIRST_BACKOFF,
        tick_seconds: float = 0.5,
    ) -> None:
        self.settings, self.clock, self.post, self.notifier = settings, clock, post, notifier
        self.first_backoff, self.tick_seconds = first_backoff, tick_seconds
        self.grouper = Grouper(window=settings.group_seconds, host=host or socket.gethostname())
        self._outbox: deque[_Outgoing] = deque()
        self._dropped = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent: list[Message] = []
        """Messages the webhook accepted (the last `MAX_QUEUED`), for tests and the dashboard."""

    def post_event(self, event: Event) -> None:
        """Never blocks, never raises."""
        try:
            self.grouper.add(event, now=self.clock())
        except Exception:  # pragma: no cover - a bug here must not reach the caller
            log.exception("alert_not_recorded")
        self._wake.set()

    def start(self) -> Alerts:
        self._thread = threading.Thread(target=self._loop, name="cutout-alerts", daemon=True)
        self._thread.start()
        return self

    def close(self, *, timeout: float = 2.0) -> None:
        """Stop the thread; what is grouped is sent once more, with `timeout` at most for all of it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + POST_TIMEOUT)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the alerts must never take anything down, themselves included
                log.exception("alerts_tick_failed")
            self._wake.wait(self.tick_seconds)
            self._wake.clear()
        try:
            self.tick(everything=True, final=True)
        except Exception:
            log.exception("alerts_tick_failed")

    def tick(self, *, everything: bool = False, final: bool = False) -> None:
        """Close the windows that are over, then deliver what is due."""
        now = self.clock()
        for message in self.grouper.due(now=now, everything=everything):
            self._notify(message)
            if self.settings.webhook_url is not None:
                self._queue(message)
        self._deliver(now=now, final=final)

    def _notify(self, message: Message) -> None:
        log.warning("alert", kind=message.kind, count=message.count, text=message.text)
        if self.notifier is None or not self.settings.desktop:
            return
        try:
            self.notifier(f"cutout: {message.title}", message.text)
        except Exception as exc:  # no desktop session, a missing tool: the log line above still says it
            log.warning("notification_failed", error=str(exc))

    def _queue(self, message: Message) -> None:
        self._outbox.append(_Outgoing(message))
        while len(self._outbox) > MAX_QUEUED:
            self._outbox.popleft()
            self._dropped += 1
            log.warning("alert_dropped", dropped=self._dropped, reason="the webhook has not answered for long")

    def _deliver(self, *, now: float, final: bool) -> None:
        url = self.settings.webhook_url
        if final and len(self._outbox) > FINAL_TRIES:  # stopping: a dead webhook must not hold the exit up
            log.error("alert_undelivered", count=len(self._outbox) - FINAL_TRIES, webhook=redact_url(url or ""))
            self._outbox = deque(list(self._outbox)[-FINAL_TRIES:])
        while url is not None and self._outbox and (final or self._outbox[0].next_at <= now):
            head = self._outbox[0]
            if not self._send(url, head.message):
                head.tries += 1
                if head.tries >= MAX_TRIES or final:
                    self._outbox.popleft()
                    log.error("alert_undelivered", kind=head.message.kind, tries=head.tries, webhook=redact_url(url))
                    continue
                head.next_at = now + min(MAX_BACKOFF, self.first_backoff * 2 ** (head.tries - 1))
                return
            self._outbox.popleft()
            self.sent = [*self.sent[-MAX_QUEUED + 1:], head.message]

    def _send(self, url: str, message: Message) -> bool:
        body, headers = webhook_request(message, fmt=self.settings.webhook_format)
        try:
            status = self.post(url, body, headers)
        except (WebhookUnreachable, OSError, ValueError) as exc:  # refused, timed out, DNS, TLS, a broken reply
            log.warning("webhook_failed", webhook=redact_url(url), error=type(exc).__name__, kind=message.kind)
            return False
        if 200 <= status < 300:
            log.info("webhook_sent", webhook=redact_url(url), kind=message.kind, count=message.count)
            return True
        log.warning("webhook_failed", webhook=redact_url(url), status=status, kind=message.kind)
        return False
