"""`python -m benchmarks.soak`: minutes of chaos on one hot folder, then a strict check (not in CI).

    python -m benchmarks.soak                  # 30 minutes; JSON to benchmarks/results/soak-*.json
    python -m benchmarks.soak --quick          # smoke run, 2 min of chaos (~3 min in all); JSON to benchmarks/work/
    python -m benchmarks.soak --minutes 5 --kill-every 20 --rate 1

A real `cutout watch` (the stand-in model, see benchmarks/standin.py) runs under a
supervisor that restarts it after every death, as launchd's KeepAlive would. Random
streams drop good and bad files in every way studios write them (temp + rename, plain
writes, slow chunked copies, create-empty-then-write, `mv` with an old mtime, whole
folders moved in), rename files before and after they settle, read every original and
cutout like a backup, call `cutout status`, and SIGKILL or SIGTERM the daemon at random
moments, some within seconds of its start. The last quarter has no signals: one long
life whose memory must stay flat. Then the chaos stops, the queue drains, and the check
wants every input to be exactly one valid cutout or one quarantine entry with a reason,
no temp file, no file lost, and the idle CPU back where it was on the empty folder.

The third round's hazards run too: the state folder lives on a small tmpfs of its own (as
root; skipped otherwise) that is made full for 5-15 s every few minutes (files arriving
meanwhile must be queued once space returns), links are planted in the output folder with a
photo dropped behind each (quarantined as output_blocked, nothing ever written through the
link), and in the signal-free segment a second `cutout watch` with its own state folder is
started on the same folders (it must be refused, exit 2).

Exit status: 0 when every check passes, 1 otherwise (the summary says which).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from benchmarks.machine import REPO, RESULTS, WORK, git_revision, load_average, machine_info, slug
from benchmarks.soak_chaos import Chaos, Ledger, Pictures, Rates
from benchmarks.soak_check import FAILURES, Verdict, check
from benchmarks.soak_daemon import (
    Life, ResourceSampler, Sample, Supervisor, idle_cpu_percent, queue_counts, summarize_logs, waiting_files,
)
from benchmarks.standin import build_standin

STATE_DISK = "state-disk"
MARKER = ".soak-work"
"""Left in the work folder: only a folder holding it is ever wiped by a later run."""
RSS_GROWTH_LIMIT = 0.10
"""Flat memory: the last quarter's median RSS of the long life at most 10 % above its first quarter's."""
IDLE_SLACK_PERCENT = 1.0
"""Idle CPU back to baseline: at most the baseline + 1 % of one core (the clock ticks are 10 ms)."""


@dataclass(frozen=True)
class Plan:
    """How long and how hard; --quick shrinks everything to a smoke run."""

    minutes: float
    steady_share: float
    rates: Rates
    startup_kill_share: float
    settle_s: float
    incomplete_timeout_s: float
    reconcile_s: float
    model_cost_ms: float
    idle_window_s: float
    """One whole reconciliation period (60 s), so both idle figures hold one rescan; --quick: 20 s."""
    warm_up_s: float
    """The start of the long life left out of the flatness check (60 s; --quick: 10 s): the model,
    the thread pool and the allocator's arenas fill on the first images, growth that is no leak."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 min of chaos (~3 min in all), kills every 20 s")
    parser.add_argument("--minutes", type=float, help="minutes of chaos (default 30; --quick: 2)")
    parser.add_argument("--seed", type=int, default=10, help="random seed of the chaos and the images (default 10)")
    parser.add_argument("--work", type=Path, help="scratch folder, wiped first (default benchmarks/work/soak)")
    parser.add_argument("--kill-every", type=float, help="mean seconds between SIGKILLs (default 45; --quick 20)")
    parser.add_argument("--term-every", type=float,
                        help="mean seconds between SIGTERM restarts (default 120; --quick 40)")
    parser.add_argument("--rate", type=float, default=0.6, help="file drops per second (default 0.6)")
    parser.add_argument("--fill-every", type=float, default=240.0,
                        help="mean seconds between full state disks (default 240; --quick 40; 0: never)")
    parser.add_argument("--plant-every", type=float, default=300.0,
                        help="mean seconds between links planted in the output folder (default 300; --quick 40)")
    parser.add_argument("--second-every", type=float, default=120.0,
                        help="mean seconds between second daemons started on the same folders, in the "
                             "signal-free segment (default 120; --quick 15)")
    parser.add_argument("--rename-every", type=float, default=8.0, help="mean seconds between renames (default 8)")
    parser.add_argument("--read-every", type=float, default=90.0,
                        help="mean seconds between backup-style read passes (default 90)")
    parser.add_argument("--status-every", type=float, default=60.0, help="mean seconds between `cutout status` calls")
    parser.add_argument("--startup-kills", type=float,
                        help="share of daemon lives signalled 0-8 s after their start (default 0.2; --quick 0.4)")
    parser.add_argument("--steady-share", type=float, default=0.25,
                        help="last share of the run without signals: one long life for the memory check "
                             "(default 0.25)")
    parser.add_argument("--settle", type=float, default=1.0, help="watch.settle_seconds (default 1.0, the daemon's)")
    parser.add_argument("--incomplete-timeout", type=float, default=20.0,
                        help="watch.incomplete_timeout_seconds (default 20, so truncated files end within the run)")
    parser.add_argument("--model-cost-ms", type=float, default=20.0,
                        help="stand-in model's sleep per forward (default 20)")
    parser.add_argument("--json", type=Path,
                        help="result file (default benchmarks/results/soak-<time>-<machine>.json; "
                             "--quick: benchmarks/work/soak-results/)")
    parser.add_argument("--code", help="what is under test, for the record (default: this tree's git revision)")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    kill_every = args.kill_every or (20.0 if quick else 45.0)
    term_every = args.term_every or (40.0 if quick else 120.0)
    return Plan(
        minutes=args.minutes or (2.0 if quick else 30.0),
        steady_share=args.steady_share,
        rates=Rates(drop=args.rate, rename=1 / args.rename_every, read=1 / args.read_every,
                    status=1 / args.status_every, kill=1 / kill_every, term=1 / term_every,
                    fill=_rate(40.0 if quick else args.fill_every), plant=_rate(40.0 if quick else args.plant_every),
                    second=_rate(15.0 if quick else args.second_every)),
        startup_kill_share=args.startup_kills if args.startup_kills is not None else (0.4 if quick else 0.2),
        settle_s=args.settle,
        incomplete_timeout_s=args.incomplete_timeout,
        reconcile_s=60.0,
        model_cost_ms=args.model_cost_ms,
        idle_window_s=20.0 if quick else 60.0,
        warm_up_s=10.0 if quick else 60.0,
    )


def _rate(every: float) -> float:
    return 1 / every if every > 0 else 0.0


# --- The run's folders ------------------------------------------------------------------------
@dataclass(frozen=True)
class Folders:
    root: Path
    hot: Path
    output: Path
    quarantine: Path
    state: Path
    staging: Path
    """Outside the hot folder, on the same disk: where folders and `mv` sources are made."""
    logs: Path
    config: Path
    state_disk: Path | None = None
    """The small tmpfs the state folder lives on (None: it could not be mounted, not root)."""


def fresh_work(root: Path) -> Folders:
    """An empty work folder: wiped only when it is empty or a previous soak's (it holds MARKER)."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise SystemExit(f"{root} is not empty and not a soak work folder ({MARKER} missing): "
                             "choose another --work")
        unmount(root / STATE_DISK)
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("scratch folder of python -m benchmarks.soak; wiped by the next run\n")
    disk = root / STATE_DISK
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
                             capture_output=True, check=False).returncode == 0
    folders = Folders(root, root / "in", root / "out", root / "quarantine", disk / "state", root / "staging",
                      root / "logs", root / "config.yaml", disk if mounted else None)
    for folder in (folders.hot, folders.staging, folders.logs):
        folder.mkdir(parents=True)
    return folders


def unmount(disk: Path) -> None:
    subprocess.run(["umount", "--lazy", str(disk)], capture_output=True, check=False)


def write_config(folders: Folders, *, plan: Plan, model: Path) -> None:
    """The daemon's config: the real defaults except a small model input (cheap CPU inference),
    an incomplete timeout short enough for truncated files to end within the run, and a
    1-minute reconciliation (the tests' value) so a missed event cannot hide for 5 minutes."""
    config = {
        "folders": {"input": str(folders.hot), "output": str(folders.output), "quarantine": str(folders.quarantine),
                    "state": str(folders.state)},
        "model": {"name": str(model), "device": "cpu"},
        "pipeline": {"target_size": 256},
        "watch": {"settle_seconds": plan.settle_s, "incomplete_timeout_seconds": plan.incomplete_timeout_s,
                  "reconcile_interval_seconds": plan.reconcile_s},
        "logging": {"format": "json"},
        "originals": "keep",
    }
    folders.config.write_text(yaml.safe_dump(config, sort_keys=False))


# --- Phases -------------------------------------------------------------------------------------
def say(t0: float, message: str) -> None:
    print(f"[{time.monotonic() - t0:7.0f} s, load {load_average():4.2f}] {message}", file=sys.stderr, flush=True)


def baseline_idle(supervisor: Supervisor, *, window: float) -> dict[str, Any]:
    """The first life on the empty folder: its start-up time and its idle CPU after it settled."""
    life = supervisor.wait_started(timeout=300)
    started_after = time.monotonic() - life.started
    time.sleep(5.0)
    return {"pid": life.pid, "start_s": round(started_after, 1),
            "idle_cpu_percent": round(idle_cpu_percent(life.pid, seconds=window), 2)}


def drain(folders: Folders, ledger: Ledger, supervisor: Supervisor, *, plan: Plan, t0: float) -> dict[str, Any]:
    """Wait until the queue is empty, the settler holds nothing back and every input has its result
    (or until a deadline long enough for a missed event to be found by the periodic rescan)."""
    deadline = time.monotonic() + max(180.0, 3 * plan.incomplete_timeout_s + 2 * plan.reconcile_s)
    start, calm_since = time.monotonic(), None
    counts: dict[str, int] | None = None
    while time.monotonic() < deadline:
        counts = queue_counts(folders.state)
        waiting = waiting_files(folders.state)
        busy = counts is None or counts.get("pending", 0) + counts.get("running", 0) > 0 or waiting != []
        if not busy and supervisor.current() is not None and _all_resolved(folders, ledger):
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since >= 2.0:
                return {"drained": True, "seconds": round(time.monotonic() - start, 1), "queue": counts}
        else:
            calm_since = None
        time.sleep(1.0)
    say(t0, f"drain timed out; queue {counts}, waiting {waiting_files(folders.state)}")
    return {"drained": False, "seconds": round(time.monotonic() - start, 1), "queue": counts}


def _all_resolved(folders: Folders, ledger: Ledger) -> bool:
    for entry in ledger.entries():
        rel = Path(entry.rel)
        done = (folders.output / rel.with_suffix(".png")) if entry.good else \
            (folders.quarantine / rel.with_name(rel.name + ".error.json"))
        if not done.exists():
            return False
    return True


# --- Memory and CPU ---------------------------------------------------------------------------------
def memory_report(samples: list[Sample], *, life: Life, until: float, t0: float, warm_up: float) -> dict[str, Any]:
    """Peak over the run; for the long last life (after its warm-up, up to the idle measurement),
    the median RSS of the first and last quarters of its samples and the least-squares slope."""
    peak_rss = max((s.rss_kb for s in samples), default=0)
    peak_hwm = max((s.hwm_kb or 0 for s in samples), default=0)
    born = life.started - t0
    own = [s for s in samples if s.life == life.index and born + warm_up <= s.at <= until - t0]
    report: dict[str, Any] = {"peak_rss_mb": round(peak_rss / 1024, 1), "peak_hwm_mb": round(peak_hwm / 1024, 1),
                              "samples": len(samples), "long_life": life.index}
    if len(own) < 8:
        return {**report, "flat": None, "note": "too few samples of the last life"}
    quarter = len(own) // 4
    first = statistics.median(s.rss_kb for s in own[:quarter]) / 1024
    last = statistics.median(s.rss_kb for s in own[-quarter:]) / 1024
    minutes = [s.at / 60 for s in own]
    slope = statistics.linear_regression(minutes, [s.rss_kb / 1024 for s in own]).slope
    return {**report, "long_life_minutes": round((own[-1].at - own[0].at) / 60, 1),
            "rss_first_quarter_mb": round(first, 1), "rss_last_quarter_mb": round(last, 1),
            "warm_up_s_left_out": warm_up, "change": round(last / first - 1, 4), "slope_mb_per_min": round(slope, 2),
            "flat": last <= first * (1 + RSS_GROWTH_LIMIT),
            "long_life_rss_mb": [[s.at, round(s.rss_kb / 1024, 1)] for s in own]}


def lives_report(lives: list[Life]) -> dict[str, Any]:
    exits: dict[str, int] = {}
    for life in lives:
        exits[str(life.exit_code)] = exits.get(str(life.exit_code), 0) + 1
    unexpected = [{"life": life.index, "exit_code": life.exit_code, "sent": life.sent}
                  for life in lives[:-1] if not life.expected_exit()]
    final = lives[-1] if lives else None
    if final is not None and final.exit_code != 0:
        unexpected.append({"life": final.index, "exit_code": final.exit_code, "sent": final.sent, "final": True})
    sent = [s for life in lives for s in life.sent]
    ages = [(life.ended or life.started) - life.started for life in lives]
    return {
        "lives": len(lives), "restarts": max(0, len(lives) - 1), "exit_codes": exits,
        "kills": sum(1 for s in sent if s.startswith("KILL")),
        "terms": sum(1 for s in sent if s.startswith("TERM") and s != "TERM@final"),
        "startup_kills": sent.count("KILL@startup"), "startup_terms": sent.count("TERM@startup"),
        "in_stage_kills": sent.count("KILL@in-stage"),
        "term_timeouts": sum(1 for life in lives if life.term_timed_out),
        "unexpected_exits": unexpected,
        "life_seconds_median": round(statistics.median(ages), 1) if ages else None,
    }


# --- Verdict and report ------------------------------------------------------------------------
def checks(verdict: Verdict, *, lives: dict[str, Any], logs: dict[str, Any], memory: dict[str, Any],
           idle: dict[str, Any], drained: dict[str, Any], problems: list[str], status_failed: int) -> dict[str, bool]:
    result = {f"{key} = 0": verdict.get(key) == 0 for key in FAILURES}
    result.update({
        "queue drained, every input resolved": bool(drained["drained"]),
        "no unexpected daemon exit": not lives["unexpected_exits"],
        "SIGTERM always stopped it in time": lives["term_timeouts"] == 0,
        "no defect event in the logs": not logs["defect_events"],
        "logs are JSON lines only": logs["non_json_lines"] == 0,
        "cutout status always answered": status_failed == 0,
        "no problem on the soak's side": not problems and verdict.get("soak_temp_files") == 0,
        "RSS flat over the long life": memory.get("flat") is True,
        "idle CPU back to baseline": idle["after_percent"] <= idle["baseline_percent"] + IDLE_SLACK_PERCENT,
    })
    return result


def summary_table(result: dict[str, Any]) -> str:
    c, lives, mem, idle = result["counts"], result["daemon"], result["memory"], result["idle_cpu"]
    config = result["config"]
    rows = [
        ("chaos", f"{config['minutes']:g} min ({config['steady_minutes']:g} min without signals at the end)"),
        ("files (good / bad)",
         f"{c.get('files', 0)} ({c.get('good', 0)} / {c.get('bad', 0)}), renamed {c.get('renamed', 0)}"),
        ("SIGKILLs (with a job in a stage, at start-up)",
         f"{lives['kills']} ({lives['in_stage_kills']}, {lives['startup_kills']})"),
        ("SIGTERMs (at start-up)", f"{lives['terms']} ({lives['startup_terms']})"),
        ("daemon lives / restarts", f"{lives['lives']} / {lives['restarts']}, exit codes {lives['exit_codes']}"),
        ("valid cutouts", str(c.get("valid_outputs", 0))),
        ("quarantined with a reason", f"{c.get('quarantined_with_reason', 0)} {result['reasons']}"),
        ("lost / duplicated / wrongly quarantined",
         f"{c.get('lost', 0)} / {c.get('duplicated', 0)} / {c.get('wrongly_quarantined', 0)}"),
        ("missing / invalid outputs", f"{c.get('missing_outputs', 0)} / {c.get('invalid_outputs', 0)}"),
        ("temp files left", str(c.get("temp_files", 0))),
        ("full state disks / links planted / second daemons refused",
         f"{result['actions'].get('fill', 0)} / {result['actions'].get('plant', 0)} / "
         f"{result['actions'].get('second:refused', 0)} of {result['actions'].get('second:started', 0)}"),
        ("files written through a planted link", str(c.get("written_through_links", 0))),
        ("stale outputs of renamed-away names", str(c.get("stale_outputs", 0))),
        ("peak RSS (VmHWM)", f"{mem['peak_hwm_mb']} MB"),
        ("RSS long life, first vs last quarter",
         f"{mem.get('rss_first_quarter_mb')} -> {mem.get('rss_last_quarter_mb')} MB"
         f" over {mem.get('long_life_minutes')} min"
         f" ({mem.get('slope_mb_per_min')} MB/min)"),
        ("idle CPU, baseline vs after", f"{idle['baseline_percent']} % vs {idle['after_percent']} % of one core"
                                        f" (over {idle['window_s']:g} s)"),
        ("drain after the chaos", f"{result['drain']['seconds']} s"),
        ("daemon warnings and errors (not jobs)", str(result["logs"]["warnings_and_errors"] or "none")),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    failed = [name for name, ok in result["checks"].items() if not ok]
    lines.append("")
    lines.append("ALL CHECKS PASSED" if not failed else "FAILED: " + "; ".join(failed))
    for key, names in result["examples"].items():
        if key in FAILURES or key in ("reason_mismatch",):
            lines.append(f"  {key}: {', '.join(names[:5])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    t0 = time.monotonic()
    rng = random.Random(args.seed)
    folders = fresh_work((args.work or WORK / "soak").resolve())
    model = build_standin(WORK / "models" / f"standin-sleep-{plan.model_cost_ms:g}ms.pt",
                          cost_ms=plan.model_cost_ms, kind="sleep", device=torch.device("cpu"))
    write_config(folders, plan=plan, model=model)
    say(t0, f"work folder {folders.root}; generating base photos")
    pictures = Pictures(cache=WORK / "inputs", rng=np.random.default_rng(args.seed))
    supervisor = Supervisor(config=folders.config, logs=folders.logs, rng=random.Random(rng.random()),
                            startup_kill_share=plan.startup_kill_share)
    sampler = ResourceSampler(supervisor, t0=t0)
    supervisor.start()
    sampler.start()
    try:
        say(t0, "baseline: idle daemon on the empty folder")
        baseline = baseline_idle(supervisor, window=plan.idle_window_s)
        say(t0, f"baseline idle CPU {baseline['idle_cpu_percent']} % of one core; chaos for {plan.minutes:g} min")
        ledger = Ledger()
        chaos = Chaos(hot=folders.hot, output=folders.output, staging=folders.staging, state=folders.state,
                      ledger=ledger, pictures=pictures, supervisor=supervisor, rng=rng, rates=plan.rates,
                      config=folders.config, state_disk=folders.state_disk)
        supervisor.startup_chaos.set()
        start = time.monotonic()
        end = start + plan.minutes * 60
        chaos.run(until=end, signals_until=end - plan.steady_share * plan.minutes * 60,
                  progress=lambda: say(t0, _progress(chaos, supervisor)))
        say(t0, "chaos over; waiting for writers and readers")
        chaos.finish()
        say(t0, "draining the queue")
        drained = drain(folders, ledger, supervisor, plan=plan, t0=t0)
        time.sleep(5.0)
        life = supervisor.current()
        if life is None:
            raise RuntimeError(f"no daemon running after the drain:\n{supervisor.tail()}")
        measured_at = time.monotonic()
        after = idle_cpu_percent(life.pid, seconds=plan.idle_window_s)
        say(t0, f"idle CPU after {after:.2f} % of one core; stopping the daemon")
    finally:
        final_exit = supervisor.shutdown()
        sampler.stop()
    say(t0, f"daemon stopped (exit {final_exit}); checking every file")
    verdict = check(entries=ledger.entries(), hot=folders.hot, output=folders.output,
                    quarantine=folders.quarantine, state=folders.state, link_targets=chaos.link_targets)
    if folders.state_disk is not None:
        unmount(folders.state_disk)
    result = assemble(args, plan, folders=folders, verdict=verdict, chaos=chaos, supervisor=supervisor,
                      sampler=sampler, baseline=baseline, after=after, drained=drained, life=life,
                      measured_at=measured_at, t0=t0)
    print(summary_table(result))
    path = args.json or _default_json(result, quick=args.quick, work=folders.root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    say(t0, f"wrote {path}")
    return 0 if all(result["checks"].values()) else 1


def _progress(chaos: Chaos, supervisor: Supervisor) -> str:
    c = chaos.counts
    drops = sum(v for k, v in c.items() if k.startswith("drop:"))
    renames = c["rename:early"] + c["rename:late"] + c["rename:soon"]
    kills = sum(1 for life in supervisor.lives for sent in life.sent if sent.startswith("KILL"))
    return (f"{drops} files dropped, {renames} renames, {kills} kills, "
            f"{c['term']} terms, {len(supervisor.lives)} lives")


def assemble(args: argparse.Namespace, plan: Plan, *, folders: Folders, verdict: Verdict, chaos: Chaos,
             supervisor: Supervisor, sampler: ResourceSampler, baseline: dict[str, Any], after: float,
             drained: dict[str, Any], life: Life, measured_at: float, t0: float) -> dict[str, Any]:
    lives = lives_report(supervisor.lives)
    logs = _while_full(summarize_logs(supervisor.lives), chaos.fill_windows)
    memory = memory_report(sampler.samples, life=life, until=measured_at, t0=t0, warm_up=plan.warm_up_s)
    idle = {"baseline_percent": baseline["idle_cpu_percent"], "after_percent": round(after, 2),
            "window_s": plan.idle_window_s, "files_in_hot_folder_after": verdict.get("files"),
            "first_start_s": baseline["start_s"]}
    info = machine_info(torch.device("cpu"))
    info["git"] = args.code or git_revision()
    result: dict[str, Any] = {
        "schema": 1,
        "kind": "soak",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "config": {"command": "python -m benchmarks.soak " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                   "quick": args.quick, "seed": args.seed, "minutes": plan.minutes,
                   "steady_minutes": round(plan.minutes * plan.steady_share, 2),
                   "rates_per_s": plan.rates.__dict__, "startup_kill_share": plan.startup_kill_share,
                   "settle_s": plan.settle_s, "incomplete_timeout_s": plan.incomplete_timeout_s,
                   "reconcile_s": plan.reconcile_s, "model": f"stand-in, {plan.model_cost_ms:g} ms sleep per forward",
                   "target_size": 256, "originals": "keep", "work": str(folders.root)},
        "counts": dict(sorted(verdict.counts.items())),
        "reasons": verdict.reasons,
        "examples": verdict.examples,
        "actions": dict(sorted(chaos.counts.items())),
        "daemon": lives,
        "logs": logs,
        "memory": memory,
        "idle_cpu": idle,
        "drain": drained,
        "soak_problems": chaos.problems[:50],
        "wall_s": round(time.monotonic() - t0, 1),
        "rss_timeline": [[s.at, s.life, round(s.rss_kb / 1024, 1)] for s in sampler.samples[::5]],
    }
    result["checks"] = checks(verdict, lives=lives, logs=logs, memory=memory, idle=idle, drained=drained,
                              problems=chaos.problems, status_failed=chaos.counts["status:failed"])
    return result


def _while_full(logs: dict[str, Any], windows: list[tuple[float, float]]) -> dict[str, Any]:
    """The store-away events of the moments the soak made the state disk full (and 10 s after)
    are what the daemon must say then: expected, not defects."""
    def during(event: dict[str, Any]) -> bool:
        at = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
        return any(start <= at <= end + 10.0 for start, end in windows)

    expected = [event for event in logs["defect_events"] if during(event)]
    return {**logs, "defect_events": [event for event in logs["defect_events"] if not during(event)],
            "expected_while_state_disk_full": expected}


def _default_json(result: dict[str, Any], *, quick: bool, work: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"soak-{stamp}-{slug(result['machine'])}{'-quick' if quick else ''}.json"
    return (work.parent / "soak-results" if quick else RESULTS) / name


if __name__ == "__main__":
    sys.exit(main())
