"""A BiRefNet of the family, run by the package's own implementation on the hub's weights.

No code from the hub runs: the weights file (`model.safetensors`, fetched and pinned like
any hub model) is compared with the architecture key by key before anything is loaded, and
then loaded strictly into a model built on the meta device, so the weights exist once in
memory, never twice. A checkpoint that does not fit (a hub revision that renamed a layer)
raises `CheckpointMismatch` naming the keys; the caller falls back to the hub's own code,
never to random weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from daemon.errors import ModelLoadError
from daemon.pipeline.birefnet import BiRefNet, build_birefnet, key_differences
from daemon.pipeline.modelspec import Family



class CheckpointMismatch(ModelLoadError):
    """The weights file does not have exactly the native model's keys and shapes."""


def checkpoint_shapes(weights: Path) -> dict[str, list[int]]:
    """Every tensor's shape from the file's header, without reading the tensors."""
    try:
        with safe_open(str(weights), framework="pt") as handle:
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (OSError, SafetensorError) as exc:
        raise ModelLoadError(f"cannot read the weights {weights}: {exc}") from exc


def load_native(family: Family, *, weights: Path) -> BiRefNet:
    """The family member's model with `weights` loaded strictly, on the CPU, in eval mode."""
    model = build_birefnet(family.backbone, device="meta")
    differences = key_differences(model, checkpoint_shapes(weights))
    if not differences.loads_strictly:
        raise CheckpointMismatch(
            f"{weights} does not fit the {family.name} architecture ({family.backbone}): {differences.describe()}"
        )
    try:
        state = load_file(str(weights), device="cpu")
    except (OSError, SafetensorError) as exc:
        raise ModelLoadError(f"cannot read the weights {weights}: {exc}") from exc
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def on_meta(module: torch.nn.Module) -> list[str]:
    """Parameters and buffers still on the meta device (a load that left something unset)."""
    named = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, tensor in named if tensor.is_meta]
