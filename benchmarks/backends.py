"""The built-in BiRefNet on each backend: forward time on this CPU, and how far its logits are from eager PyTorch's.

    python -m benchmarks.backends                                  # 1024², Swin-T and Swin-L, 3 rounds
    python -m benchmarks.backends --backbones swin_v1_t --size 512 --repeat 5

Weights are the golden fixtures' rule weights (as `benchmarks.native_forward`): a forward costs
the same whatever the weights are, and the logits' gap is measured on the same weights. Each
backbone is exported once to ONNX (`daemon.pipeline.export`, the daemon's own path; the time it
takes is printed), converted for OpenVINO, and then the backends take turns, one forward each
per round (eager, ONNX Runtime, OpenVINO, eager, ...), so that whatever else the machine does
falls on all of them alike; the median of the rounds is reported, each after one warm-up
forward. The gap is the largest |logits - eager logits| on the probe image. Each backend runs in a
process of its own, the processes taking turns round by round: in one process, a runtime's
threads slowed the eager forward that followed by up to 1.9 x (measured), which no daemon
sees (it runs one backend).

`openvino-int8` is `model.precision: int8`: the OpenVINO graph quantized by NNCF on the daemon's
calibration photos (`daemon.pipeline.calibration`; the time it takes is printed). What INT8 costs
in quality is measured on photos it was not calibrated on: BENCHMARK_PHOTOS of the benchmark's
own 2 MP photos (`benchmarks.images.photo_like`), resized, padded and normalised as the daemon
does, each backend's matte against eager PyTorch's (the mean and the 99.9th percentile of
|matte - eager matte|, as the daemon's precision check measures them, over all the photos).

Results are printed and written to benchmarks/results/backends.json. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.machine import REPO, machine_info
from benchmarks.native_forward import RULE_ORDER, family_of, with_layout, write_rule_weights
from benchmarks.images import photo_like
from daemon.pipeline.calibration import calibration_batches
from daemon.pipeline.constants import PipelineParams
from daemon.pipeline.export import export_onnx, export_openvino, quantized_openvino
from daemon.pipeline.modelspec import Backbone
from daemon.pipeline.native import NativeCheckpoint, load_native
from daemon.pipeline.precision import difference, probe_batch
from daemon.pipeline.preprocess import normalize, resize_and_pad
from daemon.pipeline.runtimes import Backend, logits_runner, quantizer_module, runtime_version

BACKBONES: tuple[Backbone, ...] = ("swin_v1_t", "swin_v1_l")
Logits = Callable[[np.ndarray], np.ndarray]


def eager(model: torch.nn.Module) -> Logits:
    """As the daemon runs it (`TorchMatteModel`): the module and its input channels-last."""
    converted = with_layout(model, torch.channels_last)  # type: ignore[arg-type]

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            image = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            return np.asarray(converted(image).numpy(), np.float32)
    return run


def runtime_run(graph: Path, *, backend: Backend) -> Logits:
    """The graph on `backend` exactly as the daemon loads it (`runtimes.logits_runner`)."""
    run = logits_runner(graph, backend=backend)
    return lambda batch: np.asarray(run(batch), np.float32)


def measure(backbone: Backbone, *, weights: Path, size: int, repeat: int, folder: Path) -> dict[str, Any]:
    """Export, then each backend in a process of its own (a runtime's threads, and torch's, linger
    after a forward and slow whatever runs next in the same process: up to 1.9 x, measured), the
    processes taking turns round by round."""
    model = load_native(family_of(backbone), NativeCheckpoint(weights, RULE_ORDER)).eval()
    started = time.monotonic()
    onnx = export_onnx(model, out=folder / f"{backbone}-{size}.onnx", size=size)
    export_seconds = time.monotonic() - started
    started = time.monotonic()
    export_openvino(model, out=folder / f"{backbone}-{size}.xml", size=size)  # its own export, as the daemon's
    convert_seconds = time.monotonic() - started
    started = time.monotonic()
    quantized_openvino(folder / f"{backbone}-{size}.xml", out=folder / f"{backbone}-{size}-int8.xml",
                       calibration=calibration_batches(size))
    quantize_seconds = time.monotonic() - started
    run = eager(model)
    np.save(folder / "reference.npy", run(probe_batch(size)))
    np.save(folder / "photos.npy", np.concatenate([run(batch).reshape(1, 1, size, size) for batch in benchmark_photos(size)]))
    del model, run
    seconds: dict[str, list[float]] = {name: [] for name in BACKENDS}
    gaps: dict[str, float] = {}
    mattes: dict[str, dict[str, float]] = {}
    for round_ in range(repeat):
        for name in BACKENDS:
            child = _child(name, backbone=backbone, weights=weights, size=size, folder=folder, photos=round_ == 0)
            seconds[name].append(child["seconds"])
            gaps[name] = child["gap"]
            if round_ == 0:
                mattes[name] = {"mean": child["matte_mean"], "p999": child["matte_p999"],
                                "logits_error_of_spread": child["logits_error_of_spread"]}
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {"backbone": backbone, "size": size, "repeat": repeat, "export_seconds": round(export_seconds, 1),
            "openvino_convert_seconds": round(convert_seconds, 1), "int8_quantize_seconds": round(quantize_seconds, 1),
            "forward_seconds": {name: round(value, 3) for name, value in medians.items()},
            "x_eager": {name: round(value / medians["torch"], 2) for name, value in medians.items()},
            "max_logit_gap": gaps, "matte_vs_eager_on_photos": mattes}


def benchmark_photos(size: int) -> list[np.ndarray]:
    """BENCHMARK_PHOTOS of the benchmark's 2 MP photos as the model sees them (none calibrated INT8)."""
    params = PipelineParams(target_size=size)
    return [normalize(resize_and_pad(photo_like(2, seed=seed), params=params)[0], params=params)
            for seed in range(100, 100 + BENCHMARK_PHOTOS)]


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-logits.astype(np.float64))), np.float32)


BACKENDS = ("torch", "onnxruntime", "openvino", "openvino-int8")
BENCHMARK_PHOTOS = 4
FORWARDS = 2
"""Timed forwards in each process after its warm-up (their median): a runtime's second call may
still be settling its memory."""


def _child(name: str, *, backbone: Backbone, weights: Path, size: int, folder: Path, photos: bool) -> dict[str, float]:
    """One backend in a fresh process: a warm-up forward, then FORWARDS timed; its gap to eager
    (`photos`: and its mattes on the benchmark photos against eager's)."""
    found = subprocess.run(
        [sys.executable, "-m", "benchmarks.backends", "--child", name, "--backbones", backbone, "--size", str(size),
         "--weights", str(weights), "--folder", str(folder), *(["--photos"] if photos else [])],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    result: dict[str, float] = json.loads(found.stdout.strip().splitlines()[-1])
    return result


def child(name: str, *, backbone: Backbone, weights: Path, size: int, folder: Path, photos: bool) -> dict[str, float]:
    if name == "torch":
        run = eager(load_native(family_of(backbone), NativeCheckpoint(weights, RULE_ORDER)).eval())
    elif name == "onnxruntime":
        run = runtime_run(folder / f"{backbone}-{size}.onnx", backend="onnxruntime")
    else:
        kind = "-int8" if name == "openvino-int8" else ""
        run = runtime_run(folder / f"{backbone}-{size}{kind}.xml", backend="openvino")
    batch = probe_batch(size)
    logits = run(batch)  # the warm-up: first calls plan and allocate
    times = []
    for _ in range(FORWARDS):
        started = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    gap = float(np.abs(logits.reshape(-1) - np.load(folder / "reference.npy").reshape(-1)).max())
    if not photos:
        return {"seconds": seconds, "gap": gap}
    found = np.concatenate([run(batch).reshape(1, 1, size, size) for batch in benchmark_photos(size)])
    reference = np.load(folder / "photos.npy")
    mattes = difference(_sigmoid(reference), _sigmoid(found))
    # The rule weights' logits are small (a spread of about 0.25), where the sigmoid is flat:
    # the logits' own error, against their spread, says what the matte's hides.
    relative = float(np.abs(found - reference).mean() / reference.std())
    return {"seconds": seconds, "gap": gap, "matte_mean": mattes.mean, "matte_p999": mattes.p999,
            "logits_error_of_spread": relative}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "backends.json")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--photos", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, backbone=args.backbones[0], weights=args.weights, size=args.size,
                               folder=args.folder, photos=args.photos)))
        return 0
    result: dict[str, Any] = {
        "schema": 1, "timestamp": datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "machine": machine_info(torch.device("cpu")), "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "onnxruntime": runtime_version("onnxruntime"),
                     "openvino": runtime_version("openvino"), "nncf": quantizer_module().__version__},
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="backends-") as scratch:
        folder = Path(scratch)
        for backbone in args.backbones:
            weights = write_rule_weights(backbone, folder)
            row = measure(backbone, weights=weights, size=args.size, repeat=args.repeat, folder=folder)
            result["rows"].append(row)
            print(f"{backbone} at {args.size}: forward " + ", ".join(
                f"{name} {row['forward_seconds'][name]:.2f} s ({row['x_eager'][name]:.2f} x eager, max logit gap "
                f"{row['max_logit_gap'][name]:.1e}; matte on photos: mean {row['matte_vs_eager_on_photos'][name]['mean']:.4f}, "
                f"99.9th percentile {row['matte_vs_eager_on_photos'][name]['p999']:.4f}, logits off by "
                f"{row['matte_vs_eager_on_photos'][name]['logits_error_of_spread']:.3f} of their spread)"
                for name in row["forward_seconds"])
                + f"; export {row['export_seconds']} s, OpenVINO export and conversion {row['openvino_convert_seconds']} s, "
                f"INT8 quantization {row['int8_quantize_seconds']} s", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
