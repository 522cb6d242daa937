"""The end check of the soak run: what every input the ledger knows became, and what else is there.

Every name the soak makes carries a unique serial (`atomic-00042.jpg`), kept in its
cutout (`atomic-00042.png`, or `atomic-00042.jpg.png` if the daemon chose another
name) and its quarantine copy (`atomic-00042 (2).jpg`). So any file found in the
output or quarantine folder can be traced to the input it came from, and a second
result of one input (a duplicate) is told from a result nobody asked for (an orphan).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.soak_chaos import Entry
from daemon.atomic import is_temp_name
from daemon.folders.claims import CLAIM_FILE

ERROR_SUFFIX = ".error.json"
SERIAL = re.compile(r"-(\d{5})(?=[.( ])")
EXAMPLES = 10
"""Names kept per problem in the result (the counts are complete)."""


@dataclass
class Verdict:
    """Counts of each outcome and each failure, with a few example names per failure."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    """Quarantine reasons of the bad inputs, as `expected->found`."""

    def add(self, key: str, name: str | None = None) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        if name is not None:
            shown = self.examples.setdefault(key, [])
            if len(shown) < EXAMPLES:
                shown.append(name)

    def get(self, key: str) -> int:
        return self.counts.get(key, 0)


FAILURES = (
    "lost", "duplicated", "wrongly_quarantined", "missing_outputs", "invalid_outputs", "not_quarantined",
    "missing_reason", "output_for_bad", "orphan_outputs", "unexpected_quarantine", "temp_files", "unknown_inputs",
    "written_through_links",
)
"""Counts that must be 0. `reason_mismatch` and `stale_outputs` are reported, not failed: the
reason is the daemon's diagnosis (a random-bytes file may be judged truncated or undecodable), and
a renamed-away name may keep the cutout it had."""


def files_under(root: Path) -> list[PurePosixPath]:
    found: list[PurePosixPath] = []
    for folder, _, names in os.walk(root):
        base = Path(folder).relative_to(root)
        found.extend(PurePosixPath((base / name).as_posix()) for name in names)
    return found


def serial_of(name: str) -> int | None:
    match = SERIAL.search(name)
    return int(match.group(1)) if match else None


def valid_cutout(path: Path) -> str | None:
    """Why `path` is not a whole RGBA PNG with some opaque pixels; None when it is."""
    try:
        with Image.open(path) as image:
            if image.format != "PNG" or image.mode != "RGBA":
                return f"{image.format} {image.mode}"
            image.load()
            high = int(np.asarray(image.getchannel("A")).max())
    except Exception as exc:  # noqa: BLE001  (any decoder error means an invalid file)
        return f"{type(exc).__name__}: {exc}"
    return None if high > 0 else "fully transparent"


def check(
    *, entries: list[Entry], hot: Path, output: Path, quarantine: Path, state: Path, link_targets: Sequence[Path] = (),
) -> Verdict:
    """Compare the folders with the ledger; see FAILURES for what counts against the daemon."""
    verdict = Verdict()
    for target in link_targets:  # what links planted in the output folder point to: never written
        for rel in files_under(target):
            verdict.add("written_through_links", f"{target.name}/{rel}")
    by_serial: dict[int, tuple[Entry, str]] = {}
    for entry in entries:
        for name in (entry.rel, *entry.former):
            serial = serial_of(PurePosixPath(name).name)
            assert serial is not None, name
            by_serial[serial] = (entry, name)
    hot_files = set(files_under(hot))
    _temp_files(verdict, {"input": hot, "output": output, "quarantine": quarantine, "state": state})
    outputs = _results_by_entry(verdict, output, by_serial, kind="output")
    originals, reports = _quarantine(verdict, quarantine, by_serial)
    for entry in entries:
        rel = PurePosixPath(entry.rel)
        _count_kind(verdict, entry)
        if entry.good:
            _check_good(verdict, entry, rel, hot_files=hot_files, outputs=outputs.get(id(entry), []),
                        quarantined=originals.get(id(entry), []), output=output)
        else:
            _check_bad(verdict, entry, rel, hot_files=hot_files, outputs=outputs.get(id(entry), []),
                       quarantined=originals.get(id(entry), []), reports=reports)
    known = {PurePosixPath(e.rel) for e in entries}
    for rel in hot_files - known:
        if not rel.name.startswith("."):
            verdict.add("unknown_inputs", rel.as_posix())
    return verdict


def _count_kind(verdict: Verdict, entry: Entry) -> None:
    verdict.add("files")
    verdict.add("good" if entry.good else "bad")
    if entry.former:
        verdict.add("renamed")


def _temp_files(verdict: Verdict, roots: dict[str, Path]) -> None:
    """The daemon's temp names anywhere; in its output and quarantine folders, any hidden file."""
    for role, root in roots.items():
        for rel in files_under(root):
            hidden = rel.name.startswith(".") and rel.name != CLAIM_FILE  # the daemon's claim on its folder: no leftover
            if is_temp_name(rel.name) or (role in ("output", "quarantine") and hidden):
                verdict.add("temp_files", f"{role}/{rel}")
            elif rel.name.endswith(".soak-part"):
                verdict.add("soak_temp_files", f"{role}/{rel}")  # the soak's own: a harness bug


def _results_by_entry(
    verdict: Verdict, root: Path, by_serial: dict[int, tuple[Entry, str]], *, kind: str
) -> dict[int, list[tuple[PurePosixPath, str]]]:
    """Files under `root` grouped by the entry they belong to (id(entry) -> (path, name it came from))."""
    grouped: dict[int, list[tuple[PurePosixPath, str]]] = {}
    for rel in files_under(root):
        if rel.name.startswith(".") or rel.name.endswith(ERROR_SUFFIX):
            continue
        serial = serial_of(rel.name)
        if serial is None or serial not in by_serial:
            verdict.add(f"orphan_{kind}s" if kind == "output" else "unexpected_quarantine", rel.as_posix())
            continue
        entry, name = by_serial[serial]
        grouped.setdefault(id(entry), []).append((rel, name))
    return grouped


def _quarantine(
    verdict: Verdict, quarantine: Path, by_serial: dict[int, tuple[Entry, str]]
) -> tuple[dict[int, list[tuple[PurePosixPath, str]]], dict[PurePosixPath, str | None]]:
    """Quarantined originals by entry, and every report's reason by the original it describes."""
    originals = _results_by_entry(verdict, quarantine, by_serial, kind="quarantine")
    reports: dict[PurePosixPath, str | None] = {}
    for rel in files_under(quarantine):
        if rel.name.endswith(ERROR_SUFFIX):
            original = rel.with_name(rel.name.removesuffix(ERROR_SUFFIX))
            reports[original] = _reason(quarantine / rel)
            if not (quarantine / original).exists():
                verdict.add("report_without_original", rel.as_posix())
    return originals, reports


def _reason(path: Path) -> str | None:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    reason = data.get("reason") if isinstance(data, dict) else None
    return reason if isinstance(reason, str) and reason else None


def _check_good(
    verdict: Verdict, entry: Entry, rel: PurePosixPath, *, hot_files: set[PurePosixPath],
    outputs: list[tuple[PurePosixPath, str]], quarantined: list[tuple[PurePosixPath, str]], output: Path,
) -> None:
    expected = rel.with_suffix(".png")
    stale = {PurePosixPath(name).with_suffix(".png") for name in entry.former}
    if quarantined:
        verdict.add("wrongly_quarantined", f"{entry.rel} ({entry.kind}) -> {quarantined[0][0]}")
    elif rel not in hot_files:
        verdict.add("lost", f"{entry.rel} ({entry.kind})")
    found = [path for path, _ in outputs]
    if expected not in found:
        if not quarantined:
            verdict.add("missing_outputs", f"{entry.rel} ({entry.kind})")
    else:
        problem = valid_cutout(output / expected)
        if problem:
            verdict.add("invalid_outputs", f"{expected}: {problem}")
        else:
            verdict.add("valid_outputs")
    for path in found:
        if path in stale:
            verdict.add("stale_outputs", path.as_posix())
        elif path != expected:
            verdict.add("duplicated", f"{path} (of {entry.rel})")


def _check_bad(
    verdict: Verdict, entry: Entry, rel: PurePosixPath, *, hot_files: set[PurePosixPath],
    outputs: list[tuple[PurePosixPath, str]], quarantined: list[tuple[PurePosixPath, str]],
    reports: dict[PurePosixPath, str | None],
) -> None:
    for path, _ in outputs:
        verdict.add("output_for_bad", f"{path} (of {entry.rel}, {entry.kind})")
    places = [path for path, _ in quarantined]
    if rel not in places:
        verdict.add("not_quarantined" if rel in hot_files else "lost", f"{entry.rel} ({entry.kind})")
    else:
        reason = reports.get(rel)
        if reason is None:
            verdict.add("missing_reason", entry.rel)
        else:
            verdict.add("quarantined_with_reason")
            key = f"{entry.reason}->{reason}"
            verdict.reasons[key] = verdict.reasons.get(key, 0) + 1
            if reason != entry.reason:
                verdict.add("reason_mismatch", f"{entry.rel}: {key}")
        if rel in hot_files:
            verdict.add("duplicated", f"{entry.rel} is both in quarantine and in the hot folder")
    for path in places:
        if path != rel:
            verdict.add("duplicated", f"{path} (of {entry.rel})")
