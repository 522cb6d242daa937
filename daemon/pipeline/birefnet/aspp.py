"""BiRefNet's attention in every decoder block: a deformable ASPP (atrous spatial pyramid
pooling whose branches are deformable convolutions of kernel 1, 1, 3 and 7, plus a global
average), as the released checkpoints configure it (`dec_att = "ASPPDeformable"`).
Attribute names are the checkpoint's; the reference's dropout is the identity in eval.
"""

from __future__ import annotations

import torch
from torch import nn

from daemon.pipeline.birefnet.deform import DeformableConv2d
from daemon.pipeline.birefnet.ops import pointwise

BRANCH_CHANNELS = 256
KERNEL_SIZES = (1, 3, 7)


class DeformableBranch(nn.Module):
    """One pyramid branch: deformable convolution, batch norm, ReLU."""

    def __init__(self, in_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.atrous_conv = DeformableConv2d(in_channels, BRANCH_CHANNELS, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(BRANCH_CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(self.bn(self.atrous_conv(x)))


class ASPPDeformable(nn.Module):
    """The branches side by side, the global context broadcast over the map, a 1x1 fusion."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.aspp1 = DeformableBranch(in_channels, 1)
        self.aspp_deforms = nn.ModuleList(DeformableBranch(in_channels, size) for size in KERNEL_SIZES)
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, BRANCH_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(BRANCH_CHANNELS),
            nn.ReLU(),
        )
        self.conv1 = nn.Conv2d(BRANCH_CHANNELS * (2 + len(KERNEL_SIZES)), in_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 of the concatenated branches, computed as the sum of conv1's slice for each
        branch: the 1280-channel concatenation is never made, and the global context, the
        same at every pixel (the reference upsamples it from 1x1 with align_corners=True, an
        exact copy), enters as a per-channel constant."""
        slices = self.conv1.weight.view(self.conv1.out_channels, -1, BRANCH_CHANNELS).unbind(1)
        context = self.global_avg_pool(x).flatten(1)
        fused = pointwise(self.aspp1(x), slices[0]) + torch.matmul(context, slices[-1].t())[:, :, None, None]
        for branch, weight in zip(self.aspp_deforms, slices[1:-1]):
            fused.add_(pointwise(branch(x), weight))
        return torch.relu_(self.bn1(fused))
