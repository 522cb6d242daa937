"""End-to-end runs of the real commands in subprocesses: `cutout process` and `cutout watch`.

Time is read from the outside, the way a user sees it: an output counts when its
final name appears in the output folder (the daemon writes a hidden temp file
and renames it, so a visible name means a complete PNG). Memory is the daemon's
resident set, sampled from /proc/<pid>/status (psutil or `ps` elsewhere).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.machine import REPO, usable_cpus

POLL_SECONDS = 0.025
"""Output-folder polling period: the resolution of every end-to-end time."""
RSS_SAMPLE_SECONDS = 0.1
START_TIMEOUT = 600.0  # a real network exported for a runtime and checked against eager: minutes


def cutout_command(*args: str) -> list[str]:
    """`cutout ARGS` with the stand-in's operator registered (see benchmarks/cutout_cli.py)."""
    return [sys.executable, "-m", "benchmarks.cutout_cli", *args]


def child_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# --- Watching outputs and memory from outside ---------------------------------------------
class OutputWatcher(threading.Thread):
    """Remembers when each final (non-hidden) .png name first appeared under `folder`."""

    def __init__(self, folder: Path) -> None:
        super().__init__(name="bench-outputs", daemon=True)
        self.folder = folder
        self.seen: dict[str, float] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.poll()
            self._stop_event.wait(POLL_SECONDS)

    def poll(self) -> None:
        now = time.monotonic()
        for root, _, names in os.walk(self.folder):
            for name in names:
                if name.endswith(".png") and not name.startswith("."):
                    self.seen.setdefault(os.path.join(root, name), now)

    def count(self) -> int:
        return len(self.seen)

    def times(self) -> list[float]:
        return sorted(self.seen.values())

    def wait_for(self, count: int, *, timeout: float, alive: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < count:
            if not alive():
                self.poll()
                if self.count() >= count:
                    return
                raise RuntimeError(f"the process exited before {what} ({self.count()}/{count} outputs)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} ({self.count()}/{count})")
            time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()


def read_rss_kb(pid: int) -> tuple[int, int | None]:
    """(VmRSS, VmHWM) in KiB: /proc on Linux, psutil or `ps` elsewhere (no peak there)."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    try:
        import psutil  # type: ignore[import-untyped]

        return int(psutil.Process(pid).memory_info().rss // 1024), None
    except ImportError:
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, check=False)
        return int(out.stdout.strip() or 0), None


def read_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return None
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    """Samples (seconds, RSS KiB, outputs so far) of process `pid` until stopped."""

    def __init__(self, pid: int, outputs: OutputWatcher) -> None:
        super().__init__(name="bench-rss", daemon=True)
        self.pid, self.outputs = pid, outputs
        self.samples: list[tuple[float, int, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                rss, _ = read_rss_kb(self.pid)
            except (OSError, KeyError, ValueError):
                return  # the process is gone
            self.samples.append((time.monotonic(), rss, self.outputs.count()))
            self._stop_event.wait(RSS_SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()


def rss_near(samples: Sequence[tuple[float, int, int]], done: int, *, window: int = 10) -> int:
    """Highest RSS sampled while the output count was in (done - window, done]."""
    inside = [rss for _, rss, count in samples if done - window < count <= done]
    if inside:
        return max(inside)
    return min(samples, key=lambda s: abs(s[2] - done))[1] if samples else 0


def rss_slope_mb_per_100(samples: Sequence[tuple[float, int, int]], *, start: int) -> float:
    """Least-squares growth of RSS in MB per 100 images, from image `start` on."""
    points = [(count, rss / 1024) for _, rss, count in samples if count >= start]
    if len({c for c, _ in points}) < 2:
        return 0.0
    return float(statistics.linear_regression([c for c, _ in points], [r for _, r in points]).slope * 100)


# --- Input files ------------------------------------------------------------------------------------
def drop(source: Path, target: Path) -> None:
    """Copy into the hot folder the way an export does: hidden temp name, then rename."""
    temp = target.with_name(f".{target.name}.part")
    shutil.copyfile(source, temp)
    os.replace(temp, target)


def link_inputs(sources: Sequence[Path], folder: Path, count: int) -> list[Path]:
    """`count` inputs cycling through `sources` (hard links: `cutout process` only reads them)."""
    made = []
    for index in range(count):
        source = sources[index % len(sources)]
        target = folder / f"img-{index:04d}{source.suffix}"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        made.append(target)
    return made


# --- cutout process -------------------------------------------------------------------------------------
def run_process(
    sources: Sequence[Path], *, count: int, model: str, device: str, work: Path, worker: dict[str, int]
) -> dict[str, Any]:
    """`cutout process IN OUT` over `count` images: its rate between first and last output."""
    root = fresh_dir(work / "process")
    inputs, outputs = fresh_dir(root / "in"), root / "out"
    link_inputs(sources, inputs, count)
    config: list[str] = []
    if worker:
        (root / "config.yaml").write_text(yaml.safe_dump({"worker": worker}))
        config = ["--config", str(root / "config.yaml")]
    watcher = OutputWatcher(outputs)
    watcher.start()
    start = time.monotonic()
    with open(root / "stderr.log", "wb") as log:
        proc = subprocess.run(
            cutout_command("process", str(inputs), str(outputs), "--model", model, "--device", device, *config),
            cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=log, text=True, check=False,
        )
    end = time.monotonic()
    watcher.poll()
    watcher.stop()
    times = watcher.times()
    if proc.returncode != 0 or len(times) != count:
        raise RuntimeError(f"cutout process failed ({proc.returncode}, {len(times)}/{count} outputs):\n"
                           f"{proc.stdout}\n{(root / 'stderr.log').read_text()[-3000:]}")
    steady = (count - 1) / (times[-1] - times[0]) if count > 1 and times[-1] > times[0] else 0.0
    return {
        "images": count,
        "rate": round(steady, 3),
        "wall_s_with_startup": round(end - start, 2),
        "rate_with_startup": round(count / (end - start), 3),
        "summary": proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else "",
    }


# --- cutout watch -----------------------------------------------------------------------------------------
@dataclass
class DaemonUnderTest:
    """`cutout watch --config` in a subprocess on fresh folders, with its JSON log."""

    root: Path
    model: str
    device: str
    settle_seconds: float
    worker: dict[str, int] = field(default_factory=dict)
    """worker.* overrides (in_flight, cpu_threads); empty: the daemon's defaults."""
    model_settings: dict[str, Any] = field(default_factory=dict)
    """model.* besides its name and device (backend, ...)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment for the daemon besides ours (HF_HOME for a local hub cache, ...)."""
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        fresh_dir(self.root)
        self.input, self.output = fresh_dir(self.root / "in"), self.root / "out"
        self.log = self.root / "daemon.log"
        self.config = self.root / "config.yaml"
        folders = {name: str(self.root / name) for name in ("input", "output", "quarantine", "archive", "state")}
        folders["input"], folders["output"] = str(self.input), str(self.output)
        config = {
            "folders": folders,
            "model": {"name": self.model, "device": self.device, **self.model_settings},
            "watch": {"settle_seconds": self.settle_seconds},
            "logging": {"format": "json"},
            **({"worker": self.worker} if self.worker else {}),
        }
        self.config.write_text(yaml.safe_dump(config))

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cutout_command("watch", "--config", str(self.config)),
                                         cwd=REPO, env=child_env() | self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.events("daemon_started"):
            if not self.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"cutout watch did not start:\n{self.tail()}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
        return found

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int:
        if not self.alive():
            return self.proc.returncode if self.proc else 0
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def run_watch(
    sources: Sequence[Path],
    *,
    count: int,
    latency_sources: Sequence[tuple[str, Path]],
    latency_repeats: int,
    model: str,
    device: str,
    settle_seconds: float,
    work: Path,
    worker: dict[str, int],
    model_settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Single drops on the idle daemon (latency), then a burst of `count` drops (throughput, memory).

    Latency comes first: after a burst the kernel is still writing gigabytes of
    outputs back to disk, and the queue's fsyncs wait behind it."""
    daemon = DaemonUnderTest(work / "watch", model=model, device=device, settle_seconds=settle_seconds, worker=worker,
                             model_settings=model_settings or {}, env=env or {})
    daemon.start()
    assert daemon.proc is not None
    watcher = OutputWatcher(daemon.output)
    watcher.start()
    sampler = RssSampler(daemon.proc.pid, watcher)
    sampler.start()
    try:
        time.sleep(2.0)  # the daemon has started and warmed up: now it is idle
        latency = _latencies(daemon, watcher, latency_sources, repeats=latency_repeats, settle=settle_seconds)
        burst = _burst(daemon, watcher, sources, count=count)
        _, peak_kb = read_rss_kb(daemon.proc.pid)
    finally:
        sampler.stop()
        watcher.stop()
        exit_code = daemon.stop()
    offset, started = burst.pop("outputs_before"), burst.pop("started_at")
    during = [(t, rss, done - offset) for t, rss, done in sampler.samples if t >= started]
    memory = _memory(during, count=count, peak_kb=peak_kb)
    started = daemon.events("daemon_started")[0]
    return {
        "burst": {**burst, **_daemon_side(daemon, burst_jobs=count)},
        "latency": latency,
        "memory": {**memory, "in_flight": started.get("in_flight", started.get("settings", {}).get("worker", {}).get("in_flight")),
                   "cpu_threads": started.get("settings", {}).get("worker", {}).get("cpu_threads")},
        "exit_code": exit_code,
    }


def _burst(daemon: DaemonUnderTest, watcher: OutputWatcher, sources: Sequence[Path], *, count: int) -> dict[str, Any]:
    assert daemon.proc is not None
    before = watcher.count()
    cpu_before = read_cpu_seconds(daemon.proc.pid)
    first_drop = time.monotonic()
    for index in range(count):
        source = sources[index % len(sources)]
        drop(source, daemon.input / f"img-{index:04d}{source.suffix}")
    last_drop = time.monotonic()
    watcher.wait_for(before + count, timeout=max(300.0, 30.0 * count), alive=daemon.alive, what="the burst's outputs")
    cpu_after = read_cpu_seconds(daemon.proc.pid)
    times = watcher.times()[before:]
    seconds = times[-1] - first_drop
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    steady = (count - 1) / (times[-1] - times[0]) if count > 1 and times[-1] > times[0] else 0.0
    return {
        "images": count,
        "seconds": round(seconds, 2),
        "rate": round(count / seconds, 3),
        "rate_first_to_last_output": round(steady, 3),
        "drop_seconds": round(last_drop - first_drop, 2),
        "first_output_after_s": round(times[0] - first_drop, 2),
        "outputs_before": before,
        "started_at": first_drop,
        "daemon_cpu_s_per_image": None if cpu is None else round(cpu / count, 3),
        "daemon_cpu_busy": None if cpu is None else round(cpu / (seconds * usable_cpus()), 3),
    }


def _latencies(
    daemon: DaemonUnderTest, watcher: OutputWatcher, sources: Sequence[tuple[str, Path]], *, repeats: int, settle: float
) -> dict[str, Any]:
    """Drop one file on the idle daemon, wait for its output; minus the settle window."""
    results: dict[str, Any] = {"settle_seconds": settle}
    for label, source in sources:
        seconds = []
        for attempt in range(repeats):
            before = watcher.count()
            start = time.monotonic()
            drop(source, daemon.input / f"latency-{label}-{attempt}{source.suffix}")
            watcher.wait_for(before + 1, timeout=120.0, alive=daemon.alive, what=f"the {label} latency output")
            seconds.append(watcher.times()[-1] - start)
            time.sleep(1.0)
        results[label] = {"drop_to_output_s": round(statistics.median(seconds), 3),
                          "minus_settle_s": round(statistics.median(seconds) - settle, 3),
                          "runs": [round(s, 3) for s in seconds]}
    return results


def _memory(samples: Sequence[tuple[float, int, int]], *, count: int, peak_kb: int | None) -> dict[str, Any]:
    """RSS near image 50 and at the end of the burst; `samples` are (time, RSS KiB, burst outputs)."""
    early = 50 if count >= 200 else max(1, count // 4)
    at_early, at_end = rss_near(samples, early), rss_near(samples, count)
    burst = [rss for _, rss, _ in samples]
    return {
        "images": count,
        "early_image": early,
        "rss_early_mb": round(at_early / 1024, 1),
        "rss_end_mb": round(at_end / 1024, 1),
        "change": round(at_end / at_early - 1, 4) if at_early else None,
        "peak_sampled_mb": round(max(burst) / 1024, 1) if burst else None,
        "peak_hwm_mb": round(peak_kb / 1024, 1) if peak_kb else None,
        "slope_mb_per_100_images": round(rss_slope_mb_per_100(samples, start=early), 1),
        "samples": len(samples),
    }


def _daemon_side(daemon: DaemonUnderTest, *, burst_jobs: int) -> dict[str, Any]:
    """From the daemon's own job log: outcomes, mean stage times, how busy the model thread was."""
    jobs = [job for job in daemon.events("job") if not str(job.get("path", "")).startswith("latency-")]
    outcomes: dict[str, int] = {}
    for job in jobs:
        outcomes[str(job.get("outcome"))] = outcomes.get(str(job.get("outcome")), 0) + 1
    stages: dict[str, list[float]] = {}
    for job in jobs:
        for stage, seconds in (job.get("timings") or {}).items():
            stages.setdefault(stage, []).append(float(seconds))
    means = {stage: round(1000 * statistics.mean(values), 1) for stage, values in stages.items()}
    return {"outcomes": outcomes, "daemon_stage_means_ms": means,
            "inference_seconds_total": round(sum(stages.get("inference", [])), 2)}
