"""A stand-in for the Hugging Face hub behind daemon.fetch's one network seam (`Downloader`).

`FakeHub` resolves refs to commits and lays each download out in a *real* hub cache exactly
as huggingface_hub does (`models--org--name/blobs/<sha256>`, `snapshots/<commit>/<file>` as
relative symlinks into blobs, `refs/<branch>` holding the commit), so everything after the
download (pinning, offline loading through transformers, doctor's cache check) runs for real.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from daemon.fetch import Snapshot

COMMIT_A = "a" * 8 + "1" * 32
COMMIT_B = "b" * 8 + "2" * 32
_COMMIT = re.compile(r"[0-9a-f]{40}")

BROKEN_MODEL_CODE = 'raise RuntimeError("this revision must never be loaded")\n'


def unique_repo() -> str:
    """A repo id no other test uses: the hub cache and transformers' module cache are per session."""
    return f"cutout-tests/tiny-{uuid.uuid4().hex[:12]}"


def repo_folder(cache: Path, repo: str) -> Path:
    return cache / f"models--{repo.replace('/', '--')}"


def lay_out_snapshot(cache: Path, *, repo: str, commit: str, source: Path, ref: str | None) -> Path:
    """Copy `source`'s files into the cache as the snapshot of `commit`; point `ref` at it."""
    storage = repo_folder(cache, repo)
    snapshot = storage / "snapshots" / commit
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
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
    """Repos whose refs name commits, each commit a folder of files to serve."""

    trees: dict[str, Path]  # commit -> folder with that revision's files
    refs: dict[str, str] = field(default_factory=lambda: {"main": COMMIT_A})
    calls: list[tuple[str, str | None, bool]] = field(default_factory=list)

    def __call__(self, *, repo: str, revision: str | None, cache: Path, progress: bool) -> Snapshot:
        self.calls.append((repo, revision, progress))
        wanted = revision or "main"
        commit = wanted if _COMMIT.fullmatch(wanted) else self.refs[wanted]
        ref = None if commit == wanted else wanted
        folder = lay_out_snapshot(cache, repo=repo, commit=commit, source=self.trees[commit], ref=ref)
        return Snapshot(commit=commit, folder=folder)


def broken_model_dir(good: Path, target: Path) -> Path:
    """`good`'s files, but model code that raises on import: loading it proves the wrong revision ran."""
    target.mkdir(parents=True, exist_ok=True)
    for path in good.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    (target / "birefnet.py").write_text(BROKEN_MODEL_CODE)
    return target
