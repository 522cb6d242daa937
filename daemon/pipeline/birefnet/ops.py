"""Two tensor operations the decoder uses everywhere, written once."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with align_corners=True, the reference's choice everywhere."""
    if tuple(x.shape[-2:]) == size:
        return x  # the reference interpolates to the same size too: an exact copy
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 convolution as a matrix product over channels-last pixels: (B, C, H, W) and an
    (out, C) or (out, C, 1, 1) weight -> (B, out, H, W), channels-last in memory. It lets
    one 1x1 convolution be applied in parts, to the pieces the reference concatenates first."""
    out: torch.Tensor = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias)
    return out.permute(0, 3, 1, 2)
