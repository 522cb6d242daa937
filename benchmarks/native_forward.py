"""The built-in BiRefNet: forward time on this machine, and the peak memory of loading it.

    python -m benchmarks.native_forward                      # 1088², Swin-L and Swin-T, the run in BENCHMARKS.md
    python -m benchmarks.native_forward --quick              # 256², smoke run (under a minute); results under benchmarks/work/
    python -m benchmarks.native_forward --backbones swin_v1_t --size 1024 --repeat 3 --threads 2

Weights are the golden fixtures' rule weights (`tests/birefnet_weights.py`: every tensor
drawn from its key's name), written once per backbone to a temporary `model.safetensors`
and loaded from it with `load_native()`, the daemon's own path. Numbers, not quality: a
forward costs the same whatever the weights are.

1. **Forward, on the CPU**, float32, in `torch.inference_mode()`: for each backbone and
   each memory format (channels-last, the model's default, and contiguous: the module
   converted and `model.memory_format` set), a freshly loaded model runs a warm-up forward
   (the *first* call: it also builds the per-size caches) and then `--repeat` forwards at the
   same size (the *steady* call: their median). Wall and CPU seconds; the torch thread count.
2. **Peak memory of loading**, each way in a fresh process (peak RSS: /proc/self/status
   VmHWM, or getrusage's ru_maxrss where there is no /proc): `load_native()` (built on the
   meta device, `load_state_dict(assign=True)`: the weights once) against the naive way
   (built on the CPU with its random init, then `load_state_dict(load_file(...))`: twice).
   After the load every weight is read once (safetensors maps the file: a tensor `load_native`
   assigned is resident only once it is read, as the first forward reads it), so the peak is
   that of a model ready to run; "added" is that peak less the peak before loading (imports).
3. **On a CUDA or MPS device**, when there is one: float32, float16 and bfloat16
   (`with_precision`) and `torch.compile` (`compiled`), as the daemon runs them
   (`TorchMatteModel.predict` on `probe_batch`, channels-last). Skipped, and said so, on a
   machine without one.

Results are printed as tables and written to benchmarks/results/native_forward.json.
No number here is asserted anywhere: they describe a machine, they do not test the code.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

from benchmarks.machine import REPO, cpu_snapshot, load_average, machine_info, others_share, usable_cpus, wait_until_idle
from daemon.pipeline.birefnet import BiRefNet, build_birefnet
from daemon.pipeline.inference import TorchMatteModel
from daemon.pipeline.modelspec import FAMILY, Backbone, Family, Precision
from daemon.pipeline.native import NativeCheckpoint, load_native, on_meta
from daemon.pipeline.patchorder import PatchOrder, PatchOrderFinding
from daemon.pipeline.precision import compiled, probe_batch, with_precision

RESULT = REPO / "benchmarks" / "results" / "native_forward.json"
QUICK_RESULT = REPO / "benchmarks" / "work" / "results" / "native_forward.json"
BACKBONES: tuple[Backbone, ...] = ("swin_v1_l", "swin_v1_t")
LAYOUTS: dict[str, torch.memory_format] = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
MB = 1e6
T = TypeVar("T")
ORDER: PatchOrder = "einops"
"""The current checkpoints' patch order; speed and memory are the same in both orders."""
RULE_ORDER = PatchOrderFinding(ORDER, "the benchmark's rule weights, built in the einops order")


def family_of(backbone: Backbone) -> Family:
    """The family's first member with this backbone (birefnet, birefnet-lite): the name in the table."""
    return next(family for family in FAMILY.values() if family.backbone == backbone)


# --- Timing ---------------------------------------------------------------------------------
def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """The result, wall seconds and CPU seconds (every thread of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def first_and_steady(fn: Callable[[], T], *, repeat: int) -> tuple[T, dict[str, float]]:
    """One warm-up call (the first), then the median of `repeat` calls (the steady one)."""
    result, first_wall, first_cpu = timed(fn)
    walls, cpus = [], []
    for _ in range(repeat):
        result, wall, cpu = timed(fn)
        walls.append(wall)
        cpus.append(cpu)
    return result, {"first_s": round(first_wall, 3), "first_cpu_s": round(first_cpu, 3),
                    "steady_s": round(statistics.median(walls), 3), "steady_cpu_s": round(statistics.median(cpus), 3)}


# --- Weights ------------------------------------------------------------------------------
def write_rule_weights(backbone: Backbone, folder: Path) -> Path:
    """`folder/<backbone>/model.safetensors` holding the rule weights, as the hub's file is laid out."""
    from tests.birefnet_weights import load_rule_weights  # the fixtures' rule: only the benchmark needs it

    path = folder / backbone / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    model = load_rule_weights(build_birefnet(backbone, patch_order=ORDER), backbone)
    save_file({key: tensor.contiguous() for key, tensor in model.state_dict().items()}, str(path))
    return path


# --- 1. Forward on the CPU ------------------------------------------------------------------
def with_layout(model: BiRefNet, layout: torch.memory_format) -> BiRefNet:
    """The model's input and convolution weights in `layout` (what `_to_device` does for channels-last)."""
    model.memory_format = layout
    converted: BiRefNet = model.to(memory_format=layout)  # type: ignore[call-overload]
    return converted


def cpu_forward(backbone: Backbone, *, weights: Path, size: int, repeat: int) -> list[dict[str, Any]]:
    """One row per memory format, each from a freshly loaded model (so its first call is a first call)."""
    image = torch.from_numpy(probe_batch(size))
    rows = []
    for name, layout in LAYOUTS.items():
        model = with_layout(load_native(family_of(backbone), NativeCheckpoint(weights, RULE_ORDER)), layout)
        start = cpu_snapshot()
        with torch.inference_mode():
            logits, times = first_and_steady(lambda: model(image), repeat=repeat)
        share = others_share(start, cpu_snapshot(), cpus=usable_cpus())
        assert logits.shape == (1, 1, size, size)
        rows.append({"backbone": backbone, "family": family_of(backbone).name, "layout": name, "size": size,
                     "dtype": "float32", "threads": torch.get_num_threads(), "repeat": repeat, **times,
                     "others_share": None if share is None else round(share, 3)})
        del model, logits
    return rows


# --- 2. Peak memory of loading --------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def peak_rss_bytes() -> int:
    """The process's peak resident set: VmHWM, or ru_maxrss (kB on Linux, bytes on macOS)."""
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def load_once(way: str, *, backbone: Backbone, weights: Path) -> dict[str, Any]:
    """In this (fresh) process: load the model one way; peak RSS before and after, and the time."""
    before_peak = peak_rss_bytes()

    def native() -> torch.nn.Module:
        model = load_native(family_of(backbone), NativeCheckpoint(weights, RULE_ORDER))
        assert not on_meta(model)
        return model

    def naive() -> torch.nn.Module:
        model = build_birefnet(backbone, patch_order=ORDER)
        model.load_state_dict(load_file(str(weights)), strict=True)
        return model

    model, wall, _ = timed(native if way == "native" else naive)
    loaded_peak = peak_rss_bytes()
    state = model.state_dict().values()
    with torch.no_grad():  # read every weight once: a file-mapped tensor is resident only once it is read
        for tensor in state:
            tensor.sum()
    return {"way": way, "backbone": backbone, "load_s": round(wall, 2),
            "state_mb": round(sum(tensor.numel() * tensor.element_size() for tensor in state) / MB, 1),
            "peak_before_mb": round(before_peak / MB, 1), "peak_loaded_mb": round(loaded_peak / MB, 1),
            "peak_mb": round(peak_rss_bytes() / MB, 1), **resident()}


def resident() -> dict[str, float]:
    """Anonymous and file-backed resident memory now (Linux), in MB."""
    kinds = {"rss_anon_mb": _status_kb("RssAnon"), "rss_file_mb": _status_kb("RssFile")}
    return {name: round(kb * 1024 / MB, 1) for name, kb in kinds.items() if kb is not None}


def load_memory(backbone: Backbone, *, weights: Path) -> dict[str, Any]:
    """Both ways, each in its own process; the file's size and the peak each way added."""
    result: dict[str, Any] = {"backbone": backbone, "family": family_of(backbone).name,
                              "file_mb": round(weights.stat().st_size / MB, 1)}
    for way in ("native", "naive"):
        command = [sys.executable, "-m", "benchmarks.native_forward", "--load-child", way,
                   "--backbones", backbone, "--weights", str(weights)]
        out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
        child = json.loads(out.stdout.strip().splitlines()[-1])
        child["added_mb"] = round(child["peak_mb"] - child["peak_before_mb"], 1)
        result[way] = child
    return result


# --- 3. Precision and compile on an accelerator --------------------------------------------
def accelerator() -> torch.device | None:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return None


def device_forward(device: torch.device, backbone: Backbone, *, weights: Path, size: int, repeat: int) -> list[dict[str, Any]]:
    """float32 eager, float16, bfloat16 and compiled (float32), through the daemon's own helpers.
    A variant's first call is the helper's (conversion or compilation, and the probe check)."""
    module = load_native(family_of(backbone), NativeCheckpoint(weights, RULE_ORDER)).to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    eager = TorchMatteModel(module, device=device, size=size, channels_last=True)
    batch = probe_batch(size)
    reference, times = first_and_steady(lambda: eager.predict(batch), repeat=repeat)
    base = {"backbone": backbone, "family": family_of(backbone).name, "size": size, "device": str(device), "repeat": repeat}
    rows = [{**base, "variant": "float32", **times}]
    def converted(precision: Precision) -> TorchMatteModel:
        copied = TorchMatteModel(copy.deepcopy(module), device=device, size=size, channels_last=True)
        return with_precision(copied, precision=precision, reference=reference)

    lower: tuple[Precision, ...] = ("float16", "bfloat16")
    variants: dict[str, Callable[[], TorchMatteModel]] = {precision: partial(converted, precision) for precision in lower}
    notes: dict[str, str] = {}

    def compile_it() -> TorchMatteModel:
        candidate, notes["compile"] = compiled(eager, reference=reference)
        return candidate

    variants["compile (float32)"] = compile_it
    for name, make in variants.items():
        try:
            faster, first, _ = timed(make)
            _, steady = first_and_steady(lambda: faster.predict(batch), repeat=repeat)
        except Exception as exc:  # a precision the device refuses: a row that says so, not a crash
            rows.append({**base, "variant": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        rows.append({**base, "variant": name, "first_s": round(first, 3), "steady_s": steady["steady_s"],
                     **({"note": notes["compile"]} if name.startswith("compile") else {})})
        del faster
    return rows


# --- Report ---------------------------------------------------------------------------------
def print_tables(result: dict[str, Any]) -> None:
    print(f"torch {result['machine']['torch']}, {result['threads']} threads, {result['machine']['usable_cpus']} CPUs "
          f"({result['machine']['cpu_model']}); load {result['load_at_start']} -> {result['load_at_end']}, "
          f"other processes used {_share(result['others_share'])} of the CPUs")
    print(f"\nforward on the CPU, float32, {result['size']}²: first call and steady (median of {result['repeat']})")
    print(f"{'family':<15} {'backbone':<10} {'layout':<14} {'first':>9} {'steady':>9} {'steady CPU':>11} {'others':>7}")
    for row in result["cpu_forward"]:
        print(f"{row['family']:<15} {row['backbone']:<10} {row['layout']:<14} {row['first_s']:>8.2f}s "
              f"{row['steady_s']:>8.2f}s {row['steady_cpu_s']:>10.2f}s {_share(row['others_share']):>7}")
    for line in ratios(result["cpu_forward"]):
        print(line)
    print("\npeak memory of loading (fresh process each; MB = 10^6 bytes)")
    print(f"{'family':<15} {'file':>8} {'load_native peak':>17} {'added':>8} {'naive peak':>11} {'added':>8} {'naive/native added':>19}")
    for row in result["load_memory"]:
        native, naive = row["native"], row["naive"]
        print(f"{row['family']:<15} {row['file_mb']:>8.0f} {native['peak_mb']:>17.0f} {native['added_mb']:>8.0f} "
              f"{naive['peak_mb']:>11.0f} {naive['added_mb']:>8.0f} {naive['added_mb'] / native['added_mb']:>18.2f}x")
    device = result["device_forward"]
    print(f"\nprecision and compile: {device['skipped']}" if "skipped" in device else f"\non {device['device']}:")
    for row in device.get("rows", []):
        timing = row.get("error") or f"first {row['first_s']:.3f}s, steady {row['steady_s']:.3f}s"
        print(f"  {row['family']:<15} {row['variant']:<18} {timing}")


def _share(share: float | None) -> str:
    """What other processes used of all CPUs while a row ran ("-" where the window was too short)."""
    return "-" if share is None else f"{share:.0%}"


def ratios(rows: list[dict[str, Any]]) -> Iterator[str]:
    steady = {(row["backbone"], row["layout"]): row["steady_s"] for row in rows}
    for backbone in dict.fromkeys(row["backbone"] for row in rows):
        if (backbone, "contiguous") in steady and (backbone, "channels_last") in steady:
            yield (f"{backbone}: contiguous / channels-last = "
                   f"{steady[(backbone, 'contiguous')] / steady[(backbone, 'channels_last')]:.2f}x")
    for layout in LAYOUTS:
        if ("swin_v1_l", layout) in steady and ("swin_v1_t", layout) in steady:
            yield f"{layout}: Swin-L / Swin-T = {steady[('swin_v1_l', layout)] / steady[('swin_v1_t', layout)]:.2f}x"


@contextmanager
def weights_files(backbones: list[Backbone]) -> Iterator[dict[Backbone, Path]]:
    with tempfile.TemporaryDirectory(prefix="native-forward-") as folder:
        yield {backbone: write_rule_weights(backbone, Path(folder)) for backbone in backbones}


def run(*, backbones: list[Backbone], size: int, repeat: int) -> dict[str, Any]:
    """Every measurement, as the JSON written to benchmarks/results/native_forward.json."""
    start = cpu_snapshot()
    result: dict[str, Any] = {
        "schema": 1, "timestamp": datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "machine": machine_info(torch.device("cpu")), "load_at_start": load_average(),
        "size": size, "repeat": repeat, "threads": torch.get_num_threads(), "weights": "rule weights (tests/birefnet_weights.py)",
        "cpu_forward": [], "load_memory": [],
    }
    with weights_files(backbones) as weights:
        for backbone in backbones:
            result["load_memory"].append(load_memory(backbone, weights=weights[backbone]))
        for backbone in backbones:
            result["cpu_forward"].extend(cpu_forward(backbone, weights=weights[backbone], size=size, repeat=repeat))
        device = accelerator()
        if device is None:
            result["device_forward"] = {"skipped": "no CUDA or MPS device on this machine: float16, bfloat16 and "
                                                   "torch.compile not measured"}
        else:
            rows = [row for backbone in backbones
                    for row in device_forward(device, backbone, weights=weights[backbone], size=size, repeat=repeat)]
            result["device_forward"] = {"device": machine_info(device)["device"], "rows": rows}
    result["load_at_end"] = load_average()
    share = others_share(start, cpu_snapshot(), cpus=usable_cpus())
    result["others_share"] = None if share is None else round(share, 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, help="input size S (a multiple of 32; default 1088, --quick 256)")
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    parser.add_argument("--repeat", type=int, default=1, help="steady forwards after the warm-up (median reported)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 256², results under benchmarks/work/results/")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="S",
                        help="first wait up to S seconds until other processes use < 5 %% of the CPUs")
    parser.add_argument("--json", type=Path, help="where the results go (default benchmarks/results/native_forward.json)")
    parser.add_argument("--load-child", choices=("native", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.load_child:
        print(json.dumps(load_once(args.load_child, backbone=args.backbones[0], weights=args.weights)))
        return 0
    size = args.size or (256 if args.quick else 1088)
    if size % 32:
        parser.error(f"--size {size} is not a multiple of 32")
    if args.wait_idle:
        print(f"others' share of the CPUs after waiting: {wait_until_idle(timeout=args.wait_idle)}")
    result = run(backbones=args.backbones, size=size, repeat=args.repeat)
    result["quick"] = args.quick
    print_tables(result)
    path: Path = args.json or (QUICK_RESULT if args.quick else RESULT)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
