"""The daemon side of the soak run: a supervisor that restarts `cutout watch` after every
death (as launchd's KeepAlive would), the signals the chaos sends it, a sampler of its
memory and CPU, and readers of what it left (its JSON logs, its queue, its session record).

Each life of the daemon logs to its own file, so a start-up, a kill and the
recovery that follows can be read back per process.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.endtoend import child_env, cutout_command, read_cpu_seconds, read_rss_kb
from benchmarks.machine import REPO

TERM_TIMEOUT_S = 60.0
"""A SIGTERM'd daemon must be gone by then (docs/hot-folder.md: "exit 0 within seconds"); else it is killed and counted."""
SAMPLE_SECONDS = 1.0
DEFECT_EVENTS = frozenset({
    "worker_loop_failed", "watch_error", "file_set_aside", "queue_damaged", "previous_process_crashed",
    "failure_not_recorded", "stage_not_recorded", "retry_not_recorded", "after_done_failed",
    "originals_policy_failed", "file_not_quarantined", "job_error", "native_stderr_not_captured",
    "hot_folder_unavailable", "store_unreachable",
})
"""Log events that only a defect (or a machine problem) explains; on a local folder and the
SQLite queue a soak run expects none."""


@dataclass
class Life:
    """One daemon process: when it ran, what it was sent, how it ended."""

    index: int
    pid: int
    log: Path
    started: float
    """time.monotonic() at Popen."""
    sent: list[str] = field(default_factory=list)
    """Signals the chaos sent it, in order (KILL, TERM), with `@startup` for those sent by the supervisor."""
    ended: float | None = None
    exit_code: int | None = None
    term_at: float | None = None
    """time.monotonic() of the first SIGTERM, for the stop timeout."""
    term_timed_out: bool = False

    def expected_exit(self) -> bool:
        """Killed after a SIGKILL; 0 after a SIGTERM, or -15 when it came before the handlers were
        installed (during imports or the model load). Anything else is the daemon's own doing."""
        if "KILL" in (s.split("@")[0] for s in self.sent):
            return self.exit_code == -signal.SIGKILL
        if "TERM" in (s.split("@")[0] for s in self.sent):
            return self.exit_code in (0, -signal.SIGTERM)
        return False


class Supervisor(threading.Thread):
    """Keeps one `cutout watch` running: starts it, waits for it, starts it again after any exit.

    Like launchd's KeepAlive it restarts after a crash and after a clean stop alike (the soak
    treats SIGTERM as a restart, a deploy or a logout). The restart delay is short, not
    launchd's 10 s throttle, so a 30-minute run sees many lives. While `startup_chaos` is set,
    some lives get a signal of their own a few seconds after Popen: during imports, the model
    load, the start-up recovery, or the first jobs.
    """

    def __init__(self, *, config: Path, logs: Path, rng: random.Random, startup_kill_share: float) -> None:
        super().__init__(name="soak-supervisor", daemon=True)
        self.config, self.logs, self.rng = config, logs, rng
        self.startup_kill_share = startup_kill_share
        self.startup_chaos = threading.Event()
        self.lives: list[Life] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        logs.mkdir(parents=True, exist_ok=True)

    # --- the loop --------------------------------------------------------------------
    def run(self) -> None:
        while not self._stopping.is_set():
            life = self._start()
            self._wait(life)
            if not self._stopping.is_set():
                time.sleep(self.rng.uniform(0.5, 3.0))

    def _start(self) -> Life:
        index = len(self.lives)
        log = self.logs / f"daemon-{index:04d}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cutout_command("watch", "--config", str(self.config)),
                                    cwd=REPO, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
        life = Life(index=index, pid=proc.pid, log=log, started=time.monotonic())
        with self._lock:
            self._proc = proc
            self.lives.append(life)
        return life

    def _wait(self, life: Life) -> None:
        """Until the process exits; a start-up signal on the way; a SIGTERM that hangs gets a SIGKILL."""
        proc = self._proc
        assert proc is not None
        startup_signal = self._startup_plan()
        while proc.poll() is None:
            now = time.monotonic()
            if startup_signal is not None and now - life.started >= startup_signal[1]:
                self.send(startup_signal[0], note="startup")
                startup_signal = None
            term = life.term_at
            if term is not None and now - term > TERM_TIMEOUT_S and not life.term_timed_out:
                life.term_timed_out = True
                self.send(signal.SIGKILL, note="after-term-timeout")
            time.sleep(0.05)
        with self._lock:
            life.ended, life.exit_code = time.monotonic(), proc.returncode
            self._proc = None

    def _startup_plan(self) -> tuple[signal.Signals, float] | None:
        if not self.startup_chaos.is_set() or self.rng.random() >= self.startup_kill_share:
            return None
        which = signal.SIGKILL if self.rng.random() < 0.7 else signal.SIGTERM
        return which, self.rng.uniform(0.0, 8.0)

    # --- what the chaos and the run call -------------------------------------------------
    def send(self, signum: signal.Signals, *, note: str = "") -> bool:
        """Signal the running daemon; False when none runs right now (between lives)."""
        with self._lock:
            proc, life = self._proc, (self.lives[-1] if self.lives else None)
            if proc is None or life is None or proc.poll() is not None:
                return False
            proc.send_signal(signum)
            name = signum.name.removeprefix("SIG")
            life.sent.append(f"{name}@{note}" if note else name)
            if signum == signal.SIGTERM and life.term_at is None:
                life.term_at = time.monotonic()
            return True

    def current(self) -> Life | None:
        """The running life (None between lives)."""
        with self._lock:
            return self.lives[-1] if self._proc is not None and self.lives else None

    def wait_started(self, *, timeout: float) -> Life:
        """The current life once it has logged `daemon_started` (restarting through any death)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            life = self.current()
            if life is not None and log_events(life.log, "daemon_started"):
                return life
            time.sleep(0.1)
        raise RuntimeError(f"no daemon started within {timeout:.0f} s:\n{self.tail()}")

    def shutdown(self) -> int | None:
        """Stop restarting, SIGTERM the running daemon, and return its exit status."""
        self._stopping.set()
        self.send(signal.SIGTERM, note="final")
        self.join(timeout=TERM_TIMEOUT_S + 30)
        return self.lives[-1].exit_code if self.lives else None

    def tail(self, lines: int = 40) -> str:
        if not self.lives:
            return "(no daemon was started)"
        return "\n".join(self.lives[-1].log.read_text(errors="replace").splitlines()[-lines:])


# --- Memory and CPU, from /proc --------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    at: float
    """Seconds since the run started."""
    life: int
    rss_kb: int
    hwm_kb: int | None
    cpu_s: float | None


class ResourceSampler(threading.Thread):
    """Once a second: the running daemon's VmRSS, VmHWM and CPU seconds (its whole life's)."""

    def __init__(self, supervisor: Supervisor, *, t0: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.supervisor, self.t0 = supervisor, t0
        self.samples: list[Sample] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_SECONDS):
            life = self.supervisor.current()
            if life is None:
                continue
            try:
                rss, hwm = read_rss_kb(life.pid)
                cpu = read_cpu_seconds(life.pid)
            except (OSError, KeyError, ValueError):
                continue  # it died between the look and the read
            self.samples.append(Sample(round(time.monotonic() - self.t0, 2), life.index, rss, hwm, cpu))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def idle_cpu_percent(pid: int, *, seconds: float) -> float:
    """Share of one core the process used over `seconds` of doing nothing visible, in %."""
    before = read_cpu_seconds(pid)
    time.sleep(seconds)
    after = read_cpu_seconds(pid)
    if before is None or after is None:
        raise RuntimeError(f"process {pid} went away during the idle CPU measurement")
    return 100.0 * (after - before) / seconds


# --- Reading what the daemon left -------------------------------------------------------------
def read_log(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON events of one life's log and how many lines were not JSON (a traceback, a native
    library printing on its own): docs/hot-folder.md promises JSON lines only."""
    events, other = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            other += 1
            continue
        if isinstance(event, dict):
            events.append(event)
        else:
            other += 1
    return events, other


def log_events(path: Path, name: str) -> list[dict[str, Any]]:
    try:
        return [e for e in read_log(path)[0] if e.get("event") == name]
    except OSError:
        return []


def summarize_logs(lives: list[Life]) -> dict[str, Any]:
    """Job outcomes, warnings and errors by event, the recoveries at start-up, across every life."""
    outcomes: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    defects: list[dict[str, Any]] = []
    recovered: Counter[str] = Counter()
    swept, non_json, started = 0, 0, 0
    for life in lives:
        events, other = read_log(life.log)
        non_json += other
        for event in events:
            name = str(event.get("event"))
            if name == "job":
                outcomes[f"{event.get('outcome')}:{event.get('reason') or ''}".rstrip(":")] += 1
            elif name == "daemon_started":
                started += 1
                swept += int(event.get("stale_temp_files") or 0)
                recovered.update({k: int(v) for k, v in (event.get("recovered_running_jobs") or {}).items()})
            if event.get("level") in ("warning", "error", "critical") and name != "job":
                levels[f"{event.get('level')}:{name}"] += 1
            if name in DEFECT_EVENTS:
                fields = {key: event.get(key) for key in ("event", "path", "error", "timestamp")}
                defects.append({"life": life.index, **fields})
    return {"job_outcomes": dict(sorted(outcomes.items())), "warnings_and_errors": dict(sorted(levels.items())),
            "defect_events": defects, "daemon_started": started, "stale_temp_files_swept": swept,
            "recovered_running_jobs": dict(recovered), "non_json_lines": non_json}


def _read_queue(state: Path, sql: str, *, timeout: float) -> list[tuple[object, ...]] | None:
    """Rows of one read-only query on the daemon's queue; None while it cannot be read (busy, or not there yet)."""
    path = state / "queue.sqlite3"
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def queue_counts(state: Path) -> dict[str, int] | None:
    """Jobs by state (None while the database cannot be read)."""
    rows = _read_queue(state, "SELECT state, COUNT(*) FROM jobs GROUP BY state", timeout=2.0)
    return None if rows is None else {str(state): int(str(count)) for state, count in rows}


def jobs_in_stage(state: Path) -> int | None:
    """Jobs inside a stage (decode, model, encode) now; None when unreadable."""
    rows = _read_queue(state, "SELECT COUNT(*) FROM jobs WHERE state = 'running' AND stage IS NOT NULL", timeout=0.5)
    return None if rows is None else int(str(rows[0][0]))


def waiting_files(state: Path) -> list[str] | None:
    """The files the running daemon's settler holds back (its session record); None when unreadable."""
    try:
        live = json.loads((state / "session.json").read_text(encoding="utf-8"))["live"] or {"waiting": []}
        return [str(item["path"]) for item in live["waiting"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError):
        return None
