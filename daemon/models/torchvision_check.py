"""Does torchvision fit the installed torch? `cutout doctor`'s check, decided on what a fresh
interpreter reports.

pip installs `torch==X` over a torchvision built for another torch with only a warning
(running the README's test pin after the run command did exactly that). The version list
still looks fine, but `import torchvision` now fails with "operator torchvision::nms does
not exist", and so does every Hugging Face BiRefNet, whose code imports it. So the check
imports torchvision for real, in a separate interpreter (a broken import must not take
the doctor down, and a module once imported cannot be imported afresh), and compares
torch with torchvision's own requirement on it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from daemon.pipeline.installs import birefnet_install_command, matching_torchvision_command

Status = Literal["ok", "warn", "FAIL", "skip"]
PROBE_TIMEOUT = 300.0
"""Seconds for a fresh interpreter to import torch and torchvision (a cold disk is slow)."""

_PROBE = """
import json
from importlib import metadata

def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None

installed = {"torch": version("torch"), "torchvision": version("torchvision")}
installed["requires"] = metadata.requires("torchvision") or [] if installed["torchvision"] else []
print(json.dumps(installed), flush=True)  # first: an import that kills the interpreter must not lose it
if installed["torchvision"] is not None:
    error = None
    try:
        import torch, torchvision
        torch.ops.torchvision.nms  # the compiled operators: what fails when torchvision does not fit torch
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"error": error}), flush=True)
"""


@dataclass(frozen=True, kw_only=True)
class TorchFacts:
    """What one Python environment has of torch and torchvision."""

    torch: str | None
    torchvision: str | None
    torch_requirement: str | None = None
    """torchvision's requirement on torch, e.g. '==2.13.0' or '>=2.14.0'."""
    error: str | None = None
    """What importing torchvision and looking up its operators said; None when both worked."""


@dataclass(frozen=True)
class Verdict:
    status: Status
    detail: str
    fix: str = ""


def read_facts(*, python: str = sys.executable, env: Mapping[str, str] | None = None) -> TorchFacts:
    """Ask `python` (this environment's, by default) what it has, and import torchvision there."""
    try:
        done = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, env=env,
                              timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return TorchFacts(torch=None, torchvision=None, error=f"could not run {python}: {exc}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        return TorchFacts(torch=None, torchvision=None, error=f"{python} exited with status {done.returncode}: "
                          f"{_last_line(done.stderr)}")
    installed = json.loads(lines[0])
    if installed["torchvision"] is None:
        error = None
    elif len(lines) > 1:
        error = json.loads(lines[1])["error"]
    else:  # importing it killed the interpreter: a crash, not an exception
        error = f"importing it ended the interpreter with status {done.returncode}: {_last_line(done.stderr)}"
    return TorchFacts(torch=installed["torch"], torchvision=installed["torchvision"],
                      torch_requirement=torch_requirement(installed["requires"]), error=error)


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1]


def torch_requirement(requires: Iterable[str]) -> str | None:
    """torchvision's requirement on torch from its Requires-Dist lines ('torch (==2.13.0)', 'torch>=2.14')."""
    for line in requires:
        requirement, _, marker = line.partition(";")
        if marker.strip():
            continue  # an extra's or a platform's requirement
        found = re.fullmatch(r"\s*torch\s*\(?\s*([<>=!~][^()]*)?\)?\s*", requirement)  # not torchaudio
        if found:
            return (found.group(1) or "").replace(" ", "") or None
    return None


def _release(version: str) -> tuple[int, ...]:
    """'2.13.0+cpu' -> (2, 13, 0); pre-release and dev suffixes are ignored."""
    numbers = re.match(r"\d+(?:\.\d+)*", version.split("+")[0])
    return tuple(int(part) for part in numbers.group(0).split(".")) if numbers else ()


def _padded(release: tuple[int, ...], width: int) -> tuple[int, ...]:
    return release + (0,) * (width - len(release))


def satisfies(version: str, requirement: str) -> bool | None:
    """Whether a torch version meets a requirement such as '==2.13.0' or '>=2.14.0,<3';
    None for a form this does not read (then the real import decides alone)."""
    have = _release(version)
    for part in requirement.split(","):
        found = re.fullmatch(r"(==|!=|>=|<=|>|<)([\d.]+)(\.\*)?", part)
        if found is None or not have:
            return None
        operator, wanted, wildcard = found.group(1), _release(found.group(2)), found.group(3)
        width = max(len(have), len(wanted))
        mine = have[: len(wanted)] if wildcard else _padded(have, width)
        theirs = wanted if wildcard else _padded(wanted, width)
        if not _compare(mine, operator, theirs):
            return False
    return True


def _compare(have: tuple[int, ...], operator: str, wanted: tuple[int, ...]) -> bool:
    return {
        "==": have == wanted, "!=": have != wanted, ">=": have >= wanted,
        "<=": have <= wanted, ">": have > wanted, "<": have < wanted,
    }[operator]


def verdict(facts: TorchFacts, *, needed: bool) -> Verdict:
    """The check's outcome; `needed`: the configured model is a hub model, whose code imports torchvision."""
    if facts.torch is None:
        return Verdict("FAIL", f"torch cannot be found in this environment ({facts.error or 'not installed'})",
                       "reinstall cutout in this environment: pip install -e . (in the cutout checkout)")
    if facts.torchvision is None:
        if needed:
            return Verdict("FAIL", "torchvision is not installed, and the hub model's code imports it",
                           birefnet_install_command(facts.torch))
        return Verdict("skip", "torchvision is not installed: only hub models (hf:...) and TorchScript "
                       "exports of BiRefNet need it")
    problem = _mismatch(facts)
    if problem is None:
        return Verdict("ok", f"torchvision {facts.torchvision} loads its operators with torch {facts.torch}")
    consequence = "no Hugging Face model loads" if needed else "it matters only for hub models and BiRefNet exports"
    return Verdict("FAIL" if needed else "warn", f"{problem}, so {consequence}", matching_torchvision_command(facts.torch))


def _mismatch(facts: TorchFacts) -> str | None:
    """What is wrong between torch and torchvision, or None."""
    torch = facts.torch or ""
    wanted = facts.torch_requirement
    conflict = wanted is not None and satisfies(torch, wanted) is False
    if not conflict and facts.error is None:
        return None
    versions = (f"torchvision {facts.torchvision} requires torch{wanted} but torch {torch} is installed"
                if conflict else f"torchvision {facts.torchvision} does not fit torch {torch} "
                "(built for another release or build, e.g. a CUDA torchvision on a CPU-only torch)")
    return versions + (f"; importing it fails ({facts.error})" if facts.error else "")
