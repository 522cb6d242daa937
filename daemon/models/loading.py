"""The configured model, opened: settings and the model store in, a loaded model out.

Every command that runs the model (`watch`, `process`, `model export`, `doctor`) opens it
here, on the plan of `fetch.plan_load`, so they load the same model, at the same pinned
revision, offline the same way. This module imports torch: only those commands import it.
"""

from __future__ import annotations

import structlog

import dataclasses
import platform

from daemon.errors import ModelLoadError
from daemon.models.backends import EXPORTS_DIR, with_backend
from daemon.models.fetch import Downloader, LoadPlan, ModelStore, complete_pin, fetch_model, patch_order_for, plan_load
from daemon.pipeline.model import DeviceChoice, LoadedModel, choose_device, load_model
from daemon.pipeline.modelspec import GPU_PRECISIONS, WEIGHTS_FILE
from daemon.pipeline.native import NativeCheckpoint
from daemon.pipeline.precision import compiled, probe_batch, with_precision
from daemon.pipeline.runtimes import Backend, resolve_backend
from daemon.settings import ModelSettings, Settings

log = structlog.get_logger("cutout.model")


def load_planned(plan: LoadPlan, *, device: DeviceChoice, size: int, store: ModelStore | None = None) -> LoadedModel:
    checkpoint = _native_checkpoint(plan, store=store)
    loaded = load_model(plan.spec, device=device, revision=plan.revision, offline=plan.offline, size=size,
                        checkpoint=checkpoint)
    if loaded.warning:
        log.warning("model_fallback", model=str(plan.spec), problem=loaded.warning)
    return loaded


def _native_checkpoint(plan: LoadPlan, *, store: ModelStore | None) -> NativeCheckpoint | None:
    """A family BiRefNet's weights file in its pinned snapshot and its patch order (None: not
    fetched; load_model says so)."""
    if plan.spec.kind != "native" or plan.pin is None or store is None:
        return None
    path = store.snapshot(plan.pin) / WEIGHTS_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{plan.spec.source} @ {plan.pin.short} has no {WEIGHTS_FILE} in {path.parent}: run `cutout model fetch` "
            f"again, or use hf:{plan.spec.source} (its own code)"
        )
    return NativeCheckpoint(weights=path, patch_order=patch_order_for(plan.pin, store=store))


def tuned(loaded: LoadedModel, *, model: ModelSettings) -> LoadedModel:
    """`model.precision` (float16, bfloat16) and `model.compile` applied, each checked on a probe
    image against float32. int8 is the runtime's (`with_backend`): the eager model stays float32."""
    if model.precision not in GPU_PRECISIONS and not model.compile:
        return loaded
    if model.precision in GPU_PRECISIONS and loaded.device.device.type == "cpu":
        raise ModelLoadError(
            f"model.precision: {model.precision} needs a GPU (CUDA or Apple MPS), and this model runs on the CPU "
            f"({loaded.device.reason}): use float32"
        )
    reference = loaded.model.predict(probe_batch(loaded.model.size))
    faster = with_precision(loaded.model, precision=model.precision, reference=reference)
    if model.compile:
        faster, outcome = compiled(faster, reference=reference)
        log.info("model_compile", outcome=outcome)
    return dataclasses.replace(loaded, model=faster)


def open_model(
    settings: Settings, *, store: ModelStore, downloader: Downloader, device: str | None = None, progress: bool = False
) -> LoadedModel:
    """Load the configured model; a hub model on its pinned revision, offline (fetched first if never pinned)."""
    plan = plan_load(settings.model, store=store)
    if plan.needs_fetch:
        # First use of a hub model: download and pin it now, exactly as `cutout model fetch`
        # would; every later start then loads that commit offline.
        model = settings.model
        pin = fetch_model(model.spec, revision=model.revision, store=store, downloader=downloader, progress=progress)
        log.info("model_pinned", model=str(model.spec), revision=pin.revision, pin_file=str(store.pin_file))
        plan = plan_load(model, store=store)
    elif plan.pin is not None and plan.spec.kind == "native" and plan.pin.patch_order is None:
        # Pinned by a version that did not record the patch order: record it now, from the
        # snapshot's code (or, network allowed, that file downloaded at the same commit).
        downloads = None if settings.model.offline else downloader
        plan = dataclasses.replace(plan, pin=complete_pin(plan.pin, store=store, downloader=downloads))
    chosen, backend, why = device_and_backend(settings.model, device=device)
    if settings.model.backend == "auto":
        log.info("model_backend_chosen", backend=backend, why=why)
    loaded = load_planned(plan, device=chosen, size=settings.pipeline.target_size, store=store)
    return with_backend(tuned(loaded, model=settings.model), backend=backend,
                        exports=store.pin_file.parent / EXPORTS_DIR, int8=settings.model.precision == "int8")


def device_and_backend(
    model: ModelSettings, *, device: str | None = None, machine: str | None = None
) -> tuple[DeviceChoice, Backend, str]:
    """Where the model loads, what runs it, and why. A runtime runs the graph on the CPU: the
    module it is exported from, and checked against, is there too. `auto` is decided once the
    device is (`machine`: platform.machine(), for tests)."""
    runtime = model.backend in ("onnxruntime", "openvino")
    chosen = choose_device("cpu" if runtime else device or model.device)
    backend, why = resolve_backend(model.backend, device=chosen.device.type, machine=machine or platform.machine(),
                                   tuned=model.precision in GPU_PRECISIONS or model.compile)
    return chosen, backend, why
