"""The built-in BiRefNet end to end on this CPU, for each backend: images per hour, the model's
share of the time, memory.

    python -m benchmarks.real_network                                     # birefnet-lite; torch, onnxruntime, openvino
    python -m benchmarks.real_network --model birefnet --backends torch,openvino --images 6

The weights are the golden fixtures' rule weights (as `benchmarks.native_forward`: a forward
costs the same whatever the weights are), laid out as a snapshot of the model's hub repository
in a local hub cache (benchmarks/work/hub) with the repository's code shape for its patch order.
Each daemon is a real `cutout watch --model <name>` with `model.backend` set, pointed at that
cache offline: it fetches and pins the snapshot as it would the trained weights, exports it for
its runtime, checks the runtime against eager on the probe image, and starts. Then 24 MP photos
are dropped at once (the four photos of `benchmarks.run`, cycled, copied under distinct names)
and each output is timed as it appears. The model-only rate is measured afterwards in a
process of its own (`--alone`), on the same pinned weights and the same cached export, through
the daemon's own `open_model`: forwards of one prepared photo, one after another.

Printed, and written to benchmarks/results/real-network-<model>.json. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks import endtoend, stages
from benchmarks.images import ensure_image
from benchmarks.machine import REPO, RESULTS, WORK, machine_info
from benchmarks.native_forward import write_rule_weights
from benchmarks.run import E2E_SEEDS
from daemon.pipeline import StageTimer, prepare
from daemon.pipeline.modelspec import FAMILY

RULE_COMMIT = hashlib.sha1(b"cutout benchmark rule weights").hexdigest()
"""The snapshot's commit in the local cache: what the daemon pins."""


def local_hub(model: str) -> Path:
    """HF_HOME for the daemon: a hub cache holding `model`'s repository at RULE_COMMIT, with the
    rule weights and code that tells the patch order (the fixtures' einops order)."""
    from daemon.testing import lay_out_snapshot
    from tests.hub_code import EINOPS_CODE

    family, home = FAMILY[model], WORK / "hub"
    tree = write_rule_weights(family.backbone, WORK / "hub-trees").parent
    (tree / "birefnet.py").write_text(EINOPS_CODE)
    lay_out_snapshot(home / "hub", repo=family.repo, commit=RULE_COMMIT, source=tree, ref="main")
    return home


def model_only(config: Path, photo: Path, *, home: Path, forwards: int) -> dict[str, Any]:
    """Forwards per second of the daemon's model on `config`'s pin and cached export, alone, in a
    process of its own that loads it as the daemon does (eager's threads and a runtime's slow each
    other in one process: `benchmarks.backends` measured it)."""
    command = [sys.executable, "-m", "benchmarks.real_network", "--alone", str(config), "--photo", str(photo),
               "--hub", str(home), "--forwards", str(forwards)]
    done = subprocess.run(command, cwd=REPO, env=endtoend.child_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the model-only run failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure_alone(config: Path, photo: Path, *, home: Path, forwards: int) -> dict[str, Any]:
    """In the `--alone` process: open the model as `cutout watch` does, then time its forwards."""
    from daemon.models.fetch import PIN_FILE_NAME, ModelStore, hub_download
    from daemon.models.loading import open_model
    from daemon.settings import load_settings

    settings = load_settings(config)
    assert settings.folders.state is not None
    store = ModelStore(pin_file=Path(settings.folders.state) / PIN_FILE_NAME, cache=home / "hub")
    loaded = open_model(settings, store=store, downloader=hub_download)
    model, size = loaded.matte_model, loaded.model.size
    del loaded  # as `cutout watch` does: only what runs the model is kept
    batch = prepare(photo, params=dataclasses.replace(settings.pipeline, target_size=size), timer=StageTimer()).batch
    return stages.model_rate(model, batch, forwards=forwards)


def one_backend(args: argparse.Namespace, backend: str, *, home: Path, photos: list[Path]) -> dict[str, Any]:
    work = WORK / f"real-network-{args.model}-{backend}"
    print(f"{backend}: a daemon on {args.images} photos at {args.mp} MP", file=sys.stderr, flush=True)
    watch = endtoend.run_watch(
        photos, count=args.images, latency_sources=[], latency_repeats=0, model=args.model, device="cpu",
        settle_seconds=1.0, work=work, worker={}, model_settings={"backend": backend},
        env={"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"},
    )
    print(f"{backend}: the model alone, {args.forwards} forwards", file=sys.stderr, flush=True)
    alone = model_only(work / "watch" / "config.yaml", photos[0], home=home, forwards=args.forwards)
    burst = watch["burst"]
    return {"backend": backend, "model": alone, "burst": burst, "memory": watch["memory"],
            "vs_model_only": round(burst["rate_first_to_last_output"] / alone["rate"], 3),
            "model_share": round(burst["inference_seconds_total"] / burst["seconds"], 3)}


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{result['model']} at {result['megapixels']} MP, {result['images']} photos per daemon; "
          f"{result['machine'].get('cpu', '')}")
    print(f"{'backend':<12} {'forward s':>9} {'images/h':>9} {'vs model':>8} {'model share':>11} "
          f"{'CPU s/img':>9} {'RSS early':>9} {'RSS end':>8} {'peak':>7}")
    for row in result["backends"]:
        burst, memory = row["burst"], row["memory"]
        print(f"{row['backend']:<12} {1 / row['model']['rate']:>9.2f} {3600 * burst['rate']:>9.0f} "
              f"{row['vs_model_only']:>8.2f} {100 * row['model_share']:>10.0f}% "
              f"{burst.get('daemon_cpu_s_per_image') or 0:>9.1f} {memory['rss_early_mb']:>8.0f}M "
              f"{memory['rss_end_mb']:>7.0f}M {memory['peak_hwm_mb'] or 0:>6.0f}M")
    print("images/h: first drop to last output; vs model: the rate from the first output to the last"
          " against the model alone; model share: the model thread's busy time over the burst")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="birefnet-lite", choices=sorted(FAMILY))
    parser.add_argument("--backends", default="torch,onnxruntime,openvino")
    parser.add_argument("--images", type=int, default=8, help="photos dropped into each daemon's hot folder")
    parser.add_argument("--mp", type=int, default=24, help="megapixels of the photos")
    parser.add_argument("--forwards", type=int, default=3, help="forwards for the model-only rate")
    parser.add_argument("--alone", type=Path, help=argparse.SUPPRESS)  # the model-only process: a daemon's config
    parser.add_argument("--photo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--hub", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.alone:
        print(json.dumps(measure_alone(args.alone, args.photo, home=args.hub, forwards=args.forwards)))
        return 0
    home = local_hub(args.model)
    photos = [ensure_image(WORK / "inputs", args.mp, "jpg", seed=seed).path for seed in E2E_SEEDS]
    rows = [one_backend(args, backend, home=home, photos=photos) for backend in args.backends.split(",")]
    result = {"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(torch.device("cpu")),
              "model": args.model, "megapixels": args.mp, "images": args.images, "backends": rows,
              "median_forward_s": statistics.median(1 / row["model"]["rate"] for row in rows)}
    print_table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"real-network-{args.model}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
