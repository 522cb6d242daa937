"""BiRefNet's decoder, the paper's reconstruction module: from the deepest map up to the input's
resolution, each level fed the previous level (upsampled) plus a lateral view of the encoder's
map, and the input image itself cut into patches (the inward reference); each level's output
gated by its gradient attention (the outward reference); side predictions at 1/32, 1/16 and
1/8 and the final logits at full size. Eval-mode only.

Attribute names are the checkpoint's. The gradient heads `gdt_convs_pred_*` predict a
training target and are never used at inference; they exist so that the released
`model.safetensors` loads with `strict=True`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from daemon.pipeline.birefnet.aspp import ASPPDeformable
from daemon.pipeline.birefnet.ops import pointwise, resize, spatial_size, static_size
from daemon.pipeline.patchorder import PatchOrder

INNER_CHANNELS = 64
GRADIENT_CHANNELS = 16
PATCH_GRIDS = (32, 16, 8, 4, 1)
"""Patches per side of the image fed to ipt_blk5 .. ipt_blk1 (the map's stride at that level)."""


class Predictions(NamedTuple):
    """Every output of the eval-mode reference, coarse to fine (its list order)."""

    side4: torch.Tensor
    side3: torch.Tensor
    side2: torch.Tensor
    logits: torch.Tensor


PatchStacker = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]
"""(B, 3, H, W) image, (h, w) map size -> (B, 3·gh·gw, h, w): the image cut into a gh x gw grid
of patches of the map's size, stacked on channels in one checkpoint's order."""


def stack_patches_colour_rows_columns(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The einops order, `'b c (hg h) (wg w) -> b (c hg wg) h w'`: colour outermost, then rows,
    then columns, so channel = (colour·gh + row)·gw + column. BiRefNet's code since 2024-11 and
    the current ZhengPeng7 checkpoints."""
    batch, colours, rows, cols, height, width = _grid(image, size)
    tiles = image.view(batch, colours, rows, height, cols, width).permute(0, 1, 2, 4, 3, 5)
    return resize(tiles.reshape(batch, colours * rows * cols, height, width), size)


def stack_patches_columns_rows_colour(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The legacy order, `get_patches_batch`: column by column, top to bottom within a column,
    colours innermost, so channel = (column·gh + row)·3 + colour. Early-2024 code and RMBG-2.0.
    Built channels-last in memory (the colours are innermost there already)."""
    batch, colours, rows, cols, height, width = _grid(image, size)
    tiles = image.view(batch, colours, rows, height, cols, width).permute(0, 3, 5, 4, 2, 1)
    stacked = tiles.reshape(batch, height, width, cols * rows * colours).permute(0, 3, 1, 2)
    return resize(stacked, size)


def _grid(image: torch.Tensor, size: tuple[int, int]) -> tuple[int, int, int, int, int, int]:
    """Batch, colours, grid rows and columns, and the patch size, for maps of `size` (the
    reference's grid: the image size over the map size, rounded down)."""
    batch, colours, height, width = static_size(image)
    rows, cols = height // size[0], width // size[1]
    return batch, colours, rows, cols, height // rows, width // cols


PATCH_STACKERS: dict[PatchOrder, PatchStacker] = {
    "einops": stack_patches_colour_rows_columns,
    "legacy": stack_patches_columns_rows_colour,
}


def gradient_head(in_channels: int) -> nn.Sequential:
    """Conv 3x3, batch norm, ReLU: the features both gradient heads read."""
    return nn.Sequential(nn.Conv2d(in_channels, GRADIENT_CHANNELS, 3, padding=1), nn.BatchNorm2d(GRADIENT_CHANNELS), nn.ReLU())


def one_channel(in_channels: int) -> nn.Sequential:
    """A 1x1 convolution to a single map, wrapped as the checkpoint names it (`name.0`)."""
    return nn.Sequential(nn.Conv2d(in_channels, 1, 1))


class SimpleConvs(nn.Module):
    """Two 3x3 convolutions without activation: the image patches' encoder."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, INNER_CHANNELS, 3, padding=1)
        self.conv_out = nn.Conv2d(INNER_CHANNELS, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv_out(self.conv1(x))
        return out


class BasicDecBlk(nn.Module):
    """Conv 3x3 to 64 channels, BN, ReLU, deformable ASPP, conv 3x3 out, BN."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, INNER_CHANNELS, 3, padding=1)
        self.dec_att = ASPPDeformable(INNER_CHANNELS)
        self.conv_out = nn.Conv2d(INNER_CHANNELS, out_channels, 3, padding=1)
        self.bn_in = nn.BatchNorm2d(INNER_CHANNELS)
        self.bn_out = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu_(self.bn_in(self.conv_in(x)))
        out: torch.Tensor = self.bn_out(self.conv_out(self.dec_att(x)))
        return out


class BasicLatBlk(nn.Module):
    """The lateral path: a 1x1 convolution of the encoder's map."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class Decoder(nn.Module):
    """`channels` are the encoder's map widths, deepest first (Swin-L: 3072, 1536, 768, 384);
    `patch_order` the checkpoint's order of the image patches (see `daemon.pipeline.patchorder`)."""

    def __init__(self, channels: tuple[int, int, int, int], *, patch_order: PatchOrder) -> None:
        super().__init__()
        self.patch_order = patch_order
        self._stack_patches = PATCH_STACKERS[patch_order]
        c0, c1, c2, c3 = channels
        ipt_out = (c0 // 8, c0 // 8, c1 // 8, c2 // 8, c3 // 8)
        for level, grid, width in zip((5, 4, 3, 2, 1), PATCH_GRIDS, ipt_out):
            self.add_module(f"ipt_blk{level}", SimpleConvs(3 * grid * grid, width))
        self.decoder_block4 = BasicDecBlk(c0 + ipt_out[0], c1)
        self.decoder_block3 = BasicDecBlk(c1 + ipt_out[1], c2)
        self.decoder_block2 = BasicDecBlk(c2 + ipt_out[2], c3)
        self.decoder_block1 = BasicDecBlk(c3 + ipt_out[3], c3 // 2)
        self.conv_out1 = one_channel(c3 // 2 + ipt_out[4])
        self._add_heads(c1, c2, c3)

    def _add_heads(self, c1: int, c2: int, c3: int) -> None:
        """Lateral blocks, side outputs and gradient heads of levels 4, 3, 2, in checkpoint order."""
        levels = {4: c1, 3: c2, 2: c3}
        for level, width in levels.items():
            self.add_module(f"lateral_block{level}", BasicLatBlk(width, width))
        for level, width in levels.items():
            self.add_module(f"conv_ms_spvn_{level}", nn.Conv2d(width, 1, 1))
        for level, width in levels.items():
            self.add_module(f"gdt_convs_{level}", gradient_head(width))
        for prefix in ("gdt_convs_pred", "gdt_convs_attn"):
            for level in levels:
                self.add_module(f"{prefix}_{level}", one_channel(GRADIENT_CHANNELS))

    def forward(self, image: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor,
                x4: torch.Tensor) -> Predictions:
        """`image` is the normalised input; x1 .. x4 the encoder's maps (x4 squeezed)."""
        p4, side4 = self._level(4, self._with_patches(x4, image, "ipt_blk5"))
        p3, side3 = self._level(3, self._with_patches(self._upward(p4, x3, 4), image, "ipt_blk4"))
        p2, side2 = self._level(2, self._with_patches(self._upward(p3, x2, 3), image, "ipt_blk3"))
        p1 = self.decoder_block1(self._with_patches(self._upward(p2, x1, 2), image, "ipt_blk2"))
        return Predictions(side4, side3, side2, self._logits(p1, image))

    def _logits(self, p1: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """conv_out1 of [p1 upsampled to full size, ipt_blk1(image)], computed as the sum of
        its two parts, with p1's part taken before the upsampling: a 1x1 convolution and a
        bilinear resize commute, so the full-size copy of p1's channels is never made."""
        head = self.conv_out1[0]
        assert isinstance(head, nn.Conv2d)
        weight, bias = head.weight.flatten(1), head.bias
        split, (height, width) = static_size(p1)[1], static_size(image)[-2:]
        coarse = resize(pointwise(p1, weight[:, :split]), (height, width))
        return coarse + pointwise(self.get_submodule("ipt_blk1")(image), weight[:, split:], bias)

    def _level(self, level: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder block, its side prediction, and the block's output gated by the
        sigmoid of the gradient-attention map."""
        p: torch.Tensor = self.get_submodule(f"decoder_block{level}")(x)
        side: torch.Tensor = self.get_submodule(f"conv_ms_spvn_{level}")(p)
        gradient = self.get_submodule(f"gdt_convs_{level}")(p)
        return p * torch.sigmoid(self.get_submodule(f"gdt_convs_attn_{level}")(gradient)), side

    def _upward(self, p: torch.Tensor, skip: torch.Tensor, level: int) -> torch.Tensor:
        """The deeper level's output at the skip map's size, plus the lateral view of the skip."""
        lateral: torch.Tensor = self.get_submodule(f"lateral_block{level}")(skip)
        return resize(p, spatial_size(skip)) + lateral

    def _with_patches(self, x: torch.Tensor, image: torch.Tensor, block: str) -> torch.Tensor:
        """`x` with the encoded image patches of its size appended on channels."""
        patches = self._stack_patches(image, spatial_size(x))
        return torch.cat((x, self.get_submodule(block)(patches)), dim=1)
