"""Tiny, fast stand-ins for the real models, built on disk by the tests.

The real BiRefNet (220 M parameters, ~80 s per CPU forward) can never run in CI,
so the tests load these instead through the very same code paths:

* a TorchScript file (``torch.jit.save``), for the ``torchscript`` backend;
* a plain ``state_dict`` file, which is *not* TorchScript, for error tests;
* a local Hugging Face directory that imitates the hub layout of
  ``ZhengPeng7/BiRefNet`` (``auto_map`` remote code, a ``PreTrainedModel`` that
  never calls ``post_init()`` and returns a list), for the ``transformers`` backend.

Every model computes the same, easily predicted mask: a pixel is foreground
(``sigmoid(logit) > 0.5``) exactly where the original image is bright, i.e.
where the mean of its RGB values / 255 is above ``THRESHOLD``. Mid-grey padding
(127) is therefore background, and a test can assert exact masks.
"""

import json
import warnings
from pathlib import Path
from typing import Final

import torch
from safetensors.torch import save_file
from torch import nn

from daemon.testing import BRIGHTNESS_THRESHOLD, LOGIT_SCALE

#: ImageNet statistics: the input of every model is ``(x / 255 - MEAN) / STD``.
IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)

#: Brightness (mean of RGB / 255) above which a pixel is foreground.
THRESHOLD: Final[float] = BRIGHTNESS_THRESHOLD
#: Logit gain: a clear margin, so sigmoid(logit) is near 0 or 1 away from the edge.
SCALE: Final[float] = LOGIT_SCALE

#: Padding value that the models must classify as background (127 / 255 < 0.6).
GREY_PAD: Final[int] = 127

RETURN_KINDS: Final[tuple[str, ...]] = ("tensor", "tuple", "dict")

# Hub file names of ZhengPeng7/BiRefNet, copied so the fixture takes the same paths.
HF_CONFIG_MODULE: Final[str] = "BiRefNet_config"
HF_CONFIG_CLASS: Final[str] = "BiRefNetConfig"
HF_MODEL_MODULE: Final[str] = "birefnet"
HF_MODEL_CLASS: Final[str] = "BiRefNet"
HF_MODEL_TYPE: Final[str] = (
    "SegformerForSemanticSegmentation"  # what the hub class declares
)


class BrightPixelNet(nn.Module):
    """Logits ``SCALE * (brightness - THRESHOLD)`` of a normalised image.

    ``threshold`` is a float64 buffer on purpose: until the loader casts the
    module with ``.float()`` the output is float64, so a test can prove the cast
    happened. ``scale`` is a real parameter so the module has one.
    """

    # Declared so mypy (and TorchScript) know the buffers are tensors.
    mean: torch.Tensor
    std: torch.Tensor
    threshold: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.register_buffer(
            "threshold", torch.full((1, 1, 1, 1), THRESHOLD, dtype=torch.float64)
        )
        self.scale = nn.Parameter(torch.tensor([SCALE]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation, average the channels, centre on the threshold."""
        image = x * self.std + self.mean
        brightness = image.mean(dim=1, keepdim=True)
        return self.scale * (brightness - self.threshold)


class _TupleOutput(nn.Module):
    """Returns ``(aux, logits)``: a loader taking the *last* tensor gets the logits."""

    def __init__(self, net: BrightPixelNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All-zero aux first, so picking the wrong element gives a 0.5 mask."""
        logits = self.net(x)
        return torch.zeros_like(logits), logits


class _DictOutput(nn.Module):
    """Returns ``{"aux": zeros, "logits": logits}``, like some exported heads."""

    def __init__(self, net: BrightPixelNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All-zero aux first in insertion order, so a test sees which was picked."""
        logits = self.net(x)
        return {"aux": torch.zeros_like(logits), "logits": logits}


def _wrap(return_kind: str) -> nn.Module:
    """The module whose ``forward`` returns the requested kind of output."""
    net = BrightPixelNet()
    if return_kind == "tensor":
        return net
    if return_kind == "tuple":
        return _TupleOutput(net)
    if return_kind == "dict":
        return _DictOutput(net)
    raise ValueError(f"return_kind must be one of {RETURN_KINDS}, got {return_kind!r}")


def build_torchscript_model(path: Path, *, return_kind: str = "tensor") -> Path:
    """Script a ``BrightPixelNet`` and ``torch.jit.save`` it to ``path``.

    Scripted (not traced) so the file accepts any input size, like a real
    export at a fixed size would not: tests can then use small images. torch
    2.13 deprecates ``torch.jit.script``/``save``/``load`` with a
    DeprecationWarning; it is silenced here because tests run with ``-W error``
    (the loader under test must silence ``torch.jit.load`` itself).
    """
    module = _wrap(return_kind).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(module)
        torch.jit.save(scripted, str(path))
    return path


def build_state_dict_file(path: Path) -> Path:
    """Save a plain ``state_dict`` pickle: a ``.pt`` file that is *not* TorchScript.

    Lets tests check that the TorchScript loader rejects it with a clear message.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(BrightPixelNet().state_dict(), path)
    return path


# --- Hugging Face remote-code directory --------------------------------------

_HF_CONFIG_SOURCE: Final[str] = """\
from transformers import PretrainedConfig


class BiRefNetConfig(PretrainedConfig):
    model_type = "SegformerForSemanticSegmentation"

    def __init__(self, bb_pretrained=False, **kwargs):
        self.bb_pretrained = bb_pretrained
        super().__init__(**kwargs)
"""

# Imitates the hub's birefnet.py: relative import of the config module, a config
# default evaluated at class creation, no post_init(), and a list output
# ([logits] in eval, [[logits], [None]] in train). Hub copies of birefnet.py have
# also replaced self.config with a plain object; that line is added only on
# request (see build_hf_model_dir): transformers 5.24's from_pretrained fails on it.
_HF_MODEL_SOURCE: Final[str] = '''\
import torch
from torch import nn
from transformers import PreTrainedModel

from .BiRefNet_config import BiRefNetConfig

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class Config:
    """Plain settings object; the hub model also overwrites self.config with one."""

    def __init__(self):
        self.size = (1024, 1024)
        self.out_ref = True


class BiRefNet(PreTrainedModel):
    config_class = BiRefNetConfig

    def __init__(self, bb_pretrained=True, config=BiRefNetConfig()):
        super(BiRefNet, self).__init__(config)
        bb_pretrained = config.bb_pretrained
        # REPLACE_CONFIG
        # Deliberately wrong: the real values come only from model.safetensors.
        self.threshold = nn.Parameter(torch.zeros(1))
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        brightness = (x * std + mean).mean(dim=1, keepdim=True)
        logits = self.scale * (brightness - self.threshold)
        return [logits] if not self.training else [[logits], [None]]
'''


def _hf_config_json() -> dict[str, object]:
    """The hub's ``config.json`` keys, plus ``model_type`` so AutoConfig can route it."""
    return {
        "_name_or_path": "ZhengPeng7/BiRefNet",
        "architectures": [HF_MODEL_CLASS],
        "auto_map": {
            "AutoConfig": f"{HF_CONFIG_MODULE}.{HF_CONFIG_CLASS}",
            "AutoModelForImageSegmentation": f"{HF_MODEL_MODULE}.{HF_MODEL_CLASS}",
        },
        "bb_pretrained": False,
        "custom_pipelines": {
            "image-segmentation": {
                "pt": ["AutoModelForImageSegmentation"],
                "tf": [],
                "type": "image",
            }
        },
        "model_type": HF_MODEL_TYPE,
        "torch_dtype": "float32",
    }


def build_hf_model_dir(path: Path, *, replace_config: bool = False) -> Path:
    """Write a local directory laid out like the hub repo ``ZhengPeng7/BiRefNet``.

    ``model.safetensors`` holds the only correct ``threshold``/``scale`` values
    (the class initialises them to 0, which yields an all-0.5 mask), so a test
    that gets the bright-pixel mask proves the weights were really loaded.

    ``replace_config=True`` adds the hub's ``self.config = Config()`` line (a
    plain object instead of the ``PretrainedConfig``), which breaks
    ``from_pretrained`` in transformers 5.24 ("'Config' object has no attribute
    'model_type'"); a loader that must survive the hub code is tested with it.

    Use a different directory *name* for each variant loaded in one process:
    transformers caches remote modules by directory name plus source hash, and
    its Auto registry maps the (shared) config class to the first model class.
    """
    marker = "# REPLACE_CONFIG"
    source = _HF_MODEL_SOURCE.replace(
        marker,
        "self.config = Config()"
        if replace_config
        else "pass  # hub: self.config = Config()",
    )
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(_hf_config_json(), indent=2) + "\n")
    (path / f"{HF_CONFIG_MODULE}.py").write_text(_HF_CONFIG_SOURCE)
    (path / f"{HF_MODEL_MODULE}.py").write_text(source)
    weights = {
        "threshold": torch.tensor([THRESHOLD], dtype=torch.float32),
        "scale": torch.tensor([SCALE], dtype=torch.float32),
    }
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def normalise(image_uint8: torch.Tensor) -> torch.Tensor:
    """``(H, W, 3)`` uint8 image -> ``(1, 3, H, W)`` float32 ImageNet-normalised input.

    The ImageNet transform all these models expect, so tests can feed them directly.
    """
    x = image_uint8.permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def expected_foreground(image_uint8: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` bool mask every tiny model must produce for ``image_uint8``."""
    brightness = image_uint8.to(torch.float64).mean(dim=2) / 255.0
    return brightness > THRESHOLD


# --- A model that kills its process ---------------------------------------------

#: An image whose top-left corner is this colour makes the poison model SIGKILL its process.
POISON_RGB: Final[tuple[int, int, int]] = (255, 0, 255)

_POISON_CHECK: Final[str] = """\
    def forward(self, x):
        # Magenta top-left corner (normalised R > 2.2, G < -2.0): a real segfault, reading address 0.
        if bool((x[0, 0, :8, :8] > 2.2).all()) and bool((x[0, 1, :8, :8] < -2.0).all()):
            import ctypes

            ctypes.string_at(0)
"""


def build_poison_hf_model_dir(path: Path) -> Path:
    """The bright-pixel HF model, except that a `POISON_RGB` corner segfaults the process.

    Stands in for an input that crashes the worker (a segfault in a decoder or
    the GPU driver), so crash-loop protection is tested for real.
    """
    build_hf_model_dir(path)
    modeling = path / f"{HF_MODEL_MODULE}.py"
    source = modeling.read_text()
    modeling.write_text(source.replace("    def forward(self, x):\n", _POISON_CHECK, 1))
    return path


def build_slow_hf_model_dir(path: Path, *, seconds: float) -> Path:
    """The bright-pixel HF model, taking `seconds` per forward: a CPU-bound BiRefNet stand-in
    for shutdown tests (a signal must not wait for the forward to end)."""
    build_hf_model_dir(path)
    modeling = path / f"{HF_MODEL_MODULE}.py"
    slow = f"    def forward(self, x):\n        import time\n\n        time.sleep({seconds})\n"
    modeling.write_text(modeling.read_text().replace("    def forward(self, x):\n", slow, 1))
    return path
