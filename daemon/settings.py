"""The one settings object: typed, frozen, built and validated once at the entry point.

Sources, later ones winning: the code defaults below (mirrored, with comments, in
`config/default.yaml`), the YAML file given with `--config`, then command-line
flags. Every problem is a `ConfigError` that names the key.

A relative path means relative to where it was written: in the file, the file's
folder; on the command line, the current folder. Once loaded, every path is absolute.

The settings are frozen dataclasses; a number's range is part of its type
(`Annotated[float, ABOVE_0]`, `daemon.pipeline.constants.Bounds`), so no check names a field
by a string. The converter from YAML is written here (`build`, about 90 lines), not taken
from a library, for two measured reasons (issue 20; 2 cores, Python 3.11, `cutout status`
at 0.18 s, which loads the settings):

- pydantic v2 (`TypeAdapter(Settings)`) adds 0.14-0.17 s to import and 0.09-0.17 s to build
  its validator at every start: `cutout status` would take about 0.35 s, over the 0.3 s
  it must stay under.
- msgspec (`msgspec.convert`) adds only 0.01-0.04 s, but on these dataclasses it accepts an
  unknown key silently (`watch.settle_secnds: 2` is dropped: the worst failure a config
  file can have) and NaN for a float, and its messages name neither the offending value nor
  the allowed ones (`Invalid enum value 'gpu' - at $.model.device`): keeping today's
  messages ("model.device: 'gpu' is not one of auto, cpu, cuda, mps") would need the same
  walk over the types that this converter is.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml

from daemon.errors import ConfigError, ModelLoadError
from daemon.folders.outputs import Folders, OriginalsPolicy
from daemon.folders.routing import Route, Routing, route_problem, unknown_recipe
from daemon.pipeline.constants import (
    ABOVE_0, AT_LEAST_0, DOUBTFUL, FRACTION, TARGET_SIZE, BitDepth, Bounds, ImageOptions, PipelineParams,
)
from daemon.pipeline.modelspec import (
    DEFAULT_MODEL, FAMILY, GPU_PRECISIONS, DeviceName, ModelSpec, Precision, parse_model_spec,
)
from daemon.pipeline.recipe import DEFAULT_RECIPE, Recipe, recipe_problem
from daemon.pipeline.runtimes import BackendChoice

T = TypeVar("T")
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
StoreKind = Literal["sqlite", "postgresql"]
WatchRole = Literal["auto", "worker"]
WebhookFormat = Literal["json", "ntfy"]


@dataclass(frozen=True, kw_only=True)
class FolderSettings:
    input: Path | None = None
    """The hot folder, watched recursively."""
    output: Path | None = None
    """Cutouts appear here at the same relative path, as .png."""
    quarantine: Path | None = None
    """Failed originals and their .error.json; default: `quarantine` beside the output folder."""
    archive: Path | None = None
    """Where `originals: archive` moves processed originals; default: `archive` beside the output."""
    state: Path | None = None
    """The queue database and the daemon's lock; default: the platform's user state folder."""

    def resolve(self, *, default_state: Path, review: Path | None = None) -> Folders:
        """The folders as the daemon uses them: absolute, with the defaults filled in (`review`:
        the review step's folder, `review.folder`, when it is on)."""
        if self.input is None or self.output is None:
            missing = "folders.input" if self.input is None else "folders.output"
            raise ConfigError(f"{missing} is not set: give it in the config file or with --{missing.split('.')[1]}")
        return Folders.resolved(input=self.input, output=self.output, quarantine=self.quarantine,
                                archive=self.archive, state=self.state or default_state, review=review)


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    name: str = DEFAULT_MODEL
    revision: str | None = None
    device: DeviceName = "auto"
    offline: bool = False
    precision: Precision = "float32"
    """float32 (the seed's); float16 or bfloat16 on a GPU (CUDA, MPS): faster, checked against
    float32 on one image at start, refused on the CPU; int8 with model.backend: openvino (the
    export quantized once by NNCF, the `int8` extra), checked against float32 the same way."""
    compile: bool = False
    """torch.compile the model at start (slower start, faster images where the device supports it)."""
    backend: BackendChoice = "torch"
    """What runs the model: torch (eager PyTorch, on any device), onnxruntime or openvino (the
    model exported once at its size, on the CPU; each an extra); checked against torch at start.
    auto: openvino where it was measured faster (the model on an x86-64 CPU, in float32 and not
    compiled, the extra installed), else torch; a failed export or probe then stops the start
    with its reason, as a named runtime does."""

    @functools.cached_property
    def spec(self) -> ModelSpec:
        """`name` parsed, once: every command asks this, never the text (checked by `validate`)."""
        return parse_model_spec(self.name)


@dataclass(frozen=True, kw_only=True)
class WatchSettings:
    settle_seconds: Annotated[float, ABOVE_0] = 1.0
    incomplete_timeout_seconds: Annotated[float, ABOVE_0] = 600.0
    polling: bool = False
    poll_interval_seconds: Annotated[float, ABOVE_0] = 1.0
    reconcile_interval_seconds: Annotated[float, ABOVE_0] = 300.0
    follow_symlinks: bool = False
    """Off: a symbolic link in the hot folder is ignored (logged once), so nobody can publish a
    file from outside it through a shared hot folder. On: the target is cut out; the link itself
    is never archived or deleted."""
    role: WatchRole = "auto"
    """auto: this daemon watches the hot folder when it is the fleet's watcher (always, on one
    machine). worker: it only processes (a GPU box that does not see the folder's events)."""


@dataclass(frozen=True, kw_only=True)
class QueueSettings:
    max_attempts: Annotated[int, ABOVE_0] = 3
    retry_base_seconds: Annotated[float, ABOVE_0] = 5.0
    retry_max_seconds: Annotated[float, ABOVE_0] = 600.0
    store: StoreKind = "sqlite"
    """sqlite: the queue file in the state folder, one machine. postgresql: one queue in a
    PostgreSQL database, shared by every machine that names it (`url`)."""
    url: str | None = None
    """postgresql: where the store is (`postgresql://user@host/db`); the password comes from
    libpq's PGPASSWORD or ~/.pgpass, never from this file."""
    lease_seconds: Annotated[float, ABOVE_0] = 60.0
    """postgresql: a claimed job whose worker stops answering this long goes to another."""


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    in_flight: Annotated[int, AT_LEAST_0] = 0
    """Images between decode and write at once: bounds memory, keeps the model busy.
    0 = CPU threads + 2 (measured: 0.88 of the bound with 3 on 2 cores, 0.95 with 4). Small
    photos gain from more: at 2 MP, 6 on 2 cores kept them 92 % busy against 84 % (BENCHMARKS.md)."""
    cpu_threads: Annotated[int, AT_LEAST_0] = 0
    """Threads for decode/postprocess/encode; 0 = one per CPU core."""
    memory_ceiling_mb: Annotated[int, AT_LEAST_0] = 0
    """Past this resident memory the daemon finishes what is in flight and starts afresh (the
    same process, re-executed: the queue untouched, no job charged); 0 = no ceiling."""
    restart_after_images: Annotated[int, AT_LEAST_0] = 0
    """Start afresh the same way after this many images (for a device whose memory the process's
    resident size does not show, as an Apple GPU's may not); 0 = never."""


@dataclass(frozen=True, kw_only=True)
class ColorSettings:
    convert_to_srgb: bool = False
    """False: embed the source's ICC profile unchanged. True: convert pixels to sRGB and tag sRGB."""


@dataclass(frozen=True, kw_only=True)
class OutputSettings:
    bit_depth: BitDepth = 8
    """8 (the seed), or `source`: a 16-bit input gives a 16-bit RGBA PNG."""
    keep_metadata: bool = False
    """Copy EXIF (orientation reset to 1), XMP and capture time into the PNG."""


@dataclass(frozen=True, kw_only=True)
class LimitsSettings:
    max_pixels: Annotated[int, ABOVE_0] = 120_000_000
    """Larger images are quarantined as too_large before they are decoded."""
    max_file_bytes: Annotated[int, ABOVE_0] = 1_000_000_000


@dataclass(frozen=True, kw_only=True)
class LoggingSettings:
    level: LogLevel = "info"
    format: LogFormat = "auto"
    file: Path | None = None
    """JSON-lines log file (rotated by size); none = stdout only."""
    max_bytes: Annotated[int, ABOVE_0] = 10_000_000
    backups: Annotated[int, AT_LEAST_0] = 5


@dataclass(frozen=True, kw_only=True)
class DashboardSettings:
    enabled: bool = False
    """`cutout watch` serves the dashboard too (`cutout dashboard` serves it alone)."""
    bind: str = "127.0.0.1"
    """Where it listens: this Mac only. Any other address (0.0.0.0: the studio network) needs the token."""
    port: int = 8765
    token: str | None = None
    """Asked of every request when set, and always when `bind` is not local (none set: one is
    generated, kept 0600 in the state folder). Never logged, never shown on the page."""
    thumbnail_px: int = 320
    """The grid's thumbnails: the longer side, in pixels."""
    preview_px: int = 1600
    """The before/after view's images: the longer side, in pixels."""
    thumbnail_cache_mb: int = 256
    """Thumbnails are cached in the state folder up to this size; the least recently used go first."""
    recent: int = 48
    """How many of the latest cutouts the grid shows."""


@dataclass(frozen=True, kw_only=True)
class AlertSettings:
    webhook_url: str | None = None
    """POST a JSON message here (Slack, Mattermost, Teams: they read `text`); a secret: never logged."""
    webhook_format: WebhookFormat = "json"
    """json: {"text": ..., "cutout": {...}}; ntfy: the text as the body, the title in a header."""
    desktop: bool = False
    """A notification on this machine: Notification Center on macOS, notify-send on Linux."""
    group_seconds: float = 60.0
    """Events of one kind within this window make one message (200 bad files: one message)."""
    stall_minutes: float = 15.0
    """Work waiting but nothing finished for this long: the queue is stalled."""
    disk_free_percent: float = 5.0
    """Less free space than this on the output's disk: an alert (0: never)."""
    check_seconds: float = 10.0
    """How often the daemon looks for something to tell."""

    @property
    def active(self) -> bool:
        return self.webhook_url is not None or self.desktop


@dataclass(frozen=True, kw_only=True)
class ReviewSettings:
    folder: Path | None = None
    """Doubtful cut-outs wait here, at their mirrored path, for `cutout review approve`; None: the
    review step is off and every cut-out goes to the output folder (its doubt still scored and shown)."""
    threshold: Annotated[float, FRACTION] = DOUBTFUL
    """A cut-out whose doubt score is above this is doubtful (benchmarks/doubt.py chose 0.5)."""
    flip_pass: bool = False
    """Also run the model on the mirrored image: where the two disagree, the doubt rises (the
    `flip` part). Catches confident mistakes the matte alone cannot show; doubles the model's time."""

    @property
    def on(self) -> bool:
        return self.folder is not None


@dataclass(frozen=True, kw_only=True)
class Settings:
    folders: FolderSettings = field(default_factory=FolderSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    pipeline: PipelineParams = field(default_factory=PipelineParams)
    watch: WatchSettings = field(default_factory=WatchSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    color: ColorSettings = field(default_factory=ColorSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)
    originals: OriginalsPolicy = "keep"
    recipes: dict[str, Recipe] = field(default_factory=dict)
    """Named output settings; `default` (the seed's cropped RGBA PNG) is built in and may be redefined."""
    routes: tuple[Route, ...] = ()
    """Which recipes each file gets: the first route whose `match` fits; none fits -> `default`."""

    @functools.cached_property
    def all_recipes(self) -> dict[str, Recipe]:
        """The configured recipes with the built-in `default` (following output.bit_depth) unless redefined."""
        return {DEFAULT_RECIPE: Recipe(bit_depth=self.output.bit_depth)} | self.recipes


# --- Loading -------------------------------------------------------------------
def load_settings(path: Path | None = None, *, overrides: dict[str, object] | None = None) -> Settings:
    """Defaults, then the YAML file, then `overrides` (dotted keys, None = not given).

    Relative paths in the file are taken from the file's folder: a service (launchd,
    systemd) does not start in the folder the user wrote the file in. Relative paths in
    `overrides` (command-line flags) are taken from the current folder, as a shell user expects.
    """
    data = read_yaml(path) if path is not None else {}
    if path is not None:
        anchor_paths(data, base=Path(os.path.abspath(path)).parent)
    cwd = Path(os.getcwd())
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, _anchored(dotted, value, base=cwd))
    settings = build(Settings, data, prefix="")
    return validate(_size_of_model(settings, data))


def _size_of_model(settings: Settings, data: dict[str, Any]) -> Settings:
    """`pipeline.target_size` not given, or 0, follows the model: a BiRefNet of the family its own
    size (2048 for birefnet-hr), any other model the seed's 1088."""
    pipeline = data.get("pipeline")
    if isinstance(pipeline, dict) and pipeline.get("target_size", 0) != 0:
        return settings
    try:
        spec = settings.model.spec
    except ModelLoadError:
        return settings  # reported by validate, with its key
    size = spec.native.size if spec.kind == "native" else TARGET_SIZE
    return dataclasses.replace(settings, pipeline=dataclasses.replace(settings.pipeline, target_size=size))


def with_model(settings: Settings, name: str) -> Settings:
    """The settings with another model of the family (or any model `model.name` takes): its own
    input size, no pinned revision. For the files a person chose it for (`cutout review redo --model`)."""
    model = dataclasses.replace(settings.model, name=name, revision=None)
    other = dataclasses.replace(settings, model=model, pipeline=dataclasses.replace(settings.pipeline, target_size=0))
    return validate(_size_of_model(other, {}))


def check_model_choice(settings: Settings, name: str) -> None:
    """A model chosen for one file (`cutout review redo --model`, the dashboard's Redo) that the
    daemon could not load is refused now, not when its file's turn comes: a name `model.name`
    refuses, or a TorchScript file that is not there."""
    try:
        spec = with_model(settings, name).model.spec
    except ConfigError as exc:
        raise ConfigError(f"--model {name}: {str(exc).removeprefix('model.name: ')}") from exc
    if spec.kind == "torchscript" and not os.path.isfile(spec.source):
        raise ConfigError(f"--model {name}: no such model of the family ({', '.join(FAMILY)}), "
                          "and no TorchScript file of that name")


PATH_KEYS = (
    "folders.input", "folders.output", "folders.quarantine", "folders.archive", "folders.state", "logging.file",
    "review.folder",
)
"""Settings that are paths; `model.name` is one too when it names a file or a local folder."""


def anchor_paths(data: dict[str, Any], *, base: Path) -> None:
    """Make the relative paths of raw settings `data` absolute against `base`, in place."""
    for dotted in (*PATH_KEYS, "model.name"):
        *sections, key = dotted.split(".")
        section: object = data
        for name in sections:
            section = section.get(name) if isinstance(section, dict) else None
        if isinstance(section, dict) and key in section:
            section[key] = _anchored(dotted, section[key], base=base)


def _anchored(dotted: str, value: object, *, base: Path) -> object:
    """`value` of setting `dotted`, absolute against `base` when it is a relative path.

    Values of the wrong type are left alone: `build` reports them with their key.
    """
    if dotted in PATH_KEYS:
        return _anchored_path(value, base=base)
    return _anchored_model(value, base=base) if dotted == "model.name" else value


def _anchored_path(value: object, *, base: Path) -> object:
    if not isinstance(value, (str, Path)):
        return value
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _anchored_model(value: object, *, base: Path) -> object:
    """A TorchScript file or a local `hf:` folder made absolute; an alias or a hub repo as written.

    `hf:x/y` is a local folder when it is spelled as a path (`./`, `../`, `/`, `~`) or
    exists as a folder under `base`; otherwise it names a repository on the hub.
    """
    if not isinstance(value, str):
        return value
    try:
        spec = parse_model_spec(value)
    except ModelLoadError:
        return value  # `hf:` alone: reported when the model is loaded
    if spec.kind == "torchscript":
        return str(_anchored_path(value, base=base))
    if not value.startswith("hf:"):  # an alias such as `birefnet`
        return value
    local = spec.source.startswith(("/", "~", "./", "../")) or (base / spec.source).is_dir()
    return f"hf:{_anchored_path(spec.source, base=base)}" if local else value


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must be a mapping of sections, got {type(loaded).__name__}")
    return loaded


def _set_dotted(data: dict[str, Any], dotted: str, value: object) -> None:
    *sections, key = dotted.split(".")
    for section in sections:
        data = data.setdefault(section, {})
    data[key] = value


def build(cls: type[T], data: object, *, prefix: str) -> T:
    """An instance of dataclass `cls` from a mapping, every value converted and checked."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown setting {prefix + str(unknown[0])!r} (known: {', '.join(sorted(names))})")
    required = [f.name for f in dataclasses.fields(cls) if _is_required(f)]  # type: ignore[arg-type]
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}: is required here")
    values = {name: _convert(hints[name], data[name], key=prefix + name) for name in names if name in data}
    return cls(**values)


def _is_required(field_: dataclasses.Field[object]) -> bool:
    return field_.default is dataclasses.MISSING and field_.default_factory is dataclasses.MISSING


def _convert(hint: Any, value: object, *, key: str) -> object:
    """`value` as type `hint`, or a ConfigError naming `key`."""
    if dataclasses.is_dataclass(hint):
        return build(typing.cast(type, hint), value, prefix=f"{key}.")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _bounded(_convert(args[0], value, key=key), hint.__metadata__, key=key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, key=key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is tuple and args[-1:] == (Ellipsis,):
        return _convert_list(args[0], value, key=key)
    if origin is tuple:
        return _convert_tuple(args, value, key=key)
    if origin is dict:
        return _convert_mapping(args[1], value, key=key)
    return _convert_scalar(hint, value, key=key)


def _bounded(value: Any, metadata: tuple[object, ...], *, key: str) -> object:
    for bounds in metadata:
        if isinstance(bounds, Bounds) and (problem := bounds.problem(value)) is not None:
            raise ConfigError(f"{key}: {problem}, got {value!r}")
    return value


def _convert_list(item: Any, value: object, *, key: str) -> tuple[object, ...]:
    """A YAML list (or, for a list of names, one name alone) as a tuple of `item`."""
    if isinstance(value, str) and item is str:
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    return tuple(_convert(item, entry, key=f"{key}[{index}]") for index, entry in enumerate(value))


def _convert_mapping(item: Any, value: object, *, key: str) -> dict[str, object]:
    """A YAML mapping of names to `item`s (`recipes:`); a name must be a plain string."""
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of names, got {value!r}")
    for name in value:
        if not isinstance(name, str) or not name or "/" in name:
            raise ConfigError(f"{key}: {name!r} is not a usable name")
    return {name: _convert(item, entry, key=f"{key}.{name}") for name, entry in value.items()}


def _convert_tuple(args: tuple[Any, ...], value: object, *, key: str) -> tuple[object, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != len(args):
        raise ConfigError(f"{key}: expected a list of {len(args)} numbers, got {value!r}")
    return tuple(_convert(arg, item, key=key) for arg, item in zip(args, value, strict=True))


_SCALAR_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", Path: "a path"}


def _convert_scalar(hint: type, value: object, *, key: str) -> object:
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        Path: isinstance(value, (str, Path)),
    }[hint]
    if not ok:
        raise ConfigError(f"{key}: expected {_SCALAR_NAMES[hint]}, got {value!r}")
    if hint is Path:
        return Path(str(value)).expanduser()
    if hint is float and not math.isfinite(typing.cast(float, value)):
        # YAML's .nan and .inf: NaN passes every range check (comparisons are false), inf every minimum.
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return float(typing.cast(float, value)) if hint is float else value


# --- Validation ------------------------------------------------------------------
def validate(settings: Settings) -> Settings:
    """What one field's type and `Bounds` cannot say: the fields together, the model, the recipes."""
    pipeline = settings.pipeline
    if pipeline.canny_low > pipeline.canny_high:
        raise ConfigError(
            f"pipeline.canny_low: {pipeline.canny_low} is greater than pipeline.canny_high ({pipeline.canny_high}); "
            "the lower Canny threshold must not exceed the upper one"
        )
    if any(s <= 0 for s in settings.pipeline.imagenet_std):
        raise ConfigError("pipeline.imagenet_std: every value must be greater than 0")
    try:
        settings.model.spec
    except ModelLoadError as exc:
        raise ConfigError(f"model.name: {exc}") from exc
    _check_store(settings.queue)
    _check_dashboard(settings.dashboard)
    _check_alerts(settings.alerts)
    _check_recipes(settings)
    _check_backend(settings.model)
    if settings.model.precision in GPU_PRECISIONS and settings.model.device == "cpu":
        raise ConfigError(
            f"model.precision: {settings.model.precision} needs a GPU (CUDA or Apple MPS); on the CPU it is slower "
            "than float32 and not supported: use float32"
        )
    if settings.color.convert_to_srgb and routing(settings).wants_source_depth():
        deep = "output.bit_depth" if settings.output.bit_depth != 8 else "the recipes' bit_depth"
        raise ConfigError(
            f"color.convert_to_srgb: true needs 8-bit outputs, and {deep} asks for 16 bits (the sRGB conversion "
            "is done in 8 bits)"
        )
    return settings


def _check_backend(model: ModelSettings) -> None:
    """An inference runtime runs the exported float32 graph (OpenVINO: or its INT8 one) on the CPU:
    nothing else goes with it."""
    if model.precision == "int8" and model.backend != "openvino":
        raise ConfigError("model.precision: int8 is OpenVINO's quantized export (on the CPU): set "
                          "model.backend: openvino, or model.precision: float32")
    if model.backend in ("torch", "auto"):  # auto picks a runtime only where it can run
        return
    if model.device not in ("auto", "cpu"):
        raise ConfigError(f"model.backend: {model.backend} runs on the CPU, and model.device is {model.device}: "
                          "set model.device: cpu (or auto), or model.backend: torch")
    if model.precision in GPU_PRECISIONS or model.compile:
        quantized = " (or int8)" if model.backend == "openvino" else ""
        raise ConfigError(f"model.backend: {model.backend} runs the float32 export: model.precision: float32"
                          f"{quantized} and model.compile: false go with it")


def _check_recipes(settings: Settings) -> None:
    """Each recipe can work, each route names recipes that exist, and no two recipes of a route
    write the same file."""
    for name, recipe in settings.recipes.items():
        problem = recipe_problem(recipe)
        if problem is not None:
            raise ConfigError(f"recipes.{name}.{problem}")
    for index, route in enumerate(settings.routes):
        _check_route(route, key=f"routes[{index}]", known=settings.all_recipes)


def _check_route(route: Route, *, key: str, known: dict[str, Recipe]) -> None:
    problem = route_problem(route.match, route.recipes, recipes=known)
    if problem is not None:
        raise ConfigError(f"{key}.{problem}")


def _check_store(queue: QueueSettings) -> None:
    if queue.store == "postgresql" and not queue.url:
        raise ConfigError("queue.url: queue.store: postgresql needs the database, e.g. postgresql://cutout@db.studio/cutout")
    if queue.url and not queue.url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"queue.url: expected postgresql://user@host/database, got {queue.url!r}")
    if queue.url and _has_password(queue.url):
        raise ConfigError(
            "queue.url: holds a password; config files get copied and logged, so put it in ~/.pgpass "
            "(or PGPASSWORD for the service) and leave it out of the URL"
        )


def _check_dashboard(dashboard: DashboardSettings) -> None:
    if not 1 <= dashboard.port <= 65535:
        raise ConfigError(f"dashboard.port: must be between 1 and 65535, got {dashboard.port}")
    for key in ("thumbnail_px", "preview_px", "thumbnail_cache_mb", "recent"):
        if getattr(dashboard, key) <= 0:
            raise ConfigError(f"dashboard.{key}: must be greater than 0, got {getattr(dashboard, key)!r}")
    if not dashboard.bind.strip():
        raise ConfigError("dashboard.bind: expected an address such as 127.0.0.1 or 0.0.0.0")
    if dashboard.token is not None and len(dashboard.token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"dashboard.token: too short to guess-proof (at least {MIN_TOKEN_CHARS} characters;"
                          " leave it out and one is generated)")


MIN_TOKEN_CHARS = 16


def _check_alerts(alerts: AlertSettings) -> None:
    url = alerts.webhook_url
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError("alerts.webhook_url: expected an http:// or https:// URL")  # the value may be a secret
    for key in ("stall_minutes", "check_seconds"):
        if getattr(alerts, key) <= 0:
            raise ConfigError(f"alerts.{key}: must be greater than 0, got {getattr(alerts, key)!r}")
    if alerts.group_seconds < 0:
        raise ConfigError(f"alerts.group_seconds: must be 0 or more, got {alerts.group_seconds!r}")
    if not 0 <= alerts.disk_free_percent < 100:
        raise ConfigError(f"alerts.disk_free_percent: must be between 0 and 100, got {alerts.disk_free_percent!r}")


SECRET_KEYS = ("dashboard.token", "alerts.webhook_url")
"""Settings that must never reach a log or a page: `public_settings` hides them."""


def public_settings(settings: Settings) -> dict[str, Any]:
    """The settings as plain data for a log line, with every secret replaced by a mark."""
    data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(settings), default=str))
    for dotted in SECRET_KEYS:
        section, key = dotted.split(".")
        if data[section][key] is not None:
            data[section][key] = "(set, not shown)"
    return data


def _has_password(url: str) -> bool:
    authority = url.split("://", 1)[1].split("/", 1)[0]
    return "@" in authority and ":" in authority.rsplit("@", 1)[0] or "password=" in url.lower()


def cpu_threads(settings: Settings, *, cores: int | None) -> int:
    """worker.cpu_threads, with 0 meaning one per core."""
    return settings.worker.cpu_threads or cores or 2


def in_flight(settings: Settings, *, cores: int | None) -> int:
    """worker.in_flight, with 0 meaning two more than the CPU threads: one decoding ahead of
    the model and one finishing behind it while every core works."""
    return settings.worker.in_flight or cpu_threads(settings, cores=cores) + 2


def routing(settings: Settings, *, only: str | None = None) -> Routing:
    """Which recipes each file gets, from the recipes and routes sections; `only`: that recipe for
    every file (`cutout process --recipe`)."""
    if only is None:
        return Routing(recipes=settings.all_recipes, routes=settings.routes)
    if problem := unknown_recipe(only, recipes=settings.all_recipes, key="--recipe"):
        raise ConfigError(problem)
    return Routing(recipes=settings.all_recipes, routes=[Route(match="**", recipes=(only,))])


def image_options(settings: Settings) -> ImageOptions:
    """The reading and output choices the pipeline needs, from their three sections."""
    return ImageOptions(
        convert_to_srgb=settings.color.convert_to_srgb,
        bit_depth="source" if routing(settings).wants_source_depth() else 8,
        keep_metadata=settings.output.keep_metadata,
        max_pixels=settings.limits.max_pixels,
        max_file_bytes=settings.limits.max_file_bytes,
    )
