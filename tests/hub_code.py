"""`birefnet.py` texts shaped like the hub repositories' single-file model code, for the patch
order's detection. Only the lines that tell the order are real in shape (the decoder's calls);
the rest is filler of the same kind. Each raises on import: the daemon reads it, never runs it.
"""

from __future__ import annotations

_HEADER = '''raise RuntimeError("the hub's model code must never be imported by the daemon")

import torch
import torch.nn as nn
import torch.nn.functional as F
'''

EINOPS_CODE = _HEADER + '''from einops import rearrange


def image2patches(image, grid_h=2, grid_w=2, patch_ref=None, transformation='b c (hg h) (wg w) -> (b hg wg) c h w'):
    if patch_ref is not None:
        grid_h, grid_w = image.shape[-2] // patch_ref.shape[-2], image.shape[-1] // patch_ref.shape[-1]
    return rearrange(image, transformation, hg=grid_h, wg=grid_w)


class Decoder(nn.Module):
    def forward(self, features):
        x, x1, x2, x3, x4 = features
        if self.config.dec_ipt:
            patches_batch = image2patches(
                x, patch_ref=x4,
                transformation='b c (hg h) (wg w) -> b (c hg wg) h w',
            ) if self.split else x
            x4 = torch.cat((x4, self.ipt_blk5(F.interpolate(patches_batch, size=x4.shape[2:], mode='bilinear', align_corners=True))), 1)
        return x4
'''

LEGACY_CODE = _HEADER + '''

class Decoder(nn.Module):
    def get_patches_batch(self, x, p):
        _size_h, _size_w = p.shape[2:]
        patches_batch = []
        for idx in range(x.shape[0]):
            columns_x = torch.split(x[idx], split_size_or_sections=_size_w, dim=-1)
            patches_x = []
            for column_x in columns_x:
                patches_x += [p.unsqueeze(0) for p in torch.split(column_x, split_size_or_sections=_size_h, dim=-2)]
            patches_batch.append(torch.cat(patches_x, dim=1))
        return torch.cat(patches_batch, dim=0)

    def forward(self, features):
        x, x1, x2, x3, x4 = features
        if self.config.dec_ipt:
            patches_batch = self.get_patches_batch(x, x4) if self.split else x
            x4 = torch.cat((x4, self.ipt_blk5(F.interpolate(patches_batch, size=x4.shape[2:], mode='bilinear', align_corners=True))), 1)
        return x4
'''

UNKNOWN_CODE = _HEADER + '''from einops import rearrange


class Decoder(nn.Module):
    def forward(self, features):
        x, x1, x2, x3, x4 = features
        # A future layout: patches taken another way (batch-major, as the reference's default).
        patches_batch = rearrange(x, 'b c (hg h) (wg w) -> (b hg wg) c h w', hg=2, wg=2)
        return torch.cat((x4, self.ipt_blk5(patches_batch)), 1)
'''
