"""Stand-ins that tests and benchmarks share, shipped with the package (like httpx's MockTransport).
(The throwaway PostgreSQL server acts as root: it lives in tests/pgserver.py, never in the wheel.)

    FakeClock     a clock a test moves by hand: `clock.advance(5)` instead of `sleep(5)`
    BrightModel   a `MatteModel` in plain numpy: foreground where the image is bright
    FakeHub       a `fetch.Downloader` that lays a local folder out as a real hub snapshot
    wait_until    poll a condition, failing with what was awaited

Everything here is real code doing a small job for real: the model computes a true
matte (the same rule as the tiny torch models in the tests), the hub writes a cache
that huggingface_hub and transformers then read. Nothing here imports torch or OpenCV.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from daemon.models.fetch import Snapshot
from daemon.pipeline.constants import IMAGENET_MEAN, IMAGENET_STD
from daemon.pipeline.matte import FloatArray

BRIGHTNESS_THRESHOLD = 0.6
"""Foreground is a mean RGB / 255 above this: mid-grey padding (127) stays background."""
LOGIT_SCALE = 40.0
"""Logits are this times (brightness - threshold): steep, so the matte is near 0 or 1."""
COMMIT_A = "a" * 8 + "1" * 32
_COMMIT = re.compile(r"[0-9a-f]{40}")


class FakeClock:
    """A clock the test moves by hand; pass it wherever the code takes `clock=`."""

    def __init__(self, start: float = 10_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class BrightModel:
    """The tiny models' rule in plain numpy, behind the MatteModel Protocol: fast and exact."""

    def __init__(self, *, threshold: float = BRIGHTNESS_THRESHOLD, scale: float = LOGIT_SCALE) -> None:
        self.threshold, self.scale = threshold, scale
        self.calls = 0

    def predict(self, batch: FloatArray) -> FloatArray:
        self.calls += 1
        mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(3, 1, 1)
        std = np.asarray(IMAGENET_STD, np.float32).reshape(3, 1, 1)
        brightness = (batch[0] * std + mean).mean(axis=0)
        logits = self.scale * (brightness - self.threshold)
        matte: FloatArray = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        return matte


def wait_until(condition: Callable[[], bool], *, what: str, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Return once `condition()` holds; raise TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --- The hub ---------------------------------------------------------------------------------
def repo_folder(cache: Path, repo: str) -> Path:
    return cache / f"models--{repo.replace('/', '--')}"


def lay_out_snapshot(
    cache: Path, *, repo: str, commit: str, source: Path, ref: str | None, only: tuple[str, ...] | None = None
) -> Path:
    """Copy `source`'s files (or `only` those) into the cache as the snapshot of `commit`, exactly
    as huggingface_hub lays it out (blobs by sha256, snapshot files as relative symlinks into
    them); point `ref` at it."""
    storage = repo_folder(cache, repo)
    snapshot = storage / "snapshots" / commit
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        if only is None or path.relative_to(source).as_posix() in only:
            _link_blob(storage, snapshot / path.relative_to(source), data=path.read_bytes())
    if ref is not None:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)  # no newline, like huggingface_hub
    return snapshot


def _link_blob(storage: Path, target: Path, *, data: bytes) -> None:
    blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    target.symlink_to(os.path.relpath(blob, target.parent))


@dataclass
class FakeHub:
    """Repos whose refs name commits, each commit a folder of files to serve (a `Downloader`)."""

    trees: dict[str, Path]  # commit -> folder with that revision's files
    refs: dict[str, str] = field(default_factory=lambda: {"main": COMMIT_A})
    calls: list[tuple[str, str | None, bool]] = field(default_factory=list)
    only: list[tuple[str, ...] | None] = field(default_factory=list)
    """Each call's `only` (None: the whole snapshot)."""

    def __call__(
        self, *, repo: str, revision: str | None, cache: Path, progress: bool, only: tuple[str, ...] | None = None
    ) -> Snapshot:
        self.calls.append((repo, revision, progress))
        self.only.append(only)
        wanted = revision or "main"
        commit = wanted if _COMMIT.fullmatch(wanted) else self.refs[wanted]
        ref = None if commit == wanted else wanted
        folder = lay_out_snapshot(cache, repo=repo, commit=commit, source=self.trees[commit], ref=ref, only=only)
        return Snapshot(commit=commit, folder=folder)
