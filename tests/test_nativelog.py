"""OpenCV's and libjpeg's stderr lines become log events: the daemon's log stays pure JSON lines.

Both tests run real processes: what is under test is file descriptor 2 of a process, which
pytest's own capture would otherwise stand in for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import subject_image
from tests.harness import DaemonProcess

BOX = (100, 80, 300, 220)

_DECODE_WITH_CAPTURE = """
import sys
import cv2, numpy as np
from daemon.cli.nativelog import capture_native_stderr
from daemon.logs import configure_logging
from daemon.settings import LoggingSettings

configure_logging(LoggingSettings(format="json"), stream=sys.stdout)
with capture_native_stderr():
    cv2.imdecode(np.fromfile(sys.argv[1], np.uint8), cv2.IMREAD_UNCHANGED)  # libjpeg: "Corrupt JPEG data"
    cv2.imread(sys.argv[1] + ".missing")  # OpenCV's own logger: "[ WARN:...] ... imread_"
    cv2.GaussianBlur(np.zeros((512, 512), np.float32), (5, 5), 0)  # starts OpenCV's thread pool (DEBUG lines)
    print("python's own stderr", file=sys.stderr)
print("after stop", file=sys.stderr)
"""


def _corrupt_jpeg(path: Path) -> Path:
    """A JPEG whose scan stops half-way but which has its end marker: OpenCV decodes it
    (grey-filled) and its libjpeg prints 'Corrupt JPEG data: premature end of data segment'."""
    ok, encoded = cv2.imencode(".jpg", subject_image(300, 400, BOX))
    assert ok
    data = encoded.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    return path


def _json_lines(text: str) -> list[dict[str, object]]:
    """Every line parsed as JSON: a bare line of text fails the test, naming the line."""
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line in the log: {line!r}")
    return events


def _native_lines(events: list[dict[str, object]]) -> list[str]:
    return [str(event["line"]) for event in events if event.get("event") == "native_stderr"]


def test_native_lines_become_warning_events_and_python_stderr_still_works(tmp_path: Path) -> None:
    jpeg = _corrupt_jpeg(tmp_path / "corrupt.jpg")
    # The user's environment may turn OpenCV's logger up: its INFO and DEBUG lines go to stdout.
    env = {**os.environ, "OPENCV_LOG_LEVEL": "DEBUG"}
    done = subprocess.run([sys.executable, "-c", _DECODE_WITH_CAPTURE, str(jpeg)],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    events = _json_lines(done.stdout)
    native = _native_lines(events)
    assert "Corrupt JPEG data: premature end of data segment" in native
    assert any("WARN" in line and "imread_" in line for line in native)
    assert {event["level"] for event in events if event["event"] == "native_stderr"} == {"warning"}
    assert done.stderr.splitlines() == ["python's own stderr", "after stop"]


def test_a_log_on_stderr_does_not_read_its_own_lines_back(tmp_path: Path) -> None:
    # Logging to stderr (as every command but `watch` does) must follow Python's stderr to the
    # real descriptor: left on descriptor 2, each event would come back as a native line, forever.
    jpeg = _corrupt_jpeg(tmp_path / "corrupt.jpg")
    script = _DECODE_WITH_CAPTURE.replace("stream=sys.stdout", "stream=sys.stderr")
    done = subprocess.run([sys.executable, "-c", script, str(jpeg)],
                          capture_output=True, text=True, timeout=60, check=True)
    lines = done.stderr.splitlines()
    # The log thread may still be writing the last native line's event when Python prints its own.
    assert lines[-1] == "after stop" and lines.count("python's own stderr") == 1
    native = _native_lines(_json_lines("\n".join(line for line in lines[:-1] if line != "python's own stderr")))
    assert native.count("Corrupt JPEG data: premature end of data segment") == 1
    assert not any("native_stderr" in line for line in native)


@pytest.mark.slow
def test_the_daemon_log_with_stderr_merged_is_pure_json_lines(tmp_path: Path, torchscript_model: Path) -> None:
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model))  # stdout and stderr to one file
    daemon.start()
    _corrupt_jpeg(daemon.input / "corrupt.jpg")
    daemon.wait_for(lambda: len(daemon.jobs()) == 1, what="the corrupt JPEG's job")
    assert daemon.stop() == 0
    events = _json_lines(daemon.log.read_text())
    assert "Corrupt JPEG data: premature end of data segment" in _native_lines(events)
