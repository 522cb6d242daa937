"""What a command gets besides its arguments and settings: the process's surroundings.

`current_context()` is the one place that reads them (platform, home, uid, the interpreter,
the Hugging Face cache, the must-act exit status); every handler gets them passed down,
so tests run any command "on macOS" with a fake download seam. The helpers below turn
settings plus context into the folders, the model store and the loaded model.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from platformdirs import user_state_dir

from daemon.errors import ConfigError, QueueDamaged
from daemon.folders.outputs import Folders
from daemon.models.fetch import PIN_FILE_NAME, Downloader, ModelStore, hub_download
from daemon.service import Host
from daemon.settings import Settings

if TYPE_CHECKING:
    from daemon.pipeline.model import LoadedModel


@dataclass(frozen=True, kw_only=True)
class Context:
    """What the entry point read from the process, for the handlers."""

    host: Host
    hf_home: Path  # what the service gets as HF_HOME
    hf_cache: Path  # the hub cache this process loads from (HF_HUB_CACHE, default HF_HOME/hub)
    default_state: Path  # folders.state when the config names none
    downloader: Downloader
    must_act_status: int = QueueDamaged.exit_status
    """`cutout watch`'s exit status when a person must act (a damaged queue); see MUST_ACT_ENV."""


MUST_ACT_ENV = "CUTOUT_MUST_ACT_STATUS"
"""The LaunchAgent sets it to 0: launchd's KeepAlive restarts after every non-zero status and
cannot be told to leave one alone, so "stay down" has to look like a clean stop there."""


def _must_act_status(environ: Mapping[str, str]) -> int:
    text = environ.get(MUST_ACT_ENV)
    if text is None:
        return QueueDamaged.exit_status
    if not text.isdigit() or int(text) > 255:
        raise ConfigError(f"{MUST_ACT_ENV}={text!r} is not an exit status (0 to 255): fix or unset it")
    return int(text)


def current_context() -> Context:
    from huggingface_hub import constants

    return Context(
        host=Host(
            system=platform.system(), machine=platform.machine(), home=Path.home(),
            uid=os.getuid(), python=Path(os.path.abspath(sys.executable)),
        ),
        hf_home=Path(constants.HF_HOME), hf_cache=Path(constants.HF_HUB_CACHE),
        default_state=Path(user_state_dir("cutout")), downloader=hub_download,
        must_act_status=_must_act_status(os.environ),
    )


# --- Settings and context -> folders, the model store, the model ------------------------------
def folders_from(settings: Settings, ctx: Context) -> Folders:
    return settings.folders.resolve(default_state=ctx.default_state, review=settings.review.folder)


def state_dir(settings: Settings, ctx: Context) -> Path:
    """The state folder even when no hot folder is configured (`process`, `model fetch`)."""
    return Path(os.path.abspath((settings.folders.state or ctx.default_state).expanduser()))


def store_for(settings: Settings, ctx: Context, *, cache: Path | None = None) -> ModelStore:
    return ModelStore(pin_file=state_dir(settings, ctx) / PIN_FILE_NAME, cache=cache or ctx.hf_cache)


def open_model(settings: Settings, *, ctx: Context, device: str | None = None, progress: bool = False) -> LoadedModel:
    """The configured model, from this process's model store (see `daemon.models.loading`)."""
    from daemon.models.loading import open_model as open_configured

    return open_configured(settings, store=store_for(settings, ctx), downloader=ctx.downloader, device=device,
                           progress=progress)


def configured_folders(settings: Settings, ctx: Context) -> Folders | None:
    if settings.folders.input is None or settings.folders.output is None:
        return None
    return folders_from(settings, ctx)
