"""`cutout doctor`: what this machine has, what the daemon would use, and what is wrong.

Every check is a function of what the command-line entry read (the `Host`, the settings,
the folders, the model store): platform-dependent checks take the platform as an argument,
so they are tested for macOS on any machine. A check never changes anything: doctor
creates no folder, downloads no model and starts no service.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal, TextIO

from daemon.errors import CutoutError, QueueError, ServiceError
from daemon.folders.outputs import Folders
from daemon.folders.outputs import OriginalsPolicy
from daemon.models.fetch import ModelPin, ModelStore, is_hub_model, patch_order_for, plan_load
from daemon.models.backends import EXPORTS_DIR, SUFFIXES
from daemon.models.loading import device_and_backend, load_planned
from daemon.models.torchvision_check import read_facts, verdict
from daemon.pipeline.model import Accelerators, TorchAccelerators, choose_device
from daemon.pipeline.modelspec import ModelSpec
from daemon.pipeline.runtimes import EXTRAS, QUANTIZER, Backend, quantizer_version, runtime_version
from daemon.service import AgentStatus, Host, grant_target, manager_for
from daemon.settings import QueueSettings, Settings
from daemon.store.statedir import inspect_queue, queue_path

VERSIONED = ("torch", "transformers", "opencv-python-headless", "numpy", "watchdog", "torchvision", "timm")
Status = Literal["ok", "warn", "FAIL", "skip"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"


GIVEN = "--config F"
"""A fix line's settings when doctor does not know how it was run."""


@dataclass(frozen=True, kw_only=True)
class DoctorInputs:
    """Everything doctor looks at, read once by the command-line entry."""

    settings: Settings
    host: Host
    store: ModelStore
    folders: Folders | None  # None: no hot folder configured
    config: Path | None
    label: str
    accelerators: Accelerators | None = None  # None: ask torch
    given: str = GIVEN
    """How this run was given its settings (`--config F`, or the flags), for the fix lines."""


def package_versions() -> str:
    found = []
    for name in VERSIONED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return f"Python {platform.python_version()}; " + ", ".join(found)


def _guarded(name: str, fix: str, probe: Callable[[], str]) -> Check:
    """Run one probe; our own errors become a failed check with a fix-it line."""
    try:
        return Check(name, "ok", probe())
    except CutoutError as exc:
        return Check(name, "FAIL", str(exc), fix)


def check_torchvision(settings: Settings) -> Check:
    """torchvision imported for real: a torch installed over it breaks every hub model (torchvision_check.py)."""
    spec = settings.model.spec  # the built-in BiRefNet needs no torchvision; a hub model's own code does
    found = verdict(read_facts(), needed=spec.kind == "hf" and is_hub_model(spec))
    return Check("torchvision", found.status, found.detail, found.fix)


# --- Device and model ----------------------------------------------------------------------
def check_device(settings: Settings, *, accelerators: Accelerators | None = None) -> Check:
    def probe() -> str:
        choice = choose_device(settings.model.device, accelerators=accelerators)
        return f"{choice.device} ({choice.reason})"

    return _guarded("device", "set model.device to auto (or --device auto)", probe)


def check_mps(*, host: Host, accelerators: Accelerators) -> Check:
    """On Apple Silicon the daemon should run on the GPU: ~1 s per image instead of ~1 min."""
    if not host.is_macos:
        return Check("mps", "skip", "not macOS")
    if host.machine != "arm64":
        return Check("mps", "skip", f"this Python runs as {host.machine} (an Intel Mac, or Rosetta on Apple Silicon)",
                     "on Apple Silicon use an arm64 Python (python3 -c 'import platform; print(platform.machine())')")
    if accelerators.mps_available():
        return Check("mps", "ok", "PyTorch can use the Apple GPU (MPS)")
    return Check(
        "mps", "FAIL", "PyTorch cannot use the Apple GPU (torch.backends.mps.is_available() is False): "
        "the daemon would run on the CPU, about a minute per image",
        "update macOS to 12.3 or later, then reinstall PyTorch in this environment (torchvision with it, or "
        "it breaks): pip install --upgrade torch torchvision",
    )


def check_model_cache(settings: Settings, *, store: ModelStore, given: str = GIVEN) -> Check:
    """A hub model must be fetched and pinned, with every file in the cache: the service runs offline."""
    fix = f"fetch it once with network access: cutout model fetch {given}"

    def probe() -> Check:
        spec = settings.model.spec
        if not is_hub_model(spec):
            return Check("model cache", "skip", f"{spec} is local: nothing to download")
        plan = plan_load(settings.model, store=store)
        if plan.pin is None:
            return Check("model cache", "FAIL", f"{spec} has not been fetched and pinned", fix)
        pin = plan.pin
        return Check("model cache", "ok", f"{spec} pinned at {pin.revision} (fetched {pin.fetched_at}), "
                     f"all {len(pin.files)} files in {store.cache}: loads offline{_patches(spec, pin, store=store)}")

    try:
        return probe()
    except CutoutError as exc:
        return Check("model cache", "FAIL", str(exc), fix)


def _patches(spec: ModelSpec, pin: ModelPin, *, store: ModelStore) -> str:
    """A family BiRefNet's decoder patch order, as the load will use it."""
    if spec.kind != "native":
        return ""
    finding = patch_order_for(pin, store=store)
    runs = f"{finding.order} patch order" if finding.order else "patch order unknown, so its own code runs"
    return f"; {runs} ({finding.reason})"


def check_model(settings: Settings, *, store: ModelStore, accelerators: Accelerators | None = None) -> Check:
    """Load the model exactly as the daemon would (pinned, offline); never download it."""
    fix = "fix the model setting (model.name / --model), or fetch it once with network access: cutout model fetch"

    def probe() -> str:
        device = choose_device(settings.model.device, accelerators=accelerators)
        loaded = load_planned(plan_load(settings.model, store=store), device=device, size=settings.pipeline.target_size,
                              store=store)
        return f"{settings.model.spec} loads on {device.device} from {loaded.origin}"

    if _unfetched(settings=settings, store=store):
        return Check("model", "skip", "not loaded: it has not been fetched (see model cache)")
    return _guarded("model", fix, probe)


def check_backend(settings: Settings, *, store: ModelStore) -> Check:
    """What runs the model: eager PyTorch, or a runtime that is installed, with its export cached or not."""
    backend, why = _resolved_backend(settings)
    chosen = f"; {why}" if settings.model.backend == "auto" else ""
    if backend == "torch":
        return Check("backend", "ok", f"torch {metadata.version('torch')} (eager{chosen}; model.backend: onnxruntime "
                     "or openvino runs an export on the CPU, see docs/models.md)")
    try:
        version = runtime_version(backend)
    except CutoutError as exc:
        return Check("backend", "FAIL", str(exc), f"pip install -e '.[{EXTRAS[backend][1]}]'")
    quantized, int8 = "", settings.model.precision == "int8"
    if int8:
        try:
            quantized = f", INT8 (quantized by NNCF {quantizer_version()})"
        except CutoutError as exc:
            return Check("backend", "FAIL", str(exc), f"pip install -e '.[{QUANTIZER[1]}]'")
    exports = store.pin_file.parent / EXPORTS_DIR
    cached = sorted(path.name for path in exports.glob(f"*{SUFFIXES[backend]}")
                    if ("-int8-" in path.name) == int8) if exports.is_dir() else []
    made = f"exports cached: {', '.join(cached)}" if cached else "no export yet: the first start makes it (minutes)"
    return Check("backend", "ok", f"{backend} {version} on the CPU{quantized}{chosen}; {made}; checked against torch "
                 "at every start; its speed against torch on this machine: python -m benchmarks.backends")


def _resolved_backend(settings: Settings) -> tuple[Backend, str]:
    """What `model.backend` runs here, and why (`auto` decides by the device and the machine)."""
    try:
        _, backend, why = device_and_backend(settings.model)
    except CutoutError as exc:  # the device check says what is wrong with the device
        return "torch", f"auto: undecided while the configured device is not usable ({exc})"
    return backend, why


def _unfetched(*, settings: Settings, store: ModelStore) -> bool:
    try:
        return plan_load(settings.model, store=store).needs_fetch
    except CutoutError:
        return False  # the load check reports it


# --- Folders -------------------------------------------------------------------------------------
def named_folders(folders: Folders, *, policy: OriginalsPolicy) -> dict[str, Path]:
    named = {"input": folders.input, "output": folders.output, "quarantine": folders.quarantine}
    if policy == "archive":
        named["archive"] = folders.archive
    return named | {"state": folders.state}


def check_folders(folders: Folders | None, *, policy: OriginalsPolicy) -> Iterator[Check]:
    if folders is None:
        yield Check("folders", "skip", "no hot folder configured (give --config F, or --input and --output)")
        return
    for name, path in named_folders(folders, policy=policy).items():
        yield check_folder(name, path, hot=folders.input)


_OUTSIDE_HOT = ("output", "quarantine", "archive")


def check_folder(name: str, path: Path, *, hot: Path) -> Check:
    label = f"folders.{name}"
    if name in _OUTSIDE_HOT and (path == hot or path.is_relative_to(hot) or hot.is_relative_to(path)):
        return Check(label, "FAIL", f"{path} is inside the hot folder {hot} (or contains it): "
                     "outputs would come back as inputs", f"choose a {name} folder outside {hot}")
    if path.is_dir():
        return _writable(label, path)
    if name == "input":
        return Check(label, "FAIL", f"hot folder {path} does not exist", f"create it: mkdir -p '{path}'")
    return _creatable(label, path)


def _writable(label: str, path: Path) -> Check:
    if os.access(path, os.R_OK | os.W_OK | os.X_OK):
        return Check(label, "ok", f"{path} exists and is writable")
    return Check(label, "FAIL", f"{path} is not readable and writable by you",
                 f"fix its permissions (chmod u+rwx '{path}') or choose another folder")


def _creatable(label: str, path: Path) -> Check:
    parent = _nearest_existing(path)
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return Check(label, "ok", f"{path} does not exist yet; the daemon creates it at start")
    return Check(label, "FAIL", f"{path} does not exist and cannot be created ({parent} is not a writable folder)",
                 f"create it yourself (mkdir -p '{path}') or choose another folder")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# --- The queue database ----------------------------------------------------------------------------
def check_queue(folders: Folders | None, *, given: str = GIVEN) -> Check:
    """sqlite's full integrity_check of the queue, read-only: the daemon refuses a damaged one at start."""
    if folders is None:
        return Check("queue", "skip", "no hot folder configured")
    path = queue_path(folders.state)
    rebuild = f"stop the daemon, then run: cutout queue rebuild {given}"
    try:
        health = inspect_queue(path, thorough=True)
    except QueueError as exc:
        return Check("queue", "FAIL", str(exc), f"check the disk and the permissions of {folders.state}")
    if health.state == "missing":
        return Check("queue", "ok", f"no queue at {path} yet: the daemon creates it at start, "
                     "adopting the cutouts already in the output folder")
    if health.state == "empty":
        return Check("queue", "warn", f"{path} {health.problem}: the daemon rebuilds it by itself at its next start "
                     "from the output and quarantine folders", f"nothing to do, or now: {rebuild}")
    if health.state == "damaged":
        return Check("queue", "FAIL", f"{path} {health.problem}: the daemon refuses to run on it",
                     f"{rebuild} (the damaged file is moved aside; nothing is redone, nothing is lost)")
    return Check("queue", "ok", f"{path} passes sqlite's integrity check")


def check_shared_store(queue: QueueSettings, *, given: str = GIVEN) -> Check:
    """The fleet's PostgreSQL store: reachable, on this program's schema, and who is in it."""
    from daemon.store.configured import open_store

    try:
        store = open_store(queue, state=Path("."), existing=True)
    except CutoutError as exc:
        fix = f"cutout queue init {given}" if "queue init" in str(exc) else (
            "check the server, queue.url and ~/.pgpass (psql with the same URL must connect)")
        return Check("queue", "FAIL", str(exc), fix)
    try:
        counts, fleet = store.counts(), store.fleet()
    finally:
        store.close()
    jobs = ", ".join(f"{state} {count}" for state, count in counts.items())
    return Check("queue", "ok", f"the shared PostgreSQL store answers: {jobs}; {len(fleet)} daemons report in")


# --- macOS privacy (TCC) -------------------------------------------------------------------------
def protected_places(home: Path) -> dict[Path, str]:
    """Where macOS blocks a launchd job that has no Full Disk Access (reads fail, no dialog)."""
    return {
        home / "Desktop": "Desktop",
        home / "Documents": "Documents",
        home / "Downloads": "Downloads",
        home / "Library" / "Mobile Documents": "iCloud Drive",
        Path("/Volumes"): "an external or network volume",
    }


def protected_place(path: Path, *, home: Path) -> str | None:
    """The protected place `path` is in, if any; symlinks resolved, case ignored (APFS default)."""
    places = {**protected_places(home), **protected_places(Path(os.path.realpath(home)))}
    for candidate in {_fold(Path(os.path.abspath(path))), _fold(Path(os.path.realpath(path)))}:
        for root, name in places.items():
            if candidate.is_relative_to(_fold(root)):
                return name
    return None


def _fold(path: Path) -> Path:
    return Path(str(path).casefold())


def check_privacy(paths: Mapping[str, Path], *, host: Host, label: str) -> Check:
    """Warn when the service would need Full Disk Access; doctor cannot see the grant itself."""
    if not host.is_macos:
        return Check("privacy", "skip", "macOS privacy protection does not apply here")
    blocked = {name: (path, place) for name, path in paths.items()
               if (place := protected_place(path, home=host.home)) is not None}
    if not blocked:
        return Check("privacy", "ok", "nothing the service reads is in Desktop, Documents, Downloads, "
                     "iCloud Drive or /Volumes: no Full Disk Access needed")
    listed = "; ".join(f"{name} {path} is in {place}" for name, (path, place) in blocked.items())
    return Check("privacy", "warn", f"{listed}: without Full Disk Access the service cannot read it "
                 "(reads fail with 'Operation not permitted', no dialog appears)", full_disk_access_fix(host, label=label))


def full_disk_access_fix(host: Host, *, label: str) -> str:
    target = grant_target(host.python)
    return (
        f"either move these folders out of Desktop/Documents/Downloads/iCloud Drive/external volumes, or give "
        f"the service's Python Full Disk Access: System Settings > Privacy & Security > Full Disk Access > "
        f"click + > press Cmd-Shift-G, paste {target} > Open > switch it on; then restart the service: "
        f"launchctl kickstart -k gui/{host.uid}/{label}. Repeat this after a Python upgrade or a new venv."
    )


def service_paths(
    *, host: Host, config: Path | None, folders: Folders | None, policy: OriginalsPolicy
) -> dict[str, Path]:
    """What the service reads at start: its Python environment, the config, every folder."""
    paths = {"the Python environment": host.python.parent.parent}
    if config is not None:
        paths["config"] = Path(os.path.abspath(config))
    if folders is not None:
        paths |= {f"folders.{name}": path for name, path in named_folders(folders, policy=policy).items()}
    return paths


# --- The service ---------------------------------------------------------------------------------
def check_agent(*, host: Host, label: str) -> Check:
    """Is the LaunchAgent (macOS) or systemd user unit loaded and running?"""
    service = manager_for(host=host)
    manager = service.name
    try:
        found = service.status(label=label)
    except ServiceError as exc:
        not_found = "not found on PATH" in str(exc)
        return Check("service", "skip" if not_found else "warn", f"cannot ask {manager}: {exc}")
    return _agent_check(found, manager=manager, label=label)


def _agent_check(found: AgentStatus, *, manager: str, label: str) -> Check:
    reinstall = "cutout service install --config F (then cutout service status)"
    if found.loaded and found.pid is not None:
        return Check("service", "ok", f"{label} is loaded in {manager} and running (pid {found.pid})")
    if found.loaded:
        exit_text = "" if found.last_exit_status is None else f", last exit status {found.last_exit_status}"
        return Check("service", "FAIL", f"{label} is loaded in {manager} but not running ({found.state}{exit_text})",
                     f"read the log (cutout.log and stderr.log in its log folder), fix the cause, then {reinstall}")
    if found.installed:
        return Check("service", "FAIL", f"{label} is installed but not loaded in {manager}", reinstall)
    return Check("service", "skip", f"{label} is not installed (fine when you run cutout watch yourself)")


# --- All together -----------------------------------------------------------------------------
def run_checks(inputs: DoctorInputs) -> Iterator[Check]:
    settings, accelerators = inputs.settings, inputs.accelerators
    yield Check("versions", "ok", package_versions())
    yield check_torchvision(settings)
    yield check_device(settings, accelerators=accelerators)
    yield check_mps(host=inputs.host, accelerators=accelerators or TorchAccelerators())
    yield check_model_cache(settings, store=inputs.store, given=inputs.given)
    yield check_model(settings, store=inputs.store, accelerators=accelerators)
    yield check_backend(settings, store=inputs.store)
    yield from check_folders(inputs.folders, policy=settings.originals)
    if inputs.settings.queue.store == "postgresql":
        yield check_shared_store(inputs.settings.queue, given=inputs.given)
    else:
        yield check_queue(inputs.folders, given=inputs.given)
    paths = service_paths(host=inputs.host, config=inputs.config, folders=inputs.folders, policy=settings.originals)
    yield check_privacy(paths, host=inputs.host, label=inputs.label)
    yield check_agent(host=inputs.host, label=inputs.label)


def report(checks: Iterator[Check], *, out: TextIO) -> int:
    """Print each check as it completes; 1 when any failed (warnings and skips do not fail)."""
    failed = 0
    for check in checks:
        print(f"[{check.status}] {check.name}: {check.detail}", file=out, flush=True)
        if check.fix:
            print(f"       fix: {check.fix}", file=out)
        failed += not check.ok
    return 1 if failed else 0
