"""The seed's background-removal pipeline, usable alone.

    from daemon.pipeline import process_image, load_model, parse_model_spec, choose_device

It knows nothing of the queue, the watcher or the settings.
"""

from daemon.pipeline.constants import PipelineParams
from daemon.pipeline.inference import MatteModel, TorchMatteModel
from daemon.pipeline.model import (
    DEFAULT_MODEL,
    LoadedModel,
    ModelSpec,
    choose_device,
    export_torchscript,
    load_model,
    parse_model_spec,
)
from daemon.pipeline.source import ImageOptions
from daemon.pipeline.pipeline import Cutout, Prepared, ProcessResult, StageTimer, finish, prepare, process_image

__all__ = [
    "DEFAULT_MODEL",
    "Cutout",
    "ImageOptions",
    "LoadedModel",
    "MatteModel",
    "ModelSpec",
    "PipelineParams",
    "Prepared",
    "ProcessResult",
    "StageTimer",
    "TorchMatteModel",
    "choose_device",
    "export_torchscript",
    "finish",
    "load_model",
    "parse_model_spec",
    "prepare",
    "process_image",
]
