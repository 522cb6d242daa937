"""A BiRefNet of the family, run by the package's own implementation on the hub's weights.

No code from the hub runs: the weights file (`model.safetensors`, fetched and pinned like
any hub model) is compared with the architecture key by key before anything is loaded, and
then loaded strictly into a model built on the meta device, so the weights exist once in
memory, never twice. A checkpoint that does not fit (a hub revision that renamed a layer)
raises `CheckpointMismatch` naming the keys; the caller falls back to the hub's own code,
never to random weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from daemon.errors import ModelLoadError
from daemon.pipeline.birefnet import BiRefNet, build_birefnet, key_differences
from daemon.pipeline.modelspec import Family
from daemon.pipeline.patchorder import PatchOrderFinding


class CheckpointMismatch(ModelLoadError):
    """The checkpoint does not fit the native model: other keys or shapes, or a patch order
    that its repository's code does not tell."""


@dataclass(frozen=True)
class NativeCheckpoint:
    """A pinned revision of a family BiRefNet: its weights file, and the order its own code
    stacks the decoder's image patches in (read from its `birefnet.py`)."""

    weights: Path
    patch_order: PatchOrderFinding


def checkpoint_shapes(weights: Path) -> dict[str, list[int]]:
    """Every tensor's shape from the file's header, without reading the tensors."""
    try:
        with safe_open(str(weights), framework="pt") as handle:
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (OSError, SafetensorError) as exc:
        raise ModelLoadError(f"cannot read the weights {weights}: {exc}") from exc


def load_native(family: Family, checkpoint: NativeCheckpoint) -> BiRefNet:
    """The family member's model in the checkpoint's patch order with its weights loaded
    strictly, on the CPU, in eval mode."""
    weights, patches = checkpoint.weights, checkpoint.patch_order
    # The patch order has no keys: a meta model of either order compares the keys alike.
    model = build_birefnet(family.backbone, patch_order=patches.order or "einops", device="meta")
    differences = key_differences(model, checkpoint_shapes(weights))
    if not differences.loads_strictly:
        raise CheckpointMismatch(
            f"{weights} does not fit the {family.name} architecture ({family.backbone}): {differences.describe()}"
        )
    if patches.order is None:  # the keys fit, but the order is in no key: never guessed
        raise CheckpointMismatch(f"the built-in BiRefNet cannot run {weights}: {patches.reason}")
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
