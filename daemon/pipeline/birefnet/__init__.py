"""BiRefNet implemented in the package: the released checkpoints' architecture (Swin-L and
Swin-T backbones), loadable from the hub's `model.safetensors` with `strict=True`, needing
neither remote code nor timm, kornia, einops or torchvision.

The paper: P. Zheng, D. Gao, D.-P. Fan, L. Liu, J. Laaksonen, W. Ouyang, N. Sebe, "Bilateral
Reference for High-Resolution Dichotomous Image Segmentation", CAAI Artificial Intelligence
Research, 2024 (arXiv:2401.03407). Its names for the parts, and where they are here:

    localization module (LM)      the Swin encoder on the image and its half-size copy, the
                                  maps widened with each other ("context") and squeezed
                                  (`network.BiRefNet.encode`, `squeeze_module`)
    reconstruction module (RM)    the decoder, level by level (`decoder.Decoder`), each level a
                                  BiRef block of deformable ASPP (`aspp`, `deform`)
    inward reference (InRef)      the image itself, cut into patches and stacked on channels,
                                  fed to every level (`ipt_blk*`, `decoder.PATCH_STACKERS`)
    outward reference (OutRef)    gradient supervision in training; at inference its gradient
                                  attention (`gdt_convs_*`, `gdt_convs_attn_*`) gates each level

Attribute names are the checkpoint's, so that its keys load as they are.

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
