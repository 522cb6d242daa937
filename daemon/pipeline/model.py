"""Device choice, model loading (Hugging Face or TorchScript) and TorchScript export.

The Hugging Face path resolves the hub's remote class itself before `from_pretrained`:
transformers 5 needs an attribute that the hub's BiRefNet class never sets (see
`load_hf_module`).
"""

from __future__ import annotations

import importlib.util
import typing
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict

import torch

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from daemon.pipeline.native import NativeCheckpoint

from daemon.errors import ModelLoadError
from daemon.pipeline.constants import TARGET_SIZE
from daemon.pipeline.inference import TorchMatteModel, extract_primary_tensor
from daemon.pipeline.matte import MatteModel
from daemon.pipeline.installs import birefnet_install_command, matching_torchvision_command
from daemon.pipeline.modelspec import DEVICE_NAMES, ModelSpec

BIREFNET_PACKAGES = ("torchvision", "timm", "kornia", "einops")
"""What the hub's BiRefNet code imports besides torch and transformers."""


# --- Devices -----------------------------------------------------------------
class Accelerators(Protocol):
    """The one seam for hardware this machine may not have (MPS above all)."""

    def mps_available(self) -> bool: ...

    def cuda_available(self) -> bool: ...


class TorchAccelerators:
    """What torch reports about this machine."""

    def mps_available(self) -> bool:
        return bool(torch.backends.mps.is_available())

    def cuda_available(self) -> bool:
        return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    reason: str


def choose_device(requested: str, *, accelerators: Accelerators | None = None) -> DeviceChoice:
    """`auto` = mps, then cuda, then cpu; a named accelerator that is missing fails."""
    probe = accelerators or TorchAccelerators()
    available = {"mps": probe.mps_available(), "cuda": probe.cuda_available(), "cpu": True}
    if requested == "auto":
        name = next(name for name in ("mps", "cuda", "cpu") if available[name])
        return DeviceChoice(torch.device(name), _auto_reason(name))
    if requested not in available:
        raise ModelLoadError(f"unknown device {requested!r}: use one of {', '.join(DEVICE_NAMES)}")
    if not available[requested]:
        raise ModelLoadError(f"device {requested!r} was asked for but is not available here: {_missing_hint(requested)}")
    return DeviceChoice(torch.device(requested), f"{requested} requested")


def _auto_reason(name: str) -> str:
    return {
        "mps": "auto: Apple GPU (MPS) is available",
        "cuda": "auto: no MPS; a CUDA GPU is available",
        "cpu": "auto: no MPS or CUDA GPU found (slow: about a minute per image)",
    }[name]


def _missing_hint(name: str) -> str:
    if name == "mps":
        return "MPS needs Apple Silicon, macOS 12.3+ and a PyTorch build with MPS (torch.backends.mps.is_available() is False)"
    return "no CUDA GPU or no CUDA build of PyTorch (torch.cuda.is_available() is False)"


# --- Loading -----------------------------------------------------------------
@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, and where it came from (for logs and doctor)."""

    model: TorchMatteModel
    spec: ModelSpec
    device: DeviceChoice
    origin: str
    revision: str | None = None
    """The commit a hub model was loaded at (its pin); None for a local model."""
    warning: str | None = None
    """What did not go as configured (a native checkpoint that did not fit), for the log."""
    patch_order: str | None = None
    """The built-in BiRefNet's decoder patch order (`einops` or `legacy`); None for other code."""
    runner: MatteModel | None = None
    """What runs the model when it is not eager PyTorch (`model.backend`: an exported graph)."""
    backend: str = "torch"
    export: Path | None = None
    """The exported graph `runner` runs, for doctor and the log."""

    @property
    def matte_model(self) -> MatteModel:
        """What the daemon runs: the runtime's graph, else the torch module."""
        return self.runner or self.model


def load_model(
    spec: ModelSpec,
    *,
    device: DeviceChoice,
    revision: str | None = None,
    offline: bool = False,
    size: int = TARGET_SIZE,
    checkpoint: NativeCheckpoint | None = None,
) -> LoadedModel:
    """Load once, float32, eval mode, on the chosen device. A native BiRefNet needs its
    `checkpoint` (weights and patch order, from the pinned snapshot)."""
    native, warning = spec.kind == "native", None
    if native:
        module, origin, warning = _native_or_remote(spec, checkpoint=checkpoint, revision=revision, offline=offline)
        native = warning is None
    elif spec.kind == "hf":
        module, origin = load_hf_module(spec.source, revision=revision, offline=offline)
    else:
        module, origin = load_torchscript_module(Path(spec.source)), f"TorchScript file {spec.source}"
    module = _to_device(module, device=device.device, channels_last=native)
    matte = TorchMatteModel(module, device=device.device, size=size, channels_last=native)
    pinned = spec.kind != "torchscript" and not spec.is_local_hf
    patch_order = checkpoint.patch_order.order if native and checkpoint is not None else None
    return LoadedModel(matte, spec, device, origin, revision if pinned else None, warning, patch_order)


def _native_or_remote(
    spec: ModelSpec, *, checkpoint: NativeCheckpoint | None, revision: str | None, offline: bool
) -> tuple[torch.nn.Module, str, str | None]:
    """The package's BiRefNet; if the checkpoint does not fit it (keys, shapes, or a patch
    order its code does not tell), the hub's own code and a warning that says why (never
    random weights, never a guessed order)."""
    from daemon.pipeline.native import CheckpointMismatch, load_native

    if checkpoint is None:
        raise ModelLoadError(f"{spec} is not fetched yet: run `cutout model fetch` (it pins the weights)")
    try:
        native = load_native(spec.native, checkpoint)
    except CheckpointMismatch as exc:
        module, origin = load_hf_module(spec.source, revision=revision, offline=offline)
        return module, f"{origin}, its own code", f"{exc}; loaded the hub's own code for it instead (trust_remote_code)"
    order = checkpoint.patch_order.order
    return native, f"{spec} (built-in BiRefNet, {order} patch order) from {checkpoint.weights}", None


def _to_device(module: torch.nn.Module, *, device: torch.device, channels_last: bool = False) -> torch.nn.Module:
    """float32 everywhere (MPS fails on float64 attributes), then the device, eval mode; the
    native model's convolutions in channels-last layout (faster, same numbers)."""
    try:
        moved = module.float().to(device)
        if channels_last:
            moved = moved.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return moved.eval()
    except RuntimeError as exc:
        raise ModelLoadError(f"could not move the model to {device}: {exc}") from exc


def load_torchscript_module(path: Path) -> torch.nn.Module:
    """A `torch.jit.save` archive, loaded on the CPU first; anything else is refused clearly."""
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist (expected a TorchScript file, or hf:<repo>)")
    try:
        return _jit_load(path)
    except RuntimeError as exc:
        raise ModelLoadError(_not_torchscript_message(path, exc)) from exc


def _jit_load(path: Path) -> torch.nn.Module:
    """torch.jit.load; a BiRefNet export needs `import torchvision` to register deform_conv2d."""
    try:
        return _jit_load_once(path)
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        _import_torchvision(exc)
        return _jit_load_once(path)


def _jit_load_once(path: Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript; it is still the seed's file format, and
        # a warning per load would only fill the daemon's log.
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    return typing.cast(torch.nn.Module, module)


def _import_torchvision(cause: Exception) -> None:
    try:
        import torchvision  # noqa: F401  (registers torchvision::deform_conv2d)
    except Exception as exc:
        raise ModelLoadError(
            "this TorchScript file uses torchvision operators (deform_conv2d) but torchvision cannot be "
            f"imported ({exc}); {torchvision_hint()}"
        ) from cause


def torchvision_hint() -> str:
    """What to run when torchvision is missing, or installed for another torch."""
    if importlib.util.find_spec("torchvision") is None:
        return f"install it: {birefnet_install_command(torch.__version__)}"
    return (
        f"the installed torchvision does not fit torch {torch.__version__} (it was built for another release "
        f"or build); install the one made for it: {matching_torchvision_command(torch.__version__)}"
    )


def _not_torchscript_message(path: Path, exc: RuntimeError) -> str:
    if _is_state_dict(path):
        return (
            f"{path} holds plain weights (a state_dict), not a TorchScript model; expected a file written by "
            "torch.jit.save, e.g. `cutout model export --out FILE`"
        )
    return f"{path} is not a TorchScript model (expected a file written by torch.jit.save): {exc}"


def _is_state_dict(path: Path) -> bool:
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # any failure just means "not a readable state_dict"
        return False
    return isinstance(loaded, dict)


def load_hf_module(source: str, *, revision: str | None, offline: bool) -> tuple[torch.nn.Module, str]:
    """The seed's `AutoModelForImageSegmentation.from_pretrained`, made to work on transformers 4 and 5."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a progress bar per load would only clutter the daemon's log
    try:
        config = AutoConfig.from_pretrained(
            source, revision=revision, local_files_only=offline, trust_remote_code=True
        )
        model_class = _prepare_remote_class(config, source, revision=revision, offline=offline)
        module = _from_pretrained(source, config=config, model_class=model_class, revision=revision, offline=offline)
    except ImportError as exc:
        raise ModelLoadError(_missing_packages_message(source, exc)) from exc
    except (OSError, ValueError, RuntimeError, AttributeError, KeyError) as exc:
        raise ModelLoadError(_load_failure_message(source, exc)) from exc
    return module, _hf_origin(source, revision)


def _load_failure_message(source: str, exc: Exception) -> str:
    message = f"could not load Hugging Face model {source!r}: {exc}"
    # "operator torchvision::nms does not exist": the remote code imported a torchvision built for another torch.
    return f"{message}; {torchvision_hint()}" if "torchvision::" in str(exc) else message


def _from_pretrained(
    source: str, *, config: PretrainedConfig, model_class: type | None, revision: str | None, offline: bool
) -> torch.nn.Module:
    """`from_pretrained` with the seed's arguments; see `_load_weights_directly` for the fallback."""
    from transformers import AutoModelForImageSegmentation

    try:
        module = AutoModelForImageSegmentation.from_pretrained(
            source, config=config, revision=revision, local_files_only=offline, trust_remote_code=True,
            **_seed_kwargs(),
        )
    except AttributeError as exc:
        if model_class is None or "'Config' object" not in str(exc):
            raise
        module = _load_weights_directly(source, model_class=model_class, config=config, revision=revision, offline=offline)
    return typing.cast(torch.nn.Module, module)


def _load_weights_directly(
    source: str, *, model_class: type, config: PretrainedConfig, revision: str | None, offline: bool
) -> torch.nn.Module:
    """Build the class and load `model.safetensors` ourselves, strictly.

    The hub's BiRefNet replaces `self.config` with a plain `Config()` object in
    `__init__`; transformers 5 then fails inside `from_pretrained` ("'Config'
    object has no attribute 'model_type'"). Every weight must still match.
    """
    from safetensors.torch import load_file
    from transformers.utils.hub import cached_file

    weights = cached_file(source, "model.safetensors", revision=revision, local_files_only=offline)
    if weights is None:
        raise OSError(f"{source} has no model.safetensors")
    module = typing.cast(torch.nn.Module, model_class(config))
    module.load_state_dict(load_file(weights), strict=True)
    return module


class SeedLoadArguments(TypedDict, total=False):
    """The seed's `from_pretrained` keywords, typed: they differ between transformers 4 and 5."""

    low_cpu_mem_usage: bool
    device_map: None
    _fast_init: bool
    torch_dtype: torch.dtype
    dtype: torch.dtype


def _seed_kwargs() -> SeedLoadArguments:
    """The seed's loading arguments: float32, no meta-device shortcuts, no device map.

    `_fast_init` only where transformers still uses it (< 5; 5.x drops it silently),
    and the dtype under the name the installed release expects (5.x defaults to
    "auto", which would load a half-precision checkpoint as half precision).
    """
    import transformers

    kwargs = SeedLoadArguments(low_cpu_mem_usage=False, device_map=None)
    if int(transformers.__version__.split(".")[0]) < 5:
        kwargs["_fast_init"], kwargs["torch_dtype"] = False, torch.float32
    else:
        kwargs["dtype"] = torch.float32
    return kwargs


def _prepare_remote_class(config: PretrainedConfig, source: str, *, revision: str | None, offline: bool) -> type | None:
    """Resolve the remote model class and give it what transformers 5 expects of it.

    The hub's BiRefNet never calls `post_init()`, which on transformers 5 sets
    `all_tied_weights_keys`; without it loading fails. transformers caches the
    dynamic module, so `from_pretrained` then gets this same, patched class.
    """
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    auto_map = getattr(config, "auto_map", None) or {}
    reference = auto_map.get("AutoModelForImageSegmentation")
    if reference is None:
        return None
    model_class: type = get_class_from_dynamic_module(reference, source, revision=revision, local_files_only=offline)
    if not hasattr(model_class, "all_tied_weights_keys"):
        setattr(model_class, "all_tied_weights_keys", {})
    return model_class


def _missing_packages_message(source: str, exc: ImportError) -> str:
    missing = [name for name in BIREFNET_PACKAGES if importlib.util.find_spec(name) is None]
    needed = ", ".join(missing) if missing else str(exc)
    return (
        f"the code of model {source!r} needs packages that are missing or broken ({needed}): "
        f"install them with: {birefnet_install_command(torch.__version__)} ({exc})"
    )


def _hf_origin(source: str, revision: str | None) -> str:
    if Path(source).is_dir():
        return f"local Hugging Face folder {source}"
    return f"Hugging Face {source} @ {revision or 'default branch'}"


# --- Export ----------------------------------------------------------------------
class LogitsOnly(torch.nn.Module):
    """Wraps a model so the traced graph returns the single primary logits tensor."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return extract_primary_tensor(self.inner(batch))


@contextmanager
def _scriptable_class_names(module: torch.nn.Module) -> Iterator[None]:
    """Give every submodule class a module path TorchScript can parse back, for the trace.

    transformers imports remote code as `transformers_modules.<repo>.<commit hash>.x`;
    a hash that starts with a digit is not an identifier, and the saved archive
    then fails to load ("expected newline but found 'number'").
    """
    originals = {type(sub): type(sub).__module__ for sub in module.modules()}
    try:
        for cls, name in originals.items():
            cls.__module__ = ".".join(p if p.isidentifier() else f"_{p.replace('-', '_')}" for p in name.split("."))
        yield
    finally:
        for cls, name in originals.items():
            cls.__module__ = name


def export_torchscript(module: torch.nn.Module, *, out: Path, input_res: int = TARGET_SIZE) -> Path:
    """Trace on the CPU at exactly `input_res` (the graph bakes the size in) and save."""
    wrapper = LogitsOnly(module.float().cpu().eval()).eval()
    example = torch.zeros(1, 3, input_res, input_res, dtype=torch.float32)
    with torch.no_grad(), _scriptable_class_names(wrapper), warnings.catch_warnings():
        # Tracing warns that shape checks are baked in (they are: we trace at the
        # pipeline's size) and that jit.trace is deprecated; neither is actionable here.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, example, check_trace=False)  # type: ignore[no-untyped-call]
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(traced, str(out))
    return out
