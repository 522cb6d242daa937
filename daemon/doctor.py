"""`cutout doctor`: what this machine has, what the daemon would use, and what is wrong."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import TextIO

from daemon.errors import CutoutError
from daemon.pipeline.model import choose_device, load_model, parse_model_spec
from daemon.settings import Settings

VERSIONED = ("torch", "transformers", "opencv-python-headless", "numpy", "watchdog", "torchvision", "timm")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


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
        return Check(name, True, probe())
    except CutoutError as exc:
        return Check(name, False, str(exc), fix)


def check_device(settings: Settings) -> Check:
    def probe() -> str:
        choice = choose_device(settings.model.device)
        return f"{choice.device} ({choice.reason})"

    return _guarded("device", "set model.device to auto (or --device auto)", probe)


def check_model(settings: Settings) -> Check:
    def probe() -> str:
        spec = parse_model_spec(settings.model.name)
        device = choose_device(settings.model.device)
        loaded = load_model(
            spec, device=device, revision=settings.model.revision, offline=settings.model.offline,
            size=settings.pipeline.target_size,
        )
        return f"{spec} loads on {device.device} from {loaded.origin}"

    fix = "fix the model setting (model.name / --model), or fetch it once with network access: cutout model fetch"
    return _guarded("model", fix, probe)


def run_checks(settings: Settings) -> Iterator[Check]:
    yield Check("versions", True, package_versions())
    yield check_device(settings)
    yield check_model(settings)


def report(checks: Iterator[Check], *, out: TextIO) -> int:
    """Print each check as it completes; 1 when any failed."""
    failed = 0
    for check in checks:
        print(f"[{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}", file=out, flush=True)
        if not check.ok:
            failed += 1
            print(f"       fix: {check.fix}", file=out)
    return 1 if failed else 0
