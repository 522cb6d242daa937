"""Fake `launchctl` and `systemctl` executables for tests: real scripts first on PATH.

They record their argv, one JSON list per line, and fail on demand through
FAKE_LAUNCHCTL_FAIL / FAKE_SYSTEMCTL_FAIL (comma-separated subcommands). The launchctl fake
keeps a "loaded" state file whose text is what `launchctl print` shows; the systemctl fake
answers `show` with its state file (or a not-found unit). Import the fixtures into a test
module to use them.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

UID = 501
LABEL = "com.cutout.daemon"
TARGET = f"gui/{UID}/{LABEL}"

RUNNING_PRINT = """\
gui/501/com.cutout.daemon = {
	active count = 1
	path = /Users/me/Library/LaunchAgents/com.cutout.daemon.plist
	type = LaunchAgent
	state = running

	program = /Users/me/cutout/.venv/bin/python
	arguments = {
		/Users/me/cutout/.venv/bin/python
		-m
		daemon
		watch
		--config
		/Users/me/cutout/config.yaml
	}

	working directory = /Users/me/Library/Logs/com.cutout.daemon

	stdout path = /Users/me/Library/Logs/com.cutout.daemon/stdout.log
	stderr path = /Users/me/Library/Logs/com.cutout.daemon/stderr.log
	default environment = {
		PATH => /usr/bin:/bin:/usr/sbin:/sbin
	}

	environment = {
		PYTHONUNBUFFERED => 1
		HF_HOME => /Users/me/.cache/huggingface
		XPC_SERVICE_NAME => com.cutout.daemon
	}

	domain = gui/501 [100008]
	asid = 100008
	minimum runtime = 10
	exit timeout = 60
	runs = 3
	pid = 4242
	immediate reason = inefficient
	forks = 2
	execs = 1
	initialized = 1
	trampolined = 1
	started suspended = 0
	proxy started suspended = 0
	checked allocations = 0 (queried = 1)
	last exit code = 1

	semaphores = {
		successful exit => 0
	}

	event triggers = {
		com.cutout.daemon.268435462 => {
			keepalive = 1
			service = com.cutout.daemon
			stream = com.apple.launchd.keepalive
			descriptor = {
				"state" => 0
			}
			state = waiting
			pid = 99
		}
	}

	spawn type = interactive (3)
	jetsam priority = 40
	probabilistic guard malloc policy = {
		activation rate = 1/1000
		sample rate = 1/0
	}

	properties = keepalive | runatload | inferred program
}
"""

STOPPED_PRINT = """\
gui/501/com.cutout.daemon = {
	active count = 0
	path = /Users/me/Library/LaunchAgents/com.cutout.daemon.plist
	type = LaunchAgent
	state = not running

	program = /Users/me/cutout/.venv/bin/python
	runs = 7
	last exit code = 78: EX_CONFIG
	spawn type = interactive (3)
	properties = keepalive | runatload | inferred program
}
"""

NEVER_EXITED_PRINT = RUNNING_PRINT.replace(
    "last exit code = 1", "last exit code = (never exited)"
)

FAKE_LAUNCHCTL = """\
#!{python}
import json, os, sys
from pathlib import Path

state = Path({state!r})
with open({log!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
command = sys.argv[1] if len(sys.argv) > 1 else ""
if command in os.environ.get("FAKE_LAUNCHCTL_FAIL", "").split(","):
    sys.stderr.write(command.capitalize() + " failed: 5: Input/output error\\n")
    sys.exit(5)
if command == "bootstrap":
    state.write_text({running!r})
elif command == "print" and state.exists():
    sys.stdout.write(state.read_text())
elif command == "print":
    sys.stderr.write('Bad request.\\nCould not find service "{label}" in domain for user gui: {uid}\\n')
    sys.exit(113)
elif command == "bootout" and state.exists():
    state.unlink()
elif command == "bootout":
    sys.stderr.write("Boot-out failed: 3: No such process\\n")
    sys.exit(3)
"""

FAKE_SYSTEMCTL = """\
#!{python}
import json, os, sys
from pathlib import Path

state = Path({state!r})
with open({log!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
command = sys.argv[2] if len(sys.argv) > 2 else ""
if command in os.environ.get("FAKE_SYSTEMCTL_FAIL", "").split(","):
    sys.stderr.write("Failed to " + command + " unit: Unit cutout.service has a bad setting.\\n")
    sys.exit(1)
if command == "show":
    sys.stdout.write(state.read_text() if state.exists() else {not_found!r})
"""

SYSTEMD_NOT_FOUND = "LoadState=not-found\nActiveState=inactive\nSubState=dead\nMainPID=0\nExecMainStatus=0\n"
SYSTEMD_RUNNING = "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=4242\nExecMainStatus=0\n"
SYSTEMD_FAILED = "LoadState=loaded\nActiveState=failed\nSubState=failed\nMainPID=0\nExecMainStatus=78\n"


@dataclass(frozen=True)
class FakeTool:
    log: Path
    state: Path

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def changes(self) -> list[list[str]]:
        """The calls that change something (every call but launchctl's read-only print)."""
        return [call for call in self.calls() if call[:1] != ["print"]]

    def set_loaded(self, print_text: str) -> None:
        """What `launchctl print` (or `systemctl show`) answers from now on."""
        self.state.write_text(print_text)


def _write_executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


@pytest.fixture
def fake_launchctl(tmp_path: Path, fake_bin: Path) -> FakeTool:
    tool = FakeTool(log=tmp_path / "launchctl.log", state=tmp_path / "launchctl.loaded")
    script = FAKE_LAUNCHCTL.format(
        python=sys.executable,
        state=str(tool.state),
        log=str(tool.log),
        running=RUNNING_PRINT,
        label=LABEL,
        uid=UID,
    )
    _write_executable(fake_bin / "launchctl", script)
    return tool


@pytest.fixture
def fake_systemctl(tmp_path: Path, fake_bin: Path) -> FakeTool:
    tool = FakeTool(log=tmp_path / "systemctl.log", state=tmp_path / "systemctl.show")
    script = FAKE_SYSTEMCTL.format(
        python=sys.executable, log=str(tool.log), state=str(tool.state), not_found=SYSTEMD_NOT_FOUND
    )
    _write_executable(fake_bin / "systemctl", script)
    return tool
