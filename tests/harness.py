"""Run `cutout watch` as a real subprocess on temp folders, and read what it did."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from daemon.folders.claims import CLAIM_FILE

START_TIMEOUT = 60.0


class DaemonProcess:
    """One `python -m daemon watch --config ...` process and its JSON-lines log."""

    def __init__(self, root: Path, *, model: str, settings: dict[str, object] | None = None) -> None:
        self.root = root
        self.input, self.output, self.quarantine = root / "in", root / "out", root / "quarantine"
        self.state, self.archive = root / "state", root / "archive"
        self.input.mkdir(parents=True, exist_ok=True)
        config: dict[str, object] = {
            "folders": {"input": str(self.input), "output": str(self.output), "quarantine": str(self.quarantine),
                        "state": str(self.state), "archive": str(self.archive)},
            "model": {"name": model, "device": "cpu"},
            "watch": {"settle_seconds": 0.3, "reconcile_interval_seconds": 60.0},
            "logging": {"format": "json"},
        }
        for key, value in (settings or {}).items():
            section = config.get(key)
            config[key] = {**section, **value} if isinstance(section, dict) and isinstance(value, dict) else value
        self.config = root / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = root / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, *, wait: bool = True) -> DaemonProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daemon", "watch", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        self.starts += 1
        if wait:
            expected = self.starts
            self.wait_for(lambda: self.started_count() >= expected, what="daemon_started")
        return self

    def kill_if_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def events(self, name: str | None = None) -> list[dict[str, object]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if name is None or event.get("event") == name:
                    found.append(event)
        return found

    def started_count(self) -> int:
        return len(self.events("daemon_started"))

    def jobs(self, outcome: str | None = None) -> list[dict[str, object]]:
        return [e for e in self.events("job") if outcome is None or e.get("outcome") == outcome]

    def wait_for(self, condition: Callable[[], bool], *, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process is not None and self.process.poll() is not None and not condition():
                raise AssertionError(f"daemon exited ({self.process.returncode}) waiting for {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.tail()}")
            time.sleep(0.05)

    def wait_for_exit(self, *, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait_for_exit()

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.signal(signal.SIGTERM)
        return self.wait_for_exit()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def outputs(self) -> list[str]:
        """Every file in the output folder but the daemon's claim on it."""
        return sorted(p.relative_to(self.output).as_posix() for p in self.output.rglob("*")
                      if p.is_file() and p.name != CLAIM_FILE)

    def quarantined(self) -> dict[str, str]:
        """Quarantined originals and the reason in their error file."""
        found = {}
        for report in self.quarantine.rglob("*.error.json"):
            original = report.with_name(report.name.removesuffix(".error.json"))
            found[original.relative_to(self.quarantine).as_posix()] = json.loads(report.read_text())["reason"]
        return found
