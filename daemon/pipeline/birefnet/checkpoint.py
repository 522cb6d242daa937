"""Which state_dict keys a checkpoint and the native model disagree on, named, so a loader can
say why a hub revision does not load strictly instead of printing torch's wall of text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

Shape = tuple[int, ...]


@dataclass(frozen=True)
class KeyDifferences:
    """Keys the model has and the checkpoint lacks, the reverse, and same-named keys whose
    shapes differ (key, model's shape, checkpoint's shape). Empty everywhere: a strict load."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, Shape, Shape], ...]

    @property
    def loads_strictly(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 5) -> str:
        """One line per kind of difference, naming at most `limit` keys each."""
        lines = [_named(f"{len(self.missing)} missing", self.missing, limit),
                 _named(f"{len(self.unexpected)} unexpected", self.unexpected, limit),
                 _named(f"{len(self.mismatched)} with another shape",
                        [f"{key} (model {list(ours)}, checkpoint {list(theirs)})" for key, ours, theirs in self.mismatched],
                        limit)]
        return "; ".join(line for line in lines if line) or "the checkpoint matches the model"


def _named(kind: str, keys: Sequence[str], limit: int) -> str:
    """'3 missing: a, b, c' (with '...' past `limit`), or '' when there are none."""
    if not keys:
        return ""
    shown = ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
    return f"{kind}: {shown}"


def _shape(value: torch.Tensor | Sequence[int]) -> Shape:
    return tuple(int(size) for size in (value.shape if isinstance(value, torch.Tensor) else value))


def key_differences(model: nn.Module, checkpoint: Mapping[str, torch.Tensor | Sequence[int]]) -> KeyDifferences:
    """Compare `model.state_dict()` with a checkpoint given as tensors or as shapes alone
    (e.g. read from safetensors metadata, before loading anything). Works on a meta model."""
    ours = {key: _shape(value) for key, value in model.state_dict().items()}
    theirs = {key: _shape(value) for key, value in checkpoint.items()}
    mismatched = tuple((key, ours[key], theirs[key]) for key in ours if key in theirs and ours[key] != theirs[key])
    return KeyDifferences(
        missing=tuple(key for key in ours if key not in theirs),
        unexpected=tuple(key for key in theirs if key not in ours),
        mismatched=mismatched,
    )
