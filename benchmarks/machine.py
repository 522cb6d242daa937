"""What the numbers were measured on: a result without its machine is meaningless."""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / "work"
"""Inputs, daemons' folders and smoke results: git-ignored."""
RESULTS = REPO / "benchmarks" / "results"
"""The results BENCHMARKS.md cites: committed."""


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux, sysctl on macOS)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    try:
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, check=False)
        if out.stdout.strip():
            return out.stdout.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_bytes() -> int:
    """Physical memory, from sysconf (Linux and macOS both answer)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def usable_cpus() -> int:
    """Cores this process may run on (a container's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average (0 where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return 0.0


MIN_WINDOW_S = 2.0
"""/proc/stat counts in 10 ms ticks: shorter windows give noise, not a share."""


@dataclass(frozen=True)
class CpuSnapshot:
    """System-wide busy CPU seconds (/proc/stat) and this process tree's own CPU seconds."""

    when: float
    busy_s: float | None
    own_s: float


def cpu_snapshot() -> CpuSnapshot:
    """Own time includes waited-for children (the daemon and `cutout process` subprocesses)."""
    times = os.times()
    own = times.user + times.system + times.children_user + times.children_system
    return CpuSnapshot(time.monotonic(), _system_busy_seconds(), own)


def _system_busy_seconds() -> float | None:
    stat = Path("/proc/stat")
    if not stat.exists():
        return None
    fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_share(before: CpuSnapshot, after: CpuSnapshot, *, cpus: int) -> float | None:
    """Share of all cores that other processes (or the hypervisor) used between two snapshots.

    Other sessions' test runs on a shared 2-core machine halve what the daemon
    gets; this number says when a result must not be trusted.
    """
    if before.busy_s is None or after.busy_s is None or after.when - before.when < MIN_WINDOW_S:
        return None
    others = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    return max(0.0, others / ((after.when - before.when) * cpus))


def wait_until_idle(*, timeout: float, window: float = 5.0, threshold: float = 0.05) -> float | None:
    """Wait (up to `timeout`) for a `window` in which others use under `threshold` of the cores."""
    deadline = time.monotonic() + timeout
    share = None
    while True:
        before = cpu_snapshot()
        time.sleep(window)
        share = others_share(before, cpu_snapshot(), cpus=usable_cpus())
        if share is None or share < threshold or time.monotonic() > deadline:
            return share


def device_name(device: torch.device) -> str:
    """`cpu`, or the accelerator's name (`cuda: NVIDIA H100 80GB HBM3`, `mps`)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


def git_revision() -> str:
    """The commit measured, with `+dirty` when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "daemon"], cwd=REPO, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty(daemon/)" if dirty.stdout.strip() else "")


def machine_info(device: torch.device) -> dict[str, Any]:
    """Everything a reader needs to compare this run with another one."""
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "ram_gib": round(ram_bytes() / 2**30, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "numpy": np.__version__,
        "device": device_name(device),
        "git": git_revision(),
    }


def slug(info: dict[str, Any]) -> str:
    """A file-name-safe label: the accelerator when there is one, else the host name."""
    label = info["device"] if info["device"] != "cpu" else f"{info['host']}-cpu"
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()[:60]
