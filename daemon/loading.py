"""The configured model, opened: settings and the model store in, a loaded model out.

Every command that runs the model (`watch`, `process`, `model export`, `doctor`) opens it
here, on the plan of `fetch.plan_load`, so they load the same model, at the same pinned
revision, offline the same way. This module imports torch: only those commands import it.
"""

from __future__ import annotations

import structlog

from daemon.fetch import Downloader, LoadPlan, ModelStore, fetch_model, plan_load
from daemon.pipeline.model import DeviceChoice, LoadedModel, choose_device, load_model
from daemon.settings import Settings

log = structlog.get_logger("cutout.model")


def load_planned(plan: LoadPlan, *, device: DeviceChoice, size: int) -> LoadedModel:
    return load_model(plan.spec, device=device, revision=plan.revision, offline=plan.offline, size=size)


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
    chosen = choose_device(device or settings.model.device)
    return load_planned(plan, device=chosen, size=settings.pipeline.target_size)
