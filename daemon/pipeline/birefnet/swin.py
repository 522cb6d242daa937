"""Swin Transformer v1, the backbone of BiRefNet, for inference.

Tokens stay in (B, H, W, C) order from the patch embedding to the stage outputs: LayerNorm
and the linear layers work on the last axis, and the NCHW maps handed to the decoder are
channels-last views, not copies. Window attention is `scaled_dot_product_attention` with the
relative position bias (plus, in shifted blocks, the shift mask) as its additive mask.
Attribute names are the checkpoint's (`bb.layers.0.blocks.0.attn.qkv.weight`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from daemon.pipeline.birefnet.ops import static_size
from daemon.pipeline.birefnet.windows import WindowLayout, relative_position_index, window_layout


@dataclass(frozen=True)
class SwinShape:
    """The sizes that tell one Swin variant from another."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window: int

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Channels of each stage's output: doubled by every patch merging."""
        return tuple(self.embed_dim * 2**stage for stage in range(len(self.depths)))


SWIN_SHAPES = {
    "swin_v1_l": SwinShape(192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
    "swin_v1_t": SwinShape(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
}
"""The two variants the released BiRefNet checkpoints use (Swin-L: BiRefNet; Swin-T: _lite)."""


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learnt bias per relative position."""

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        table_device = self.relative_position_bias_table.device
        self.register_buffer("relative_position_index", relative_position_index(window).to(table_device))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N): the table read at every token pair's relative position."""
        index = self.relative_position_index
        tokens = index.shape[0]
        return self.relative_position_bias_table[index.view(-1)].view(tokens, tokens, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """(B, H, W, C) -> same: attention within each window of `layout`.

        Batch and windows are flattened into one axis and the mask is 4-D: on the CPU that is
        what the fused (flash) kernel takes; 5-D queries or a 3-D mask fall back to the
        unfused math, two to four times slower. The output projection runs after the
        padding is dropped (it is per token: same numbers, less work)."""
        windows = layout.windows(x)
        batch, count, tokens, dim = static_size(windows)
        qkv = self.qkv(windows).view(batch * count, tokens, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        mask = self.attention_mask(layout.mask, batch, query.dtype)
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        out: torch.Tensor = self.proj(layout.merge(attended.transpose(1, 2).reshape(batch, count, tokens, dim)))
        return out

    def attention_mask(self, mask: torch.Tensor | None, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """(1, heads, N, N) bias alone, or (batch·windows, heads, N, N) bias plus shift mask
        (one value per window and head: the sum cannot be a broadcast view)."""
        bias = self.position_bias().to(dtype).unsqueeze(0)
        if mask is None:
            return bias
        combined = bias + mask.to(dtype)
        return combined if batch == 1 else combined.repeat(batch, 1, 1, 1)


class Mlp(nn.Module):
    """The transformer block's feed-forward part: Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(F.gelu(self.fc1(x)))
        return out


class SwinBlock(nn.Module):
    """One (shifted-)window attention block: attention, then the MLP, each on a LayerNorm of
    the input and added back to it. Every second block of a stage gets windows shifted by half
    a window (`windows.WindowLayout`), so that they straddle the previous block's borders."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """(B, H, W, C) -> same; `layout` says whether this block's windows are shifted."""
        x = x + self.attn(self.norm1(x), layout)
        out: torch.Tensor = x + self.mlp(self.norm2(x))
        return out


class PatchMerging(nn.Module):
    """Halves the resolution: each 2x2 neighbourhood becomes one token of 4C channels (in the
    reference's order: top-left, bottom-left, top-right, bottom-right), normalised, then 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = static_size(x)
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        half_h, half_w = (height + 1) // 2, (width + 1) // 2
        grouped = x.view(batch, half_h, 2, half_w, 2, channels).permute(0, 1, 3, 4, 2, 5)
        out: torch.Tensor = self.reduction(self.norm(grouped.reshape(batch, half_h, half_w, 4 * channels)))
        return out


class SwinStage(nn.Module):
    """Blocks that alternate plain and shifted windows, then (but for the last stage) a patch
    merging. Holds the window layouts of each input size it has seen."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, *, downsample: bool) -> None:
        super().__init__()
        self.window = window
        self.shifts = tuple(window // 2 if index % 2 else 0 for index in range(depth))
        self.blocks = nn.ModuleList(SwinBlock(dim, num_heads, window) for _ in self.shifts)
        self.downsample = PatchMerging(dim) if downsample else None
        self._layouts: dict[tuple[int, int, int, torch.device], WindowLayout] = {}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, W, C) -> (this stage's output, the next stage's input)."""
        _, height, width, _ = static_size(x)
        for block, shift in zip(self.blocks, self.shifts):
            x = block(x, self.layout(height, width, shift, x.device))
        following = x if self.downsample is None else self.downsample(x)
        return x, following

    def layout(self, height: int, width: int, shift: int, device: torch.device) -> WindowLayout:
        """The window layout for a map of this size and shift, built once per size and device."""
        key = (height, width, shift, device)
        found = self._layouts.get(key)
        if found is None:
            if len(self._layouts) >= 8:
                self._layouts.clear()
            with torch.inference_mode(False):  # a cache made in inference mode would refuse autograd later
                found = self._layouts[key] = window_layout(height, width, self.window, shift, device)
        return found


class PatchEmbed(nn.Module):
    """4x4 patches to tokens: a strided convolution and a LayerNorm over channels."""

    def __init__(self, dim: int, patch: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/4, W/4, C); a size that is not a multiple of 4 is padded."""
        height, width = static_size(image)[-2:]
        image = F.pad(image, (0, -width % self.patch, 0, -height % self.patch))
        out: torch.Tensor = self.norm(self.proj(image).permute(0, 2, 3, 1))
        return out


class SwinTransformer(nn.Module):
    """The backbone: patch embedding, four stages, a LayerNorm on each stage's output."""

    def __init__(self, shape: SwinShape) -> None:
        super().__init__()
        dims, last = shape.stage_dims, len(shape.depths) - 1
        self.patch_embed = PatchEmbed(shape.embed_dim)
        self.layers = nn.ModuleList(
            SwinStage(dims[i], shape.depths[i], shape.num_heads[i], shape.window, downsample=i < last)
            for i in range(len(dims))
        )
        for index, dim in enumerate(dims):
            self.add_module(f"norm{index}", nn.LayerNorm(dim))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> the four stage outputs, NCHW (channels-last in memory), at 1/4 .. 1/32."""
        x, outputs = self.patch_embed(image), []
        for index, stage in enumerate(self.layers):
            out, x = stage(x)
            norm = self.get_submodule(f"norm{index}")
            outputs.append(norm(out).permute(0, 3, 1, 2))
        return outputs
