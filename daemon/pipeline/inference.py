"""Stage 4: the forward pass, the primary output tensor, and the sigmoid matte.

`TorchMatteModel` is a torch module behind the `MatteModel` Protocol (`matte.py`), the
only shape in which the rest of the program sees a model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from daemon.errors import DeviceError, ModelError
from daemon.pipeline.matte import FloatArray

PREFERRED_OUTPUT_KEYS = ("logits", "preds", "pred", "pred_masks", "masks", "mask", "alpha", "out", "output")
"""Keys (or attributes) that name the primary tensor of a dict / ModelOutput, in order."""

# Substrings of RuntimeError messages that mean the device, not the input, failed.
_DEVICE_FAILURES = ("out of memory", "mps backend", "cuda error", "cublas", "cudnn", "device-side")


def _tensors(value: object) -> Iterator[torch.Tensor]:
    """Every tensor in a (nested) tuple/list/dict, in order."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        for item in value:
            yield from _tensors(item)


def _preferred(output: object) -> torch.Tensor | None:
    """The tensor under a preferred key or attribute (`.logits` first), if any."""
    for key in PREFERRED_OUTPUT_KEYS:
        found = output.get(key) if isinstance(output, Mapping) else getattr(output, key, None)
        if isinstance(found, torch.Tensor):
            return found
    return None


def extract_primary_tensor(output: object) -> torch.Tensor:
    """The seed's rule: a tensor as is; `.logits`/common keys; else the last tensor."""
    if isinstance(output, torch.Tensor):
        return output
    preferred = _preferred(output)
    if preferred is not None:
        return preferred
    found = list(_tensors(output))
    if not found:
        raise ModelError(f"model returned no tensor (got {type(output).__name__})")
    return found[-1]


def to_square_logits(logits: torch.Tensor, *, size: int) -> torch.Tensor:
    """A single-channel (size, size) map: squeeze batch/channel, resize if needed."""
    if logits.ndim < 2 or logits[..., 0, 0].numel() != 1:
        raise ModelError(f"model output has shape {tuple(logits.shape)}, expected one channel")
    plane = logits.reshape(1, 1, *logits.shape[-2:]).float()
    if plane.shape[-2:] != (size, size):
        plane = torch.nn.functional.interpolate(plane, size=(size, size), mode="bilinear", align_corners=False)
    return plane[0, 0]


class TorchMatteModel:
    """A loaded torch module on its device, behind the `MatteModel` Protocol."""

    def __init__(
        self, module: torch.nn.Module, *, device: torch.device, size: int, dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        self.module = module
        self.device = device
        self.size = size
        self.dtype = dtype
        """The module's parameters' type: the input is cast to it; the matte is float32 whatever it is."""
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def replaced(self, module: torch.nn.Module, *, dtype: torch.dtype | None = None) -> TorchMatteModel:
        """The same model settings around another module (converted, compiled), at `dtype` if given."""
        return TorchMatteModel(module, device=self.device, size=self.size, dtype=dtype or self.dtype,
                               channels_last=self.memory_format == torch.channels_last)

    def predict(self, batch: FloatArray) -> FloatArray:
        """Forward, extract, force (S, S), sigmoid; one transfer of the final matte."""
        if batch.shape != (1, 3, self.size, self.size):
            raise ModelError(f"input batch has shape {batch.shape}, expected (1, 3, {self.size}, {self.size})")
        try:
            with torch.inference_mode():
                tensor = torch.from_numpy(batch).to(self.device, dtype=self.dtype)
                output = self.module(tensor.contiguous(memory_format=self.memory_format))
                matte = torch.sigmoid(to_square_logits(extract_primary_tensor(output), size=self.size))
                result: FloatArray = matte.cpu().numpy().astype(np.float32, copy=False)
        except RuntimeError as exc:
            raise _classify(exc) from exc
        return result


def _classify(exc: RuntimeError) -> ModelError | DeviceError:
    """A device failure is retried later; anything else the model raised is permanent."""
    text = str(exc).lower()
    if any(marker in text for marker in _DEVICE_FAILURES):
        return DeviceError(f"device failed during inference: {exc}")
    return ModelError(f"model failed on this image: {exc}")
