"""The primary output tensor of any model output shape, and the (S, S) sigmoid matte."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.modeling_outputs import SemanticSegmenterOutput

from daemon.errors import ModelError
from daemon.pipeline.inference import TorchMatteModel, extract_primary_tensor, to_square_logits

LOGITS = torch.full((1, 1, 8, 8), 3.0)
AUX = torch.zeros(1, 1, 8, 8)


@pytest.mark.parametrize(
    "output",
    [
        LOGITS,
        (AUX, LOGITS),
        [AUX, LOGITS],
        [[AUX], [LOGITS]],
        {"aux": AUX, "logits": LOGITS},
        {"logits": LOGITS, "aux": AUX},
        {"first": AUX, "second": LOGITS},
        SemanticSegmenterOutput(logits=LOGITS),
    ],
    ids=["tensor", "tuple", "list", "nested", "dict", "dict-logits-first", "dict-last", "model-output"],
)
def test_the_primary_tensor_is_found_in_every_output_shape(output: object) -> None:
    assert extract_primary_tensor(output) is LOGITS


def test_an_output_without_tensors_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="no tensor"):
        extract_primary_tensor({"label": "cat"})


def test_a_smaller_single_channel_map_is_resized_to_the_square() -> None:
    plane = to_square_logits(torch.zeros(1, 1, 272, 272), size=1088)
    assert plane.shape == (1088, 1088)


def test_a_multi_channel_output_is_refused() -> None:
    with pytest.raises(ModelError, match="one channel"):
        to_square_logits(torch.zeros(1, 2, 16, 16), size=16)


class _Doubling(torch.nn.Module):
    def forward(self, batch: torch.Tensor) -> list[torch.Tensor]:
        return [batch[:, :1] * 2.0]


def test_torch_matte_model_returns_a_float32_sigmoid_matte() -> None:
    model = TorchMatteModel(_Doubling(), device=torch.device("cpu"), size=16)
    batch = np.zeros((1, 3, 16, 16), np.float32)
    batch[0, 0, :8] = 5.0
    matte = model.predict(batch)
    assert matte.shape == (16, 16) and matte.dtype == np.float32
    assert matte[0, 0] == pytest.approx(1 / (1 + np.exp(-10.0))) and matte[15, 0] == pytest.approx(0.5)


def test_a_wrong_batch_shape_is_a_model_error() -> None:
    model = TorchMatteModel(_Doubling(), device=torch.device("cpu"), size=16)
    with pytest.raises(ModelError, match="expected"):
        model.predict(np.zeros((1, 3, 8, 8), np.float32))
