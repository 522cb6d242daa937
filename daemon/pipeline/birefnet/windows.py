"""The geometry of Swin's window attention: windows, relative positions, the shifted-window mask.

Everything here depends only on sizes, never on weights, so the backbone builds each tensor
once (per input size) instead of on every forward. A `WindowLayout` turns the reference's
pad, roll, partition (and merge, roll back, crop) into one padding and one gather each way:
the same numbers, a fifth of the memory traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from daemon.pipeline.birefnet.ops import static_size


def padded(size: int, window: int) -> int:
    """`size` rounded up to a whole number of windows (the reference pads right and bottom)."""
    return -(-size // window) * window


def partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of `window` -> (B, windows, window², C), windows in
    row-major order, as the shift mask and the reference number them."""
    batch, height, width, channels = x.shape
    grid = x.view(batch, height // window, window, width // window, window, channels)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(batch, -1, window * window, channels)


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²) index into the (2·window - 1)² bias table for each token pair:
    row offset and column offset, each shifted to start at 0, read as one number. Built on
    the CPU whatever the default device: on "meta" it would cost a second of first-use setup."""
    steps = torch.arange(window, device="cpu")
    coords = torch.stack(torch.meshgrid(steps, steps, indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]) + (window - 1)
    return relative[0] * (2 * window - 1) + relative[1]


def _band_labels(size: int, window: int, shift: int) -> torch.Tensor:
    """Which of the three bands each row (or column) falls in after the cyclic shift: the
    untouched body, the last window's first part, and the part that wrapped around."""
    index = torch.arange(size)
    return (index >= size - window).long() + (index >= size - shift).long()


def shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(windows, 1, window², window²) additive mask, 0 or -inf: after the cyclic shift, a token
    may only attend to tokens that were its neighbours before the shift (same band pair)."""
    rows, cols = _band_labels(height, window, shift), _band_labels(width, window, shift)
    labels = (rows[:, None] * 3 + cols[None, :]).view(1, height, width, 1)
    flat = partition(labels, window).view(-1, window * window)
    different = flat[:, :, None] != flat[:, None, :]
    mask = torch.zeros(different.shape).masked_fill(different, float("-inf"))
    return mask.unsqueeze(1)


@dataclass(frozen=True)
class WindowLayout:
    """Where each window token comes from, and where each map position went, for one map size.

    `to_windows[t]` is the index, in the padded map flattened row-major, of window token t
    (windows row-major, tokens row-major inside each, after the cyclic shift if any);
    `from_windows[p]` is the window token that holds map position p (unpadded, row-major).
    `mask` is the shift mask, or None for unshifted windows."""

    height: int
    width: int
    padded_height: int
    padded_width: int
    window: int
    to_windows: torch.Tensor
    from_windows: torch.Tensor
    mask: torch.Tensor | None

    @property
    def count(self) -> int:
        """Windows per image."""
        return (self.padded_height // self.window) * (self.padded_width // self.window)

    @property
    def tokens(self) -> int:
        """Tokens per window."""
        return self.window * self.window

    # Every reshape below spells out its sizes from the layout's ints, none inferred with -1:
    # an exported graph then carries them as constants that ONNX shape inference (and
    # OpenVINO's converter) can check, instead of deriving them from runtime shapes.
    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, Hp·Wp, C), zeros right and bottom, as the reference pads."""
        batch, _, _, channels = static_size(x)
        extra_h, extra_w = self.padded_height - self.height, self.padded_width - self.width
        if extra_h or extra_w:
            x = torch.nn.functional.pad(x, (0, 0, 0, extra_w, 0, extra_h))
        return x.reshape(batch, self.padded_height * self.padded_width, channels)

    def windows(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, windows, window², C)."""
        batch, _, _, channels = static_size(x)
        gathered = torch.index_select(self.pad(x), 1, self.to_windows)
        return gathered.view(batch, self.count, self.tokens, channels)

    def merge(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, windows, window², C) -> (B, H, W, C), the padding dropped."""
        batch, _, _, channels = static_size(windows)
        flat = windows.reshape(batch, self.count * self.tokens, channels)
        return torch.index_select(flat, 1, self.from_windows).view(batch, self.height, self.width, channels)


def window_layout(height: int, width: int, window: int, shift: int, device: torch.device) -> WindowLayout:
    """The layout of an H x W map: padded to whole windows, rolled up-left by `shift` (0: none)."""
    full_h, full_w = padded(height, window), padded(width, window)
    positions = torch.arange(full_h * full_w).view(1, full_h, full_w, 1)
    if shift:
        positions = torch.roll(positions, shifts=(-shift, -shift), dims=(1, 2))
    to_windows = partition(positions, window).reshape(-1)
    # The inverse permutation, token_of[to_windows[t]] = t, as a sort rather than an in-place
    # indexed assignment: nothing for an exporter to trace as a scatter if the layout is built
    # during an export (it is then folded into constants either way).
    token_of = torch.argsort(to_windows)
    from_windows = token_of.view(full_h, full_w)[:height, :width].reshape(-1)
    mask = shift_mask(full_h, full_w, window, shift).to(device) if shift else None
    return WindowLayout(height, width, full_h, full_w, window, to_windows.to(device), from_windows.to(device), mask)
