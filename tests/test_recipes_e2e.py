"""Recipes through the real daemon: subfolders routed to recipes, and `cutout reprocess`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import harness
from tests.conftest import subject_image, write_image

BOX = (100, 80, 300, 220)
RECIPES = {
    "white": {"format": "jpeg", "background": "#ffffff", "crop": "canvas", "canvas": [320, 320], "margin": "10%"},
    "tiff-mask": {"format": "tiff", "mask": "also"},
    "web": {"format": "webp", "subfolder": "web"},
}
ROUTES = [
    {"match": "shop/**", "recipes": ["white"]},
    {"match": "shop/sale/**", "recipes": ["web"]},  # never reached: shop/** matches first
    {"match": "retouch/**", "recipes": ["tiff-mask"]},
    {"match": "web/**", "recipes": ["web", "default"]},
]


@pytest.mark.slow
def test_three_subfolders_go_to_three_recipes_and_the_first_matching_route_wins(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    daemon = harness.DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings={
        "pipeline": {"target_size": 256}, "recipes": RECIPES, "routes": ROUTES})
    started.append(daemon)
    daemon.start()
    for name in ("shop/a.jpg", "shop/sale/b.jpg", "retouch/c.jpg", "web/d.jpg", "e.jpg"):
        write_image(daemon.input / name, subject_image(300, 400, BOX))
    expected = ["e.png", "retouch/c-mask.png", "retouch/c.tif", "shop/a.jpg", "shop/sale/b.jpg",
                "web/d.png", "web/web/d.webp"]
    daemon.wait_for(lambda: daemon.outputs() == expected, what="every recipe's files")
    assert daemon.stop() == 0

    with Image.open(daemon.output / "shop/sale/b.jpg") as white:
        assert (white.format, white.size) == ("JPEG", (320, 320))
    with Image.open(daemon.output / "retouch/c.tif") as tiff:
        assert tiff.format == "TIFF" and tiff.mode == "RGBA"
        alpha = np.asarray(tiff)[..., 3]
    with Image.open(daemon.output / "retouch/c-mask.png") as mask:
        assert np.array_equal(alpha, np.asarray(mask))
    done = {str(job["path"]): job for job in daemon.jobs("done")}
    assert done["web/d.jpg"]["also"] == [str(daemon.output / "web/d.png")]


@pytest.mark.slow
def test_reprocess_runs_done_files_again_with_the_changed_recipe_and_says_how_many(
    tmp_path: Path, torchscript_model: Path, started: list[harness.DaemonProcess]
) -> None:
    daemon = harness.DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings={
        "pipeline": {"target_size": 256}, "recipes": RECIPES, "routes": ROUTES[:1]})
    started.append(daemon)
    daemon.start()
    for name in ("shop/a.jpg", "shop/b.jpg", "c.jpg"):
        write_image(daemon.input / name, subject_image(300, 400, BOX))
    daemon.wait_for(lambda: len(daemon.jobs("done")) == 3, what="three cutouts")
    assert daemon.stop() == 0
    (daemon.output / "shop/a.jpg").unlink()  # a deleted output comes back only by reprocess
    before = daemon.config.read_text()
    assert "margin: 10%" in before
    daemon.config.write_text(before.replace("margin: 10%", "margin: 30%"))  # the recipe changes: restart
    daemon.start()
    daemon.wait_for(lambda: len(daemon.jobs("done")) == 3 and daemon.started_count() == 2, what="second start")
    assert daemon.outputs() == ["c.png", "shop/b.jpg"]  # a changed recipe alone reprocesses nothing
    again = subprocess.run([sys.executable, "-m", "daemon", "reprocess", "shop", "--config", str(daemon.config)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["queued again: 2 files"]
    daemon.wait_for(lambda: len(daemon.jobs("done")) == 5, what="the two shop files again")
    assert daemon.outputs() == ["c.png", "shop/a.jpg", "shop/b.jpg"]
    with Image.open(daemon.output / "shop/a.jpg") as white:  # 30 % margins: the subject is 40 % wide, not 80 %
        subject = np.asarray(white)[..., 1] < 245  # the subject's green is 230, the background's 255
    cols = np.flatnonzero(subject.any(axis=0))
    assert 0.35 * 320 < cols[-1] - cols[0] + 1 < 0.45 * 320
    assert sorted(str(job["path"]) for job in daemon.jobs("done")[3:]) == ["shop/a.jpg", "shop/b.jpg"]
    assert daemon.stop() == 0


@pytest.mark.slow
def test_skip_existing_after_a_killed_batch_does_only_the_files_it_had_not_finished(
    tmp_path: Path, torchscript_model: Path
) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    names = [f"shoot/{index:03d}.jpg" for index in range(40)]
    for name in names:
        write_image(source / name, subject_image(300, 400, BOX))
    config = tmp_path / "config.yaml"
    config.write_text("pipeline:\n  target_size: 256\nlogging:\n  format: json\n")
    command = [sys.executable, "-m", "daemon", "process", str(source), str(out), "--config", str(config),
               "--model", str(torchscript_model), "--device", "cpu"]
    batch = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list(out.rglob("*.png"))) < 5 and time.monotonic() < deadline and batch.poll() is None:
            time.sleep(0.02)
    finally:
        batch.kill()
        batch.wait()
    finished = sorted(p.relative_to(out).with_suffix(".jpg").as_posix() for p in out.rglob("*.png"))
    assert 5 <= len(finished) < len(names), "the kill came too late to leave work undone"

    resumed = subprocess.run([*command, "--skip-existing"], capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    done = [json.loads(line)["path"] for line in resumed.stderr.splitlines() + resumed.stdout.splitlines()
            if line.startswith("{") and '"image_done"' in line]
    assert sorted(done) == sorted(set(names) - set(finished))
    assert f"skipped: {len(finished)} (outputs already there)" in resumed.stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        name.replace(".jpg", ".png") for name in names)  # and no temp file the kill left behind

    forced = subprocess.run([*command, "--force"], capture_output=True, text=True, timeout=300, check=False)
    assert forced.returncode == 0 and f"done: {len(names)}  failed: 0  (" in forced.stdout
