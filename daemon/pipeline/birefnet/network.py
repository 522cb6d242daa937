"""The whole BiRefNet: a Swin encoder run on the image and on its half-size copy, the deepest
map widened with the others ("context") and squeezed (together the paper's localization
module), then decoded (its reconstruction module, `decoder.py`).

This is the configuration every released checkpoint of the family uses (`mul_scl_ipt =
"cat"`, `cxt_num = 3`, `squeeze_block = "BasicDecBlk_x1"`, `dec_ipt` with split patches,
`ms_supervision` and `out_ref` on); the reference's other options are not implemented.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from daemon.pipeline.birefnet.decoder import BasicDecBlk, Decoder, Predictions
from daemon.pipeline.birefnet.ops import resize, spatial_size, static_size
from daemon.pipeline.birefnet.swin import SWIN_SHAPES, SwinShape, SwinTransformer
from daemon.pipeline.patchorder import PatchOrder

Backbone = Literal["swin_v1_l", "swin_v1_t"]
Maps = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def lateral_channels(shape: SwinShape) -> tuple[int, int, int, int]:
    """Encoder map widths, deepest first: each stage's width doubled by the half-size copy."""
    deepest_first = tuple(2 * dim for dim in reversed(shape.stage_dims))
    assert len(deepest_first) == 4
    return deepest_first[0], deepest_first[1], deepest_first[2], deepest_first[3]


class BiRefNet(nn.Module):
    """`forward` maps a normalised (B, 3, S, S) batch, S a multiple of 32, to (B, 1, S, S) logits.

    `memory_format` is the layout the input is put in first, and with it every convolution's:
    channels-last by default, two to four times faster for the convolutions on the CPU (and
    what tensor cores want); `torch.contiguous_format` is there for a device where it is not."""

    def __init__(self, shape: SwinShape, *, patch_order: PatchOrder) -> None:
        super().__init__()
        self.memory_format = torch.channels_last
        channels = lateral_channels(shape)
        self.bb = SwinTransformer(shape)
        self.squeeze_module = nn.Sequential(BasicDecBlk(channels[0] + sum(channels[1:]), channels[0]))
        self.decoder = Decoder(channels, patch_order=patch_order)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.predictions(image).logits

    def predictions(self, image: torch.Tensor) -> Predictions:
        """All four outputs of the reference's eval-mode list (side predictions, then logits)."""
        image = image.contiguous(memory_format=self.memory_format)
        x1, x2, x3, x4 = self.encode(image)
        predictions: Predictions = self.decoder(image, x1, x2, x3, self.squeeze_module(x4))
        return predictions

    def encode(self, image: torch.Tensor) -> Maps:
        """The four maps the decoder receives: each stage's output beside the same stage's
        output for the half-size image (upsampled), and x4 widened with x1 .. x3 (resized)."""
        _, _, height, width = static_size(image)
        full: list[torch.Tensor] = self.bb(image)
        half: list[torch.Tensor] = self.bb(resize(image, (height // 2, width // 2)))
        x1, x2, x3, x4 = (torch.cat((f, resize(h, spatial_size(f))), dim=1) for f, h in zip(full, half))
        size = spatial_size(x4)
        return x1, x2, x3, torch.cat((resize(x1, size), resize(x2, size), resize(x3, size), x4), dim=1)


def build_birefnet(
    backbone: Backbone, *, patch_order: PatchOrder, device: torch.device | str | None = None
) -> BiRefNet:
    """An untrained BiRefNet of this backbone in eval mode, its state_dict keyed and shaped like
    the released checkpoints, stacking the decoder's image patches in `patch_order` (the
    checkpoint's: it is in no key or shape, so it is always named). `device="meta"` builds it
    without memory, for `load_state_dict(..., assign=True)` (one copy of the weights) or for
    checking keys."""
    if backbone not in SWIN_SHAPES:
        raise ValueError(f"unknown BiRefNet backbone {backbone!r}; known: {', '.join(sorted(SWIN_SHAPES))}")
    with torch.device(device if device is not None else "cpu"):
        return BiRefNet(SWIN_SHAPES[backbone], patch_order=patch_order).eval()
