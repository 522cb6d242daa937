"""Which model, on which device: names only, parsed without torch.

The settings hold a parsed `ModelSpec`, so every command (and `cutout status`, which
never loads torch) reads the same answer to "which model is this config about".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from daemon.errors import ModelLoadError

DEFAULT_MODEL = "hf:ZhengPeng7/BiRefNet"
BIREFNET_REPO = "ZhengPeng7/BiRefNet"
_BIREFNET_ALIASES = frozenset({"birefnet", "hf:birefnet"})
DeviceName = Literal["auto", "mps", "cuda", "cpu"]
DEVICE_NAMES: tuple[DeviceName, ...] = ("auto", "mps", "cuda", "cpu")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: a Hugging Face repo or folder, or a TorchScript file."""

    kind: Literal["hf", "torchscript"]
    source: str

    @property
    def is_local_hf(self) -> bool:
        return self.kind == "hf" and Path(self.source).is_dir()

    def __str__(self) -> str:
        return f"hf:{self.source}" if self.kind == "hf" else self.source


def parse_model_spec(text: str) -> ModelSpec:
    """`hf:<repo or dir>`, `birefnet` / `hf:birefnet`, or a TorchScript file path."""
    if text.strip().lower() in _BIREFNET_ALIASES:
        return ModelSpec("hf", BIREFNET_REPO)
    if text.startswith("hf:"):
        if not text[3:]:
            raise ModelLoadError("model 'hf:' names no repository or folder")
        return ModelSpec("hf", text[3:])
    return ModelSpec("torchscript", text)
