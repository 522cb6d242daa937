"""A crash of the process leaves a report; a kill from outside and a clean exit leave none.

Real processes, real signals: what is under test is what a dying process manages to write.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.store.crashreport import CrashReport

_ARMED_THEN = """
import ctypes, os, signal, sys, time
from pathlib import Path
from daemon.store.crashreport import CrashReport

report = CrashReport(Path(sys.argv[1]))
report.arm()
print("armed", flush=True)
how = sys.argv[2]
if how == "segfault":
    ctypes.string_at(0)
elif how == "abort":
    os.abort()
elif how == "wait":
    time.sleep(60)
report.disarm()
"""


def _run(path: Path, how: str) -> int:
    return subprocess.run([sys.executable, "-c", _ARMED_THEN, str(path), how], capture_output=True).returncode


@pytest.mark.parametrize(("how", "signum"), [("segfault", signal.SIGSEGV), ("abort", signal.SIGABRT)])
def test_a_process_that_dies_of_its_own_fatal_signal_leaves_a_report_with_its_traceback(
    tmp_path: Path, how: str, signum: int
) -> None:
    path = tmp_path / "crash-report.txt"
    assert _run(path, how) == -signum
    report = CrashReport(path).previous()
    assert "Fatal Python error" in report and "<module>" in report


def test_a_process_killed_from_outside_leaves_an_empty_report(tmp_path: Path) -> None:
    path = tmp_path / "crash-report.txt"
    path.write_text("the report of an older crash, already read")
    with subprocess.Popen([sys.executable, "-c", _ARMED_THEN, str(path), "wait"], stdout=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stdout.readline() == b"armed\n"
        process.kill()
        assert process.wait(timeout=30) == -signal.SIGKILL
    assert CrashReport(path).previous() == ""


def test_a_clean_exit_leaves_an_empty_report_and_a_missing_file_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "crash-report.txt"
    assert CrashReport(path).previous() == ""
    assert _run(path, "exit") == 0
    assert path.stat().st_mode & 0o777 == 0o600 and CrashReport(path).previous() == ""
