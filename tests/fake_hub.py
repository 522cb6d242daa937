"""Test-only companions of `daemon.testing.FakeHub`, the stand-in for the Hugging Face hub.

`FakeHub` lays each download out in a *real* hub cache exactly as huggingface_hub does, so
everything after the download (pinning, offline loading through transformers, doctor's
cache check) runs for real. Here: fixed commits, unique repo names and a broken revision.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from daemon.testing import COMMIT_A, FakeHub, lay_out_snapshot, repo_folder

__all__ = ["COMMIT_A", "COMMIT_B", "FakeHub", "broken_model_dir", "lay_out_snapshot", "repo_folder", "unique_repo"]

COMMIT_B = "b" * 8 + "2" * 32

BROKEN_MODEL_CODE = 'raise RuntimeError("this revision must never be loaded")\n'


def unique_repo() -> str:
    """A repo id no other test uses: the hub cache and transformers' module cache are per session."""
    return f"cutout-tests/tiny-{uuid.uuid4().hex[:12]}"


def broken_model_dir(good: Path, target: Path) -> Path:
    """`good`'s files, but model code that raises on import: loading it proves the wrong revision ran."""
    target.mkdir(parents=True, exist_ok=True)
    for path in good.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    (target / "birefnet.py").write_text(BROKEN_MODEL_CODE)
    return target
