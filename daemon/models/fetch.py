"""`cutout model fetch`: download a hub model once, pin its exact commit, run offline on it.

The model's own code runs with the user's rights, so the daemon must never pick up a new
revision by itself. `fetch_model` downloads a snapshot into the Hugging Face cache and
records the resolved commit in the pin file, `<state>/model-pin.json`:

    {"format": 1, "models": {"hf:ZhengPeng7/BiRefNet": {
        "repo": "ZhengPeng7/BiRefNet", "requested": null, "revision": "<40-hex commit>",
        "files": ["BiRefNet_config.py", "birefnet.py", "config.json", ...],
        "cache": "/Users/me/.cache/huggingface/hub", "fetched_at": "2026-11-26T09:14:42+00:00",
        "patch_order": {"order": "einops", "reason": "birefnet.py calls image2patches with ..."}}}}

A family BiRefNet's pin also records its decoder's patch order, read from the revision's own
`birefnet.py` as text (`daemon.pipeline.patchorder`): the weights alone cannot say it.

`plan_load` then turns a start-up into: that commit, from the cache, offline; a config that
names another revision is refused. The network sits behind one seam, `Downloader`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from daemon.atomic import make_private_dir, write_atomic
from daemon.errors import ConfigError, CutoutError, ModelLoadError
from daemon.pipeline.modelspec import ModelSpec
from daemon.pipeline.patchorder import CODE_FILE, PatchOrderFinding, patch_order_of_snapshot
from daemon.settings import ModelSettings

PIN_FILE_NAME = "model-pin.json"
PIN_FORMAT = 1
_COMMIT = re.compile(r"[0-9a-f]{40}")


# --- The network seam ----------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """One downloaded revision: its commit and the cache folder holding its files."""

    commit: str
    folder: Path


class Downloader(Protocol):
    """Download (or find in `cache`) a hub repo at `revision` (None = default branch): every
    file, or `only` those named."""

    def __call__(
        self, *, repo: str, revision: str | None, cache: Path, progress: bool, only: tuple[str, ...] | None = None
    ) -> Snapshot: ...


def hub_download(
    *, repo: str, revision: str | None, cache: Path, progress: bool, only: tuple[str, ...] | None = None
) -> Snapshot:
    """huggingface_hub's snapshot_download: resolves the ref, fetches every file (or `only`
    those), returns the snapshot. Files already in the cache are not downloaded again."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()  # no bars in a service's log
    try:
        folder = Path(snapshot_download(repo, revision=revision, cache_dir=cache,
                                        allow_patterns=None if only is None else list(only)))
    except Exception as exc:  # OSError, ValueError, or the HTTP library's own errors (requests/httpx by version)
        raise ModelLoadError(_download_failed(repo, revision, exc)) from exc
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()
    # snapshot_download returns <cache>/models--org--name/snapshots/<commit>.
    return Snapshot(commit=folder.name, folder=folder)


def _download_failed(repo: str, revision: str | None, exc: Exception) -> str:
    return (
        f"could not download {repo} @ {revision or 'default branch'}: {exc} "
        "(needs network access once; check the name and revision, and that HF_HUB_OFFLINE is not set)"
    )


# --- The pin --------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ModelPin:
    """The commit a hub model was fetched at, and the files it had."""

    model: str  # the key: the model spec as text, e.g. "hf:ZhengPeng7/BiRefNet"
    repo: str
    requested: str | None  # what was asked for (a branch, tag or commit); None = default branch
    revision: str  # the resolved commit hash
    files: tuple[str, ...]  # relative paths in the snapshot
    cache: str  # the hub cache it was fetched into (for messages)
    fetched_at: str
    patch_order: PatchOrderFinding | None = None
    """A family BiRefNet's decoder patch order, read at fetch; None for an `hf:` model, and for
    a pin made by a version that did not record it (`pin_patch_order` completes it)."""

    @property
    def short(self) -> str:
        return self.revision[:12]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["model"]
        data["files"] = list(self.files)
        return data

    @classmethod
    def from_json(cls, model: str, data: Mapping[str, Any]) -> ModelPin:
        fields = {key: data[key] for key in ("repo", "requested", "revision", "cache", "fetched_at")}
        order = data.get("patch_order")
        patches = None if order is None else PatchOrderFinding(order=order["order"], reason=str(order["reason"]))
        if patches is not None and patches.order not in (None, "einops", "legacy"):
            raise ValueError(f"unknown patch order {patches.order!r}")
        return cls(model=model, files=tuple(data["files"]), patch_order=patches, **fields)


def is_hub_model(spec: ModelSpec) -> bool:
    """A repo on the hub (downloaded, pinned): a BiRefNet of the family or an `hf:` repo, not a
    TorchScript file or a local folder."""
    return spec.kind == "native" or (spec.kind == "hf" and not spec.is_local_hf)


@dataclass(frozen=True, kw_only=True)
class ModelStore:
    """The pin file in the state folder, and the Hugging Face hub cache the loader reads."""

    pin_file: Path
    cache: Path

    def pin(self, spec: ModelSpec) -> ModelPin | None:
        models = self._read()
        entry = models.get(str(spec))
        if entry is None and spec.kind == "native":
            # Pinned before the family had names (`hf:ZhengPeng7/BiRefNet`): the same repository,
            # commit and files, so an upgraded service starts offline on what it has.
            entry = models.get(f"hf:{spec.source}")
        return None if entry is None else self._parse(str(spec), entry)

    def record(self, pin: ModelPin) -> None:
        """Replace this model's pin; other models' pins are kept. Atomic: never a half-written pin."""
        models = {**self._read(), pin.model: pin.to_json()}
        text = json.dumps({"format": PIN_FORMAT, "models": models}, indent=2, sort_keys=True) + "\n"
        try:
            make_private_dir(self.pin_file.parent)  # the state folder: 0700, as the daemon makes it
            write_atomic(self.pin_file, text.encode())
        except OSError as exc:
            raise ConfigError(f"cannot write the model pin {self.pin_file}: {exc.strerror or exc}") from exc

    def snapshot(self, pin: ModelPin) -> Path:
        """Where the hub cache keeps this pin's files (huggingface_hub's layout)."""
        return self.cache / f"models--{pin.repo.replace('/', '--')}" / "snapshots" / pin.revision

    def missing_files(self, pin: ModelPin) -> list[str]:
        folder = self.snapshot(pin)
        return [name for name in pin.files if not (folder / name).is_file()]

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.pin_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return {}  # nothing fetched yet
        except OSError as exc:
            raise ConfigError(f"cannot read the model pin {self.pin_file}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise self._damaged(exc) from exc
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise self._damaged("expected {\"format\": 1, \"models\": {...}}")
        models: dict[str, Any] = data["models"]
        return models

    def _parse(self, model: str, entry: Any) -> ModelPin:
        try:
            pin = ModelPin.from_json(model, entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise self._damaged(f"entry {model!r} lacks {exc}") from exc
        if not _COMMIT.fullmatch(str(pin.revision)):
            raise self._damaged(f"entry {model!r} has no commit hash")
        return pin

    def _damaged(self, why: object) -> ModelLoadError:
        return ModelLoadError(
            f"the model pin {self.pin_file} is damaged ({why}): delete it and run `cutout model fetch` again"
        )


# --- Fetching -------------------------------------------------------------------------
def fetch_model(
    spec: ModelSpec, *, revision: str | None, store: ModelStore, downloader: Downloader, progress: bool
) -> ModelPin:
    """Download `spec` at `revision` (None = default branch) and pin the commit it resolved to."""
    if not is_hub_model(spec):
        raise ConfigError(f"{spec} is a local model: there is nothing to fetch (fetch is for Hugging Face hub repos)")
    # The whole snapshot, a family BiRefNet's too: the built-in model reads its weights alone, and
    # the repository's own code is there (never run) for the day a revision no longer fits it.
    snapshot = downloader(repo=spec.source, revision=revision, cache=store.cache, progress=progress)
    pin = _pin_for(spec, snapshot, requested=revision, cache=store.cache)
    store.record(pin)
    return pin


def _pin_for(spec: ModelSpec, snapshot: Snapshot, *, requested: str | None, cache: Path) -> ModelPin:
    if not _COMMIT.fullmatch(snapshot.commit):
        raise ModelLoadError(f"{spec} resolved to {snapshot.commit!r}, which is not a commit hash: not pinning it")
    files = _snapshot_files(snapshot.folder)
    if not files:
        raise ModelLoadError(f"{spec} @ {snapshot.commit} downloaded no files into {snapshot.folder}")
    return ModelPin(
        model=str(spec), repo=spec.source, requested=requested, revision=snapshot.commit,
        files=files, cache=str(cache), fetched_at=datetime.now(UTC).isoformat(timespec="seconds"),
        patch_order=_read_patch_order(snapshot.folder) if spec.kind == "native" else None,
    )


def _read_patch_order(folder: Path) -> PatchOrderFinding:
    """What the downloaded revision's `birefnet.py` says; a repository without it is unknown."""
    try:
        finding = patch_order_of_snapshot(folder)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {folder / CODE_FILE}: {exc.strerror or exc}") from exc
    return finding or PatchOrderFinding(None, f"the repository has no {CODE_FILE}: its decoder's patch order cannot be told")


# --- Pins made before the patch order was recorded ---------------------------------------------
def patch_order_for(pin: ModelPin, *, store: ModelStore) -> PatchOrderFinding:
    """The pin's patch order; for a pin made before it was recorded, read from the snapshot's
    `birefnet.py` (the same commit, so the same answer). Refused when that file is not there."""
    if pin.patch_order is not None:
        return pin.patch_order
    finding = patch_order_of_snapshot(store.snapshot(pin))
    if finding is None:
        raise ModelLoadError(
            f"{pin.model} was pinned at {pin.revision} before cutout recorded which order its decoder stacks the "
            f"image patches in, and its snapshot has no {CODE_FILE} to read it from: run `cutout model fetch "
            f"--revision {pin.revision}` once with network access (it downloads that small file; the weights "
            "are already in the cache and are not downloaded again)"
        )
    return finding


def pinned_patch_order(spec: ModelSpec, *, store: ModelStore) -> str:
    """A short answer for listings: the pinned revision's order, `unknown`, `not recorded` (a
    pin of an older version), `-` (not fetched), or `damaged pin`."""
    try:
        pin = store.pin(spec)
    except CutoutError:
        return "damaged pin"
    if pin is None:
        return "-"
    if pin.patch_order is None:
        return "not recorded"
    return pin.patch_order.order or "unknown"


def complete_pin(pin: ModelPin, *, store: ModelStore, downloader: Downloader | None) -> ModelPin:
    """A family pin made by an older version, with its patch order recorded: read from the
    snapshot, or (given a `downloader`, network allowed) from `birefnet.py` alone downloaded at
    the same commit (never the weights again). The pin's commit and request are kept."""
    if pin.patch_order is not None:
        return pin
    if downloader is not None and patch_order_of_snapshot(store.snapshot(pin)) is None:
        snapshot = downloader(repo=pin.repo, revision=pin.revision, cache=store.cache, progress=False, only=(CODE_FILE,))
        pin = dataclasses.replace(pin, files=tuple(sorted({*pin.files, *_snapshot_files(snapshot.folder)})))
    completed = dataclasses.replace(pin, patch_order=patch_order_for(pin, store=store))
    store.record(completed)
    return completed


def _snapshot_files(folder: Path) -> tuple[str, ...]:
    # is_file() follows the cache's symlinks into blobs/: a dangling link is not a file.
    found = (path for path in folder.rglob("*") if path.is_file())
    return tuple(sorted(path.relative_to(folder).as_posix() for path in found))


# --- Starting on the pin ------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LoadPlan:
    """How to call load_model: which model, which revision, offline or not, and why."""

    spec: ModelSpec
    revision: str | None
    offline: bool
    pin: ModelPin | None = None
    needs_fetch: bool = False  # a hub model without a pin, network allowed: fetch (and pin) first


def plan_load(model: ModelSettings, *, store: ModelStore, offline: bool | None = None) -> LoadPlan:
    """The one answer to "what would loading this config's model do", for every command.

    A pinned hub model loads offline at its pin; a config naming another revision is
    refused. `offline` overrides `model.offline` (the service always runs offline).
    """
    spec, revision = model.spec, model.revision
    offline = model.offline if offline is None else offline
    if not is_hub_model(spec):
        return LoadPlan(spec=spec, revision=revision, offline=offline)
    pin = store.pin(spec)
    if pin is None:
        return LoadPlan(spec=spec, revision=revision, offline=offline, needs_fetch=not offline)
    check_revision(pin, configured=revision)
    check_cached(pin, store=store)
    return LoadPlan(spec=spec, revision=pin.revision, offline=True, pin=pin)


def check_revision(pin: ModelPin, *, configured: str | None) -> None:
    """The config may name the pinned commit or the ref it was fetched from; nothing else."""
    if configured is None or configured in (pin.revision, pin.requested):
        return
    raise ModelLoadError(
        f"model.revision {configured} differs from the fetched pin {pin.revision} ({pin.model}): "
        f"run `cutout model fetch --revision {configured}` to change it deliberately"
    )


def check_cached(pin: ModelPin, *, store: ModelStore) -> None:
    missing = store.missing_files(pin)
    if not missing:
        return
    raise ModelLoadError(
        f"{pin.model} is pinned at {pin.revision}, but {len(missing)} of its {len(pin.files)} files "
        f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}) are not in the Hugging Face cache "
        f"{store.cache} (it was fetched into {pin.cache}): run `cutout model fetch --revision {pin.revision}` "
        "with network access, or point HF_HOME at the cache it was fetched into"
    )
