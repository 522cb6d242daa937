"""How long the commands that never run the model take, as a user types them.

    python -m benchmarks.cli_startup [--runs 15]

`cutout status` is what a person runs to see whether a shoot is flowing; it must answer
at once, so it never imports torch, transformers or OpenCV (tests/test_architecture.py
checks that it does not). This prints the wall time of each such command, a fresh
process each run, with the Python start-up it includes, next to a bare `python -c pass`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

from daemon.store.jobs import Fingerprint
from daemon.store.sqlite import JobQueue

JOBS = 2_000
"""A queue of a busy day's size, so status reads real rows."""


def _seconds(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def _queue_of(state: Path, *, jobs: int) -> None:
    queue = JobQueue(state / "queue.sqlite3")
    for index in range(jobs):
        queue.offer(PurePosixPath(f"shoot/{index:05d}.jpg"), Fingerprint(size=1000 + index, mtime_ns=index))
    queue.close()


def commands(state: Path) -> dict[str, list[str]]:
    cutout = [sys.executable, "-m", "daemon"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "cutout --version": [*cutout, "--version"],
        "cutout --help": [*cutout, "--help"],
        f"cutout status ({JOBS} jobs)": [*cutout, "status", "--state", str(state)],
        "python -c 'import torch, cv2'": [sys.executable, "-c", "import torch, cv2"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per command (median reported)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder)
        _queue_of(state, jobs=JOBS)
        print(f"{'command':<36} {'median':>8} {'min':>8}  ({args.runs} runs each)")
        for name, command in commands(state).items():
            times = [_seconds(command) for _ in range(args.runs)]
            print(f"{name:<36} {statistics.median(times):>7.3f}s {min(times):>7.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
