"""Every PyTorch operator the built-in BiRefNet's forward pass dispatches: the list the Apple GPU
path is checked against.

On Apple silicon an operator without an MPS kernel either fails or, with
PYTORCH_ENABLE_MPS_FALLBACK, runs on the CPU: a copy to the CPU and back for each call, which is
slow, and which an unattended Mac mini would never show. So the operators the model uses are
listed here, and tests/test_device_ops.py checks two things on any machine: that a forward
pass dispatches exactly these (the list is current), and that each has an MPS kernel in the
installed torch's own operator table (`native_functions.yaml`), directly, through the
operator it delegates to, or as a composite of other operators.

The other half of a lean GPU path is one input shape: the pipeline pads every image to one
square (`pipeline.target_size`), so the model never sees a new shape at run time and the MPS
allocator never has to make room for one (the test checks that too).
"""

from __future__ import annotations

MODEL_OPS: frozenset[str] = frozenset({
    "aten::_to_copy",
    "aten::_unsafe_view",
    "aten::adaptive_avg_pool2d",
    "aten::add.Tensor",
    "aten::add_.Tensor",
    "aten::addcmul",
    "aten::alias",
    "aten::arange",
    "aten::batch_norm",
    "aten::cat",
    "aten::clone",
    "aten::contiguous",
    "aten::conv2d",
    "aten::detach_",
    "aten::expand",
    "aten::flatten.using_ints",
    "aten::flip",
    "aten::ge.Scalar",
    "aten::gelu",
    "aten::grid_sampler",
    "aten::index.Tensor",
    "aten::index_select",
    "aten::layer_norm",
    "aten::lift_fresh",
    "aten::linear",
    "aten::masked_fill.Scalar",
    "aten::matmul",
    "aten::mul.Tensor",
    "aten::mul_.Tensor",
    "aten::ne.Tensor",
    "aten::pad",
    "aten::permute",
    "aten::relu",
    "aten::relu_",
    "aten::reshape",
    "aten::roll",
    "aten::scaled_dot_product_attention",
    "aten::select.int",
    "aten::sigmoid",
    "aten::slice.Tensor",
    "aten::sort",
    "aten::stack",
    "aten::sub.Tensor",
    "aten::t",
    "aten::to.dtype",
    "aten::transpose.int",
    "aten::unbind.int",
    "aten::unsqueeze",
    "aten::upsample_bilinear2d.vec",
    "aten::view",
    "aten::zeros",
})
"""As a forward pass dispatches them, before their decomposition (Swin-T and Swin-L alike);
tests/test_device_ops.py says which differ when the model changes."""
