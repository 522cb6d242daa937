"""A TorchScript stand-in for BiRefNet with a configurable cost per forward.

The matte is real: a pixel is foreground where the image is bright (mean RGB
above BRIGHTNESS_THRESHOLD), which the generated photos' subject is and their
background is not. So every downstream stage (largest component, edges, crop,
PNG) gets the kind of work a real matte gives it.

The cost is one of:

* ``sleep`` (default): the forward waits `cost_ms` inside a custom operator
  that calls `time.sleep`, which releases the GIL and uses no CPU -- exactly how
  the inference thread behaves while a GPU (MPS/CUDA) runs the real model. This
  is what the targets are measured with: the CPU stages keep every core.
* ``compute``: the forward runs a calibrated chain of matrix products on the
  model's device, mimicking a model that runs on the CPU and competes with the
  CPU stages for the cores.

TorchScript cannot call `time.sleep`, so the sleep is a custom operator
(`cutout_bench::wait_ms`), registered when this module is imported. A process
that loads the stand-in must import this module first: the benchmark starts
the daemon through `python -m benchmarks.cutout_cli`, which does that and then
runs the very same `daemon.cli.main.main()` as `cutout` / `python -m daemon`.
"""

# No `from __future__ import annotations`: TorchScript reads the class annotations.
import time
from pathlib import Path
from typing import Literal

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BRIGHTNESS_THRESHOLD = 0.6
"""Mean RGB / 255 above which a pixel is foreground (the generated subject is ~0.8)."""
LOGIT_SCALE = 25.0
"""Logit gain: a soft edge a few model pixels wide, like a real matte."""
MATMUL_SIZE = 256
"""Side of the square matrices of the `compute` cost."""

CostKind = Literal["sleep", "compute"]
COST_KINDS: tuple[CostKind, ...] = ("sleep", "compute")
OP_NAMESPACE = "cutout_bench"


def _wait_ms(x: torch.Tensor, ms: float) -> torch.Tensor:
    """Block like a GPU wait: no CPU, GIL released. Returns a copy of its (tiny) input,
    so the result depends on the wait and TorchScript cannot reorder or drop it."""
    if ms > 0:
        time.sleep(ms / 1000.0)
    return x.clone()


def register_ops() -> None:
    """Define `cutout_bench::wait_ms` once per process (TorchScript needs it at load time)."""
    global _LIBRARY
    if _LIBRARY is not None:
        return
    library = torch.library.Library(OP_NAMESPACE, "DEF")  # type: ignore[no-untyped-call]
    library.define("wait_ms(Tensor x, float ms) -> Tensor")  # type: ignore[no-untyped-call]
    library.impl("wait_ms", _wait_ms, "CompositeExplicitAutograd")  # type: ignore[no-untyped-call]
    _LIBRARY = library  # kept alive: the registration lasts as long as the Library object


_LIBRARY: torch.library.Library | None = None
register_ops()


class StandInNet(nn.Module):
    """Logits `LOGIT_SCALE * (brightness - BRIGHTNESS_THRESHOLD)` after a fixed cost.

    Brightness of the un-normalised image is linear in the normalised input, so
    the whole matte is one (1x3) @ (3xHW) product: the stand-in's own CPU work
    stays a few milliseconds and the cost is what `sleep_ms` / `matmuls` say.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    weights: torch.Tensor

    def __init__(self, *, sleep_ms: float, matmuls: int) -> None:
        super().__init__()
        self.sleep_ms = float(sleep_ms)
        self.matmuls = int(matmuls)
        std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
        self.register_buffer("weight", (LOGIT_SCALE * std / 3).view(1, 3))
        self.register_buffer("bias", (LOGIT_SCALE * (mean.mean() - BRIGHTNESS_THRESHOLD)).view(1, 1))
        self.register_buffer("weights", torch.full((MATMUL_SIZE, MATMUL_SIZE), 1.0 / MATMUL_SIZE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pay the cost (the bias waits on it), then one small matrix product."""
        bias = torch.ops.cutout_bench.wait_ms(self.bias, self.sleep_ms)
        acc = self.weights
        for _ in range(self.matmuls):
            acc = torch.mm(acc, self.weights)
        bias = bias + acc[0, 0] * 0.0
        height, width = x.size(2), x.size(3)
        logits = torch.addmm(bias, self.weight, x.reshape(3, height * width))
        return logits.view(1, 1, height, width)


def calibrate_matmuls(cost_ms: float, *, device: torch.device) -> int:
    """How many MATMUL_SIZE products take `cost_ms` on `device` (measured here, now)."""
    weights = torch.full((MATMUL_SIZE, MATMUL_SIZE), 1.0 / MATMUL_SIZE, device=device)
    rounds = 50
    with torch.inference_mode():
        _ = float(torch.mm(weights, weights)[0, 0])  # warm up, and wait for an asynchronous device
        start = time.perf_counter()
        acc = weights
        for _ in range(rounds):
            acc = torch.mm(acc, weights)
        _ = float(acc[0, 0])
        per_mm = (time.perf_counter() - start) / rounds
    return max(1, round(cost_ms / 1000.0 / per_mm))


def build_standin(path: Path, *, cost_ms: float, kind: CostKind, device: torch.device) -> Path:
    """Script and save the stand-in; `compute` is calibrated on `device` first."""
    if kind == "sleep":
        net = StandInNet(sleep_ms=cost_ms, matmuls=0)
    else:
        net = StandInNet(sleep_ms=0.0, matmuls=calibrate_matmuls(cost_ms, device=device))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(net.eval()), str(path))
    return path
