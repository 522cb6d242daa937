"""BiRefNet implemented in the package: the released checkpoints' architecture (Swin-L and
Swin-T backbones), loadable from the hub's `model.safetensors` with `strict=True`, needing
neither remote code nor timm, kornia, einops or torchvision.

    model = build_birefnet("swin_v1_l", patch_order="einops", device="meta")
    differences = key_differences(model, checkpoint)      # before loading: say what differs
    model.load_state_dict(checkpoint, strict=True, assign=True)
    logits = model(batch)                                  # (B, 1, S, S), S a multiple of 32

Modules: `network` (the whole model), `swin` and `windows` (the encoder), `decoder` and
`aspp` (the decoder, with both image-patch orders), `deform` (deformable convolution), `checkpoint` (key comparison).
"""

from __future__ import annotations

from daemon.pipeline.birefnet.checkpoint import KeyDifferences, key_differences
from daemon.pipeline.birefnet.decoder import Predictions
from daemon.pipeline.birefnet.network import Backbone, BiRefNet, build_birefnet

__all__ = ["Backbone", "BiRefNet", "KeyDifferences", "Predictions", "build_birefnet", "key_differences"]
