"""The seed's background-removal pipeline, usable alone.

    from daemon.pipeline import process_image, load_model, parse_model_spec, choose_device

It knows nothing of the queue, the watcher or the settings, and imports nothing from
`daemon` but `daemon.errors`, the one exception tree whose reason codes its verdicts are.

The names below load their module on first use (PEP 562): `import daemon.pipeline.formats`
from the watcher, or `ModelSpec` from the settings, must not import torch and OpenCV,
which take a second and more; only code that runs the model pays for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.pipeline.constants import ImageOptions as ImageOptions, PipelineParams as PipelineParams
    from daemon.pipeline.inference import TorchMatteModel as TorchMatteModel
    from daemon.pipeline.matte import MatteModel as MatteModel
    from daemon.pipeline.model import LoadedModel as LoadedModel, choose_device as choose_device, export_torchscript as export_torchscript, load_model as load_model
    from daemon.pipeline.modelspec import DEFAULT_MODEL as DEFAULT_MODEL, ModelSpec as ModelSpec, parse_model_spec as parse_model_spec
    from daemon.pipeline.pipeline import Cutout as Cutout, Prepared as Prepared, ProcessResult as ProcessResult, StageTimer as StageTimer, finish as finish, prepare as prepare, process_image as process_image

_HOME = {
    "ImageOptions": "constants", "PipelineParams": "constants",
    "TorchMatteModel": "inference", "MatteModel": "matte",
    "LoadedModel": "model", "choose_device": "model", "export_torchscript": "model", "load_model": "model",
    "DEFAULT_MODEL": "modelspec", "ModelSpec": "modelspec", "parse_model_spec": "modelspec",
    "Cutout": "pipeline", "Prepared": "pipeline", "ProcessResult": "pipeline", "StageTimer": "pipeline",
    "finish": "pipeline", "prepare": "pipeline", "process_image": "pipeline",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
