"""Whole-project checks: `mypy --strict` (configured in pyproject.toml), and the benchmark command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_daemon_package_type_checks_strictly() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_benchmark_command_runs_its_quick_smoke_run(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--results", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=580,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "== Targets ==" in completed.stdout and list(tmp_path.glob("*-quick.json"))
