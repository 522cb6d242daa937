"""Which model, on which device, at which precision: names only, parsed without torch.

The settings hold a parsed `ModelSpec`, so every command (and `cutout status`, which
never loads torch) reads the same answer to "which model is this config about".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from daemon.errors import ModelLoadError

DEFAULT_MODEL = "birefnet"
BIREFNET_REPO = "ZhengPeng7/BiRefNet"
WEIGHTS_FILE = "model.safetensors"
"""What a family BiRefNet loads from its hub repository: the weights alone, never code."""
DeviceName = Literal["auto", "mps", "cuda", "cpu"]
DEVICE_NAMES: tuple[DeviceName, ...] = ("auto", "mps", "cuda", "cpu")
Backbone = Literal["swin_v1_l", "swin_v1_t"]
Precision = Literal["float32", "float16", "bfloat16", "int8"]
GPU_PRECISIONS: tuple[Precision, ...] = ("float16", "bfloat16")
"""Eager PyTorch's faster precisions, on a GPU; int8 is OpenVINO's quantized graph, on the CPU."""


@dataclass(frozen=True, kw_only=True)
class Family:
    """A published BiRefNet checkpoint that the package's own implementation runs."""

    name: str
    repo: str
    backbone: Backbone
    size: int
    """The input size the pipeline uses by default for it (`pipeline.target_size` overrides)."""
    speed: str
    licence: str
    use: str


FAMILY: dict[str, Family] = {
    family.name: family
    for family in (
        Family(name="birefnet", repo=BIREFNET_REPO, backbone="swin_v1_l", size=1088, speed="1x (Swin-L)",
               licence="MIT", use="general subjects: products, people, objects (the seed's model, at 1088)"),
        Family(name="birefnet-lite", repo="ZhengPeng7/BiRefNet_lite", backbone="swin_v1_t", size=1024,
               speed="about 3x faster (Swin-T)", licence="MIT", use="a small Mac; a little less edge detail"),
        Family(name="birefnet-hr", repo="ZhengPeng7/BiRefNet_HR", backbone="swin_v1_l", size=2048,
               speed="about 4x slower (estimate)", licence="MIT", use="high-resolution product shots"),
        Family(name="birefnet-matting", repo="ZhengPeng7/BiRefNet-matting", backbone="swin_v1_l", size=1024,
               speed="1x (Swin-L)", licence="MIT", use="soft edges: hair, fur, veils"),
        Family(name="birefnet-portrait", repo="ZhengPeng7/BiRefNet-portrait", backbone="swin_v1_l", size=1024,
               speed="1x (Swin-L)", licence="MIT", use="people"),
        Family(name="birefnet-dynamic", repo="ZhengPeng7/BiRefNet_dynamic", backbone="swin_v1_l", size=1024,
               speed="1x (Swin-L)", licence="MIT", use="trained on sizes from 256 to 2304: any target_size"),
    )
}
"""The BiRefNet family by name (`cutout model list`); every one shares the layout of its backbone."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: a BiRefNet of the family (the package's own code, the hub's
    weights), any Hugging Face repo or folder (its own code), or a TorchScript file."""

    kind: Literal["native", "hf", "torchscript"]
    source: str
    """native and hf: the hub repo (or, for hf, a local folder); torchscript: the file."""
    family: str | None = None
    """native: the family member's name."""

    @property
    def is_local_hf(self) -> bool:
        return self.kind == "hf" and Path(self.source).is_dir()

    @property
    def native(self) -> Family:
        assert self.family is not None, "only a native spec has a family"
        return FAMILY[self.family]

    def __str__(self) -> str:
        if self.kind == "native":
            return str(self.family)
        return f"hf:{self.source}" if self.kind == "hf" else self.source


def parse_model_spec(text: str) -> ModelSpec:
    """A family name (`birefnet`, `birefnet-lite`, ...), `hf:<repo or dir>`, or a TorchScript file path."""
    name = text.strip().lower()
    if name == "hf:birefnet":  # the remote-code path by its old short name
        return ModelSpec("hf", BIREFNET_REPO)
    if name in FAMILY:
        return ModelSpec("native", FAMILY[name].repo, name)
    if text.startswith("hf:"):
        if not text[3:]:
            raise ModelLoadError("model 'hf:' names no repository or folder")
        return ModelSpec("hf", text[3:])
    return ModelSpec("torchscript", text)
