"""Which order a BiRefNet checkpoint stacks the decoder's image patches in, read from the
repository's own `birefnet.py` as text (never imported, never run). Torch-free: the pin and
`cutout model list` use it.

The decoder cuts the input image into a grid of patches and stacks them on the channel axis
for its `ipt_blk` convolutions. Two orders exist, and a checkpoint computes what it was
trained for only in its own (the next convolution otherwise sees its channels permuted):

- `einops`: `rearrange(x, 'b c (hg h) (wg w) -> b (c hg wg) h w')`, colour outermost, then
  rows, then columns. BiRefNet's code since 2024-11-05 (ZhengPeng7/BiRefNet 5198d3f), so the
  current ZhengPeng7 checkpoints.
- `legacy`: `get_patches_batch`, column by column, then rows, colour innermost. Early-2024
  BiRefNet code and briaai/RMBG-2.0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PatchOrder = Literal["einops", "legacy"]
PATCH_ORDERS: tuple[PatchOrder, ...] = ("einops", "legacy")
CODE_FILE = "birefnet.py"
"""The hub repository's model code, next to `model.safetensors`: read for its patch order."""

_SPACES = re.compile(r"\s+")
_EINOPS_CALL = re.compile(
    r"image2patches\([^()]*transformation\s*=\s*(['\"])b c \(hg h\) \(wg w\) -> b \(c hg wg\) h w\1"
)
_LEGACY_CALL = re.compile(r"\.get_patches_batch\(")


@dataclass(frozen=True)
class PatchOrderFinding:
    """What a repository's code says: the order (None when it cannot be told) and why."""

    order: PatchOrder | None
    reason: str


def patch_order_of_code(text: str) -> PatchOrderFinding:
    """The decoder's patch order as `birefnet.py` calls it: `image2patches(...)` with the einops
    channel transformation, or `self.get_patches_batch(...)`; neither or both: unknown."""
    flat = _SPACES.sub(" ", text)
    einops, legacy = bool(_EINOPS_CALL.search(flat)), bool(_LEGACY_CALL.search(flat))
    if einops and not legacy:
        return PatchOrderFinding("einops", f"{CODE_FILE} calls image2patches with 'b c (hg h) (wg w) -> b (c hg wg) h w'")
    if legacy and not einops:
        return PatchOrderFinding("legacy", f"{CODE_FILE} calls get_patches_batch")
    found = "calls both image2patches (einops) and get_patches_batch" if einops else (
        "calls neither image2patches with the einops channel transformation nor get_patches_batch")
    return PatchOrderFinding(None, f"{CODE_FILE} {found}: its decoder's patch order cannot be told")


def patch_order_of_snapshot(folder: Path) -> PatchOrderFinding | None:
    """The finding for a downloaded revision, or None when its `birefnet.py` is not there."""
    try:
        text = (folder / CODE_FILE).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    return patch_order_of_code(text)
