"""The Apple GPU path, lean by construction, checked on the CPU: the built-in BiRefNet dispatches
exactly the operators `device_ops.MODEL_OPS` lists, each has an MPS kernel in the installed
torch's operator table, and the pipeline gives the model one input shape whatever the photo."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

from daemon.pipeline.birefnet import build_birefnet
from daemon.pipeline.birefnet.device_ops import MODEL_OPS
from daemon.pipeline.constants import PipelineParams
from daemon.pipeline.pipeline import StageTimer, prepare
from tests.conftest import subject_image, write_image

COMPOSITE = ("CompositeImplicitAutograd", "CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional")
"""Kernels written in terms of other operators: they run wherever those do."""


class _Dispatched(TorchDispatchMode):
    """Every operator a forward pass dispatches, by its schema name and overload."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        overload = func._schema.overload_name
        self.seen.add(func._schema.name + (f".{overload}" if overload else ""))
        return func(*args, **(kwargs or {}))


@functools.cache
def _model_ops(backbone: str) -> frozenset[str]:
    model = build_birefnet(backbone, patch_order="einops").eval()  # type: ignore[arg-type]
    with torch.inference_mode(), _Dispatched() as dispatched:
        model(torch.zeros(1, 3, 128, 128))
    return frozenset(dispatched.seen)


@functools.cache
def _operator_table() -> dict[str, dict[str, Any]]:
    """The installed torch's native_functions.yaml: `name.overload` -> its entry."""
    import torchgen

    path = Path(os.path.dirname(torchgen.__file__)) / "packaged" / "ATen" / "native" / "native_functions.yaml"
    entries = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {"aten::" + entry["func"].split("(", 1)[0]: entry for entry in entries}


def _runs_on_mps(op: str, table: dict[str, dict[str, Any]]) -> bool:
    entry = table.get(op) or table.get(f"{op}.default") or table.get(op.removesuffix(".default"))
    if entry is None:
        return False
    keys = {key.strip() for names in (entry.get("dispatch") or {}) for key in names.split(",")}
    if not keys or "MPS" in keys or keys & set(COMPOSITE):
        return True  # no dispatch at all is CompositeImplicitAutograd
    delegate = entry.get("structured_delegate")
    return delegate is not None and _runs_on_mps(f"aten::{delegate}", table)


@pytest.mark.parametrize("backbone", ["swin_v1_t", "swin_v1_l"])
def test_the_model_dispatches_exactly_the_listed_operators(backbone: str) -> None:
    used = _model_ops(backbone)
    assert sorted(used - MODEL_OPS) == [] and sorted(MODEL_OPS - _model_ops("swin_v1_t") - _model_ops("swin_v1_l")) == []


def test_every_listed_operator_has_an_mps_kernel_in_this_torch() -> None:
    table = _operator_table()
    assert "MPS" in {key.strip() for names in table["aten::grid_sampler_2d"]["dispatch"] for key in names.split(",")}
    assert sorted(op for op in MODEL_OPS if not _runs_on_mps(op, table)) == []


def test_an_operator_without_an_mps_kernel_would_be_found() -> None:
    table = _operator_table()
    cpu_only = [op for op, entry in table.items()
                if entry.get("dispatch") and not _runs_on_mps(op, table) and "CPU" in str(entry["dispatch"])]
    assert cpu_only  # the check can fail: torch has operators with a CPU kernel and no MPS one


def test_every_photo_reaches_the_model_at_one_shape(tmp_path: Path) -> None:
    params = PipelineParams(target_size=160)
    shapes = set()
    for index, (height, width) in enumerate([(120, 400), (400, 120), (300, 300), (77, 91)]):
        path = write_image(tmp_path / f"p{index}.png", subject_image(height, width, (10, 10, width // 2, height // 2)))
        shapes.add(prepare(path, params=params, timer=StageTimer()).batch.shape)
    assert shapes == {(1, 3, 160, 160)}
