"""The golden fixtures' weights: a rule that fills every float tensor from its key's name.

`tests/fixtures/birefnet-golden/README.md` states it: a PCG64 generator seeded with the CRC-32
of the key, `mean + std * standard_normal(shape)` drawn in float64 and cast to float32. Keys
marked `"rule": "keep"` (relative position indices, BN batch counters) keep the value the
module computes itself.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

GOLDEN = Path(__file__).parent / "fixtures" / "birefnet-golden"


def reference_keys(backbone: str) -> dict[str, dict[str, Any]]:
    """Every state_dict key of the reference model: shape, dtype, and its fill rule."""
    keys: dict[str, dict[str, Any]] = json.loads((GOLDEN / backbone / "keys.json").read_text(encoding="utf-8"))["keys"]
    return keys


def rule_tensor(key: str, spec: dict[str, Any]) -> torch.Tensor:
    """The rule's value for one float key."""
    rng = np.random.Generator(np.random.PCG64(zlib.crc32(key.encode())))
    values = (spec["mean"] + spec["std"] * rng.standard_normal(tuple(spec["shape"]))).astype(np.float32)
    return torch.from_numpy(values)


def load_rule_weights(model: torch.nn.Module, backbone: str) -> torch.nn.Module:
    """Fill `model` (built on the CPU) with the rule's weights, strictly, and return it."""
    own = model.state_dict()
    state = {key: own[key] if spec.get("rule") == "keep" else rule_tensor(key, spec)
             for key, spec in reference_keys(backbone).items()}
    model.load_state_dict(state, strict=True)
    return model


def golden_input(size: int) -> torch.Tensor:
    """The fixtures' input of size S: PCG64(0) standard normals, (1, 3, S, S), float32."""
    rng = np.random.Generator(np.random.PCG64(0))
    return torch.from_numpy(rng.standard_normal((1, 3, size, size)).astype(np.float32))
