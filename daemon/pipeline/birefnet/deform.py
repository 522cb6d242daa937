"""Modulated deformable convolution (DCNv2) in plain torch, so BiRefNet needs no torchvision.

The numbers follow `torchvision.ops.deform_conv2d` with a mask: every kernel tap (i, j) of
output pixel (y, x) reads the input at (y - pad + i + dy, x - pad + j + dx), bilinearly, with
zeros outside the image, weighted by the tap's mask value. The reading is `grid_sample`
(zero padding, pixel-centre normalisation), which has the same corner rules; the weighted
taps then meet the kernel in a matrix product, as torchvision's im2col does (in groups of
taps when one product would not fit SAMPLE_BUDGET).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from daemon.pipeline.birefnet.ops import exporting, exporting_deformable_nodes, static_size

SAMPLE_BUDGET = 1 << 25
"""Most sampled values (channels x taps x pixels) held at once: 128 MiB in float32. A 7x7
kernel at 2048² input would otherwise need 3 GiB for one im2col matrix; above the budget
the taps are taken in groups and their products summed."""


def tap_offsets(kernel_size: int, padding: int) -> torch.Tensor:
    """(taps, 2) positions (row, column) of each kernel tap relative to the output pixel."""
    steps = torch.arange(kernel_size, dtype=torch.float32, device="cpu") - padding
    rows, cols = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack((rows.flatten(), cols.flatten()), dim=1)


def base_grid(kernel_size: int, padding: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(taps, H, W, 2) undeformed sampling positions in pixels, (x, y) last as grid_sample wants."""
    taps = tap_offsets(kernel_size, padding).to(device)
    ys = torch.arange(height, dtype=torch.float32, device=device).view(1, height, 1)
    xs = torch.arange(width, dtype=torch.float32, device=device).view(1, 1, width)
    rows = (ys + taps[:, 0].view(-1, 1, 1)).expand(-1, height, width)
    cols = (xs + taps[:, 1].view(-1, 1, 1)).expand(-1, height, width)
    return torch.stack((cols, rows), dim=-1)


def to_normalised(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel (x, y) to grid_sample's [-1, 1] with align_corners=False: (2p + 1) / size - 1.
    That convention maps pixel centres exactly and, unlike align_corners=True, works for a
    one-pixel-wide map."""
    scale = pixels.new_tensor([2.0 / width, 2.0 / height])
    shift = pixels.new_tensor([1.0 / width - 1.0, 1.0 / height - 1.0])
    return torch.addcmul(shift, pixels, scale)


def sampling_grid(base: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """(B, taps, H, W, 2) normalised positions: the base grid moved by the learnt offsets.
    torchvision's offset channels are (dy, dx) per tap; grid_sample wants (x, y). Always
    float32: in float16 a position near pixel 500 would be off by a quarter pixel."""
    batch, _, height, width = static_size(offset)
    moves = offset.float().view(batch, static_size(base)[0], 2, height, width).permute(0, 1, 3, 4, 2).flip(-1)
    return to_normalised(base + moves, height, width)


def taps_per_group(channels: int, taps: int, pixels: int) -> int:
    """How many taps fit in one sampled block under SAMPLE_BUDGET (at least one)."""
    return max(1, min(taps, SAMPLE_BUDGET // max(1, channels * pixels)))


def deform_conv2d(
    image: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, base: torch.Tensor
) -> torch.Tensor:
    """Stride-1 modulated deformable convolution without bias; `base` is `base_grid(...)` of
    this kernel, padding and size. The output has the input's size, channels-last in memory."""
    batch, channels, height, width = static_size(image)
    outputs, taps = static_size(weight)[0], static_size(base)[0]
    grid = sampling_grid(base, offset)
    kernel = weight.reshape(outputs, channels, taps)
    # grid_sample reads a channels-last float32 input about three times faster on the CPU.
    source = image.float().contiguous(memory_format=torch.channels_last)
    pixels_first = not exporting()  # see _sampled_product
    step = taps_per_group(channels, taps, height * width)
    result = _sampled_product(source, grid[:, :step], mask[:, :step], kernel[:, :, :step], image.dtype,
                              pixels_first=pixels_first)
    for start in range(step, taps, step):
        chunk = slice(start, start + step)
        result.add_(_sampled_product(source, grid[:, chunk], mask[:, chunk], kernel[:, :, chunk], image.dtype,
                                     pixels_first=pixels_first))
    if pixels_first:
        return result.view(batch, height, width, outputs).permute(0, 3, 1, 2)
    return result.view(batch, outputs, height, width)


def _sampled_product(
    source: torch.Tensor, grid: torch.Tensor, mask: torch.Tensor, kernel: torch.Tensor, dtype: torch.dtype, *,
    pixels_first: bool,
) -> torch.Tensor:
    """One group of taps: sample, modulate (in place: a fresh tensor that size costs more to
    allocate than to multiply), and multiply by those taps' weights: a (B, H·W, out) result
    when `pixels_first` (eager: BLAS reads the columns transposed where they lie, and the result
    is channels-last), else (B, out, H·W), the same product without a transpose (an export: the
    graph's Transpose node would be a copy of every column, which OpenVINO's CPU plugin spent a
    sixth of Swin-T's forward on at 1024)."""
    batch, channels, height, width = static_size(source)
    taps = static_size(grid)[1]
    flat_grid = grid.reshape(batch, taps * height, width, 2)
    sampled = F.grid_sample(source, flat_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    modulated = sampled.to(dtype).view(batch, channels, taps, height, width).mul_(mask.unsqueeze(1))
    columns = modulated.view(batch, channels * taps, height * width)
    weights = kernel.reshape(kernel.shape[0], channels * taps)
    return torch.matmul(columns.transpose(1, 2), weights.t()) if pixels_first else torch.matmul(weights, columns)


class DeformConvNode(torch.autograd.Function):
    """`deform_conv2d`, written to an ONNX export as one DeformConv node (opset 19, whose
    definition is torchvision's, which this module follows) instead of the GridSample, the
    modulation and the MatMul it is made of: OpenVINO's own kernel samples and multiplies in one
    pass, where the GridSample form wrote every sampled column out first (822 MB for the 7x7
    branch of Swin-T's first decoder block at 1024)."""

    @staticmethod
    def forward(ctx: Any, image: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                padding: int) -> torch.Tensor:
        height, width = static_size(image)[-2:]
        base = base_grid(static_size(weight)[-1], padding, height, width, image.device)
        return deform_conv2d(image, offset, mask, weight, base)

    @staticmethod
    def symbolic(graph: Any, image: Any, weight: Any, offset: Any, mask: Any, padding: int) -> Any:
        # As `deform_conv2d`: stride 1, a square kernel, the same padding on every side, and the
        # output the input's size.
        outputs, _, kernel, _ = weight.type().sizes()
        no_bias = graph.op("Constant", value_t=torch.zeros(outputs))
        node = graph.op("DeformConv", image, weight, offset, no_bias, mask, kernel_shape_i=[kernel, kernel],
                        pads_i=[padding] * 4, strides_i=[1, 1], dilations_i=[1, 1], group_i=1, offset_group_i=1)
        batch, _, height, width = image.type().sizes()
        node.setType(image.type().with_sizes([batch, outputs, height, width]))
        return node


_as_one_node: Callable[..., torch.Tensor] = getattr(DeformConvNode, "apply")  # untyped in torch's stubs


class DeformableConv2d(nn.Module):
    """BiRefNet's deformable convolution: offsets and a 2·sigmoid modulation mask predicted by
    two plain convolutions from the same input, then a modulated deformable convolution with
    `regular_conv`'s kernel (whose own forward is never used; it only holds the weights).
    Attribute names are the checkpoint's."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int) -> None:
        super().__init__()
        taps = kernel_size * kernel_size
        self.kernel_size, self.padding = kernel_size, padding
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, kernel_size, padding=padding, bias=True)
        self.modulator_conv = nn.Conv2d(in_channels, taps, kernel_size, padding=padding, bias=True)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self._grids: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset: torch.Tensor = self.offset_conv(x)
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x))
        if exporting_deformable_nodes():
            return _as_one_node(x, self.regular_conv.weight, offset, mask, self.padding)
        return deform_conv2d(x, offset, mask, self.regular_conv.weight, self._base_grid(x))

    def _base_grid(self, x: torch.Tensor) -> torch.Tensor:
        """The undeformed grid for this input size, built once per size and device."""
        height, width = static_size(x)[-2:]
        key = (height, width, x.device)
        grid = self._grids.get(key)
        if grid is None:
            if len(self._grids) >= 4:
                self._grids.clear()
            with torch.inference_mode(False):  # a cache made in inference mode would refuse autograd later
                grid = self._grids[key] = base_grid(self.kernel_size, self.padding, key[0], key[1], x.device)
        return grid
