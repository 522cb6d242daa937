"""The dashboard end to end: a real `cutout watch` (the tiny TorchScript model) serving it, a real
headless Chromium (Debian's `chromium`, driven by Playwright; `.ci/run` installs it), and
`cutout dashboard` as its own process.

The browser test saves a screenshot of the page as a test artefact (in the test's temp
folder, and in `$CUTOUT_SCREENSHOTS` when set: `docs/dashboard.png` is made that way).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFilter

from tests.harness import DaemonProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS_ENV = "CUTOUT_SCREENSHOTS"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def product_photo(path: Path, *, shape: str, color: tuple[int, int, int], size: tuple[int, int] = (480, 360)) -> Path:
    """A bright object on a dark, slightly lit studio backdrop (the tiny model keeps what is bright)."""
    width, height = size
    image = Image.new("RGB", size, (28, 30, 36))
    draw = ImageDraw.Draw(image)
    for y in range(height):  # a soft vertical light falloff
        shade = int(28 + 18 * (1 - abs(y - height * 0.4) / height))
        draw.line([(0, y), (width, y)], fill=(shade, shade + 2, shade + 8))
    box = (width * 0.28, height * 0.2, width * 0.72, height * 0.82)
    if shape == "ellipse":
        draw.ellipse(box, fill=color)
    elif shape == "box":
        draw.rounded_rectangle(box, radius=28, fill=color)
    elif shape == "bottle":
        cx = width / 2
        draw.rounded_rectangle((cx - 55, height * 0.35, cx + 55, height * 0.85), radius=24, fill=color)
        draw.rectangle((cx - 18, height * 0.15, cx + 18, height * 0.38), fill=color)
    elif shape == "star":
        cx, cy, r = width / 2, height / 2, height * 0.36
        import math

        points = [(cx + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
                   cy - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5)) for i in range(10)]
        draw.polygon(points, fill=color)
    elif shape == "shoe":
        draw.rounded_rectangle((width * 0.2, height * 0.55, width * 0.8, height * 0.75), radius=20, fill=color)
        draw.rounded_rectangle((width * 0.2, height * 0.3, width * 0.45, height * 0.7), radius=30, fill=color)
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=92)
    return path


CATALOGUE = [
    ("shoot/orange-vase.jpg", "bottle", (250, 170, 80)),
    ("shoot/teal-bowl.jpg", "ellipse", (110, 225, 230)),
    ("shoot/gift-box.jpg", "box", (250, 200, 120)),
    ("shoot/pink-star.jpg", "star", (250, 160, 210)),
    ("shoot/lime-sneaker.jpg", "shoe", (200, 245, 120)),
    ("shoot/lemon.jpg", "ellipse", (250, 240, 110)),
]


@pytest.fixture(scope="module")
def playwright_browser():  # type: ignore[no-untyped-def]
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test, but there is no chromium (.ci/run installs it)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def test_a_browser_sees_cutouts_arrive_opens_before_after_and_retries_a_quarantined_file(
    tmp_path: Path, torchscript_model: Path, started: list[DaemonProcess], playwright_browser,  # type: ignore[no-untyped-def]
) -> None:
    port = free_port()
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings={
        "watch": {"settle_seconds": 0.3, "incomplete_timeout_seconds": 2.0},
        "dashboard": {"enabled": True, "port": port, "thumbnail_px": 240},
    })
    started.append(daemon)
    for name, shape, color in CATALOGUE:
        product_photo(daemon.input / name, shape=shape, color=color)
    Image.new("RGB", (480, 360), (24, 24, 28)).save(daemon.input / "shoot/underexposed.jpg")  # no subject
    data = (daemon.input / "shoot/lemon.jpg").read_bytes()
    (daemon.input / "card/IMG_0042.jpg").parent.mkdir(parents=True)
    (daemon.input / "card/IMG_0042.jpg").write_bytes(data[: len(data) // 2])  # a copy that never finished
    daemon.start()
    daemon.wait_for(lambda: len(daemon.outputs()) == 6 and len(daemon.quarantined()) == 2, what="the first shoot")

    # bypass_csp: the page's strict policy also refuses Playwright's own polling scripts
    page = playwright_browser.new_page(viewport={"width": 1280, "height": 720}, bypass_csp=True)
    page.goto(f"http://127.0.0.1:{port}/")
    assert page.locator("a.thumb").count() == 6
    assert page.locator("[data-daemon=running]").count() == 1
    page.evaluate("window.__sameDocument = true")

    # a new file: its thumbnail appears without a reload
    product_photo(daemon.input / "shoot/new-arrival.jpg", shape="box", color=(170, 200, 250))
    arrival = page.locator('a.thumb[data-source="shoot/new-arrival.jpg"]')
    arrival.wait_for(timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True
    page.wait_for_function("Array.from(document.querySelectorAll('a.thumb img')).every(i => i.complete && i.naturalWidth > 0)")

    # before / after
    arrival.click()
    page.locator("#overlay:not([hidden]) img.after").wait_for()
    page.wait_for_function("['before', 'after'].every(c => { const i = document.querySelector('#overlay img.' + c);"
                           " return i && i.complete && i.naturalWidth > 0; })")
    assert "shoot/new-arrival.jpg" in page.locator("#overlay h2").inner_text()
    assert "inference" in page.locator("#overlay .stages").inner_text()
    _artefact(page, tmp_path / "before-after.png", full_page=False)  # the overlay covers the window
    page.keyboard.press("Escape")
    page.locator("#overlay").wait_for(state="hidden")
    assert _artefact(page, tmp_path / "dashboard.png").stat().st_size > 10_000

    # Retry: the photographer re-exposed the file in quarantine; the dashboard sends it back
    product_photo(daemon.quarantine / "shoot/underexposed.jpg", shape="ellipse", color=(240, 220, 200))
    item = page.locator('li.qitem[data-file="shoot/underexposed.jpg"]')
    item.locator("button").click()
    item.wait_for(state="detached", timeout=15_000)
    page.locator('a.thumb[data-source="shoot/underexposed.jpg"]').wait_for(timeout=30_000)
    assert "shoot/underexposed.png" in daemon.outputs()
    assert page.locator('li.qitem[data-file="card/IMG_0042.jpg"]').count() == 1  # the other stays

    # a phone: nothing wider than the screen
    phone = playwright_browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(f"http://127.0.0.1:{port}/")  # with the policy enforced: the page's own script still runs
    phone.locator("#updated", has_text="updated").wait_for(timeout=10_000)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.close()
    page.close()
    assert daemon.stop() == 0  # SIGTERM stops the dashboard with the daemon


def test_a_browser_approves_one_waiting_cut_out_and_rejects_another_in_the_review_view(
    tmp_path: Path, torchscript_model: Path, started: list[DaemonProcess], playwright_browser,  # type: ignore[no-untyped-def]
) -> None:
    from tests.conftest import foggy_image, write_image

    port, review = free_port(), tmp_path / "d" / "review"
    daemon = DaemonProcess(tmp_path / "d", model=str(torchscript_model), settings={
        "watch": {"settle_seconds": 0.3, "incomplete_timeout_seconds": 2.0},
        "dashboard": {"enabled": True, "port": port, "thumbnail_px": 160},
        "review": {"folder": str(review)},
    })
    started.append(daemon)
    write_image(daemon.input / "shoot/fog-a.png", foggy_image(240, 240, seed=1))  # the model is unsure: doubtful
    write_image(daemon.input / "shoot/fog-b.png", foggy_image(240, 240, seed=2))
    product_photo(daemon.input / "shoot/teal-bowl.jpg", shape="ellipse", color=(110, 225, 230))  # a clean one
    daemon.start()
    waiting = lambda: sorted(p.relative_to(review).as_posix() for p in review.rglob("*.png"))  # noqa: E731
    daemon.wait_for(lambda: waiting() == ["shoot/fog-a.png", "shoot/fog-b.png"] and "shoot/teal-bowl.png"
                    in daemon.outputs(), what="two cut-outs waiting for review and one delivered")

    page = playwright_browser.new_page(viewport={"width": 1280, "height": 720}, bypass_csp=True)
    page.goto(f"http://127.0.0.1:{port}/")
    page.locator('nav a[href="/review"]').click()
    page.wait_for_url("**/review")
    rows = page.locator("tr.rv")
    assert rows.count() == 2
    page.wait_for_function("Array.from(document.querySelectorAll('tr.rv img'))"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("tr.rv .white img").count() == 2 and page.locator("tr.rv .checker img").count() == 2
    parts = page.locator("tr.rv ul.parts").first.inner_text().split("\n")  # what made it doubtful, largest first
    assert parts and all(re.fullmatch(r"[a-z_]+ [01]\.\d\d", part) for part in parts), parts

    page.locator("th a.sort[data-sort=file]").click()  # sorted by file, A to Z
    page.wait_for_url("**/review?sort=file")
    assert [rows.nth(i).get_attribute("data-source") for i in range(2)] == ["shoot/fog-a.png", "shoot/fog-b.png"]

    first = page.locator('tr.rv[data-source="shoot/fog-a.png"]')
    first.locator("td.file a.pick").click()  # before / after, as for a done cut-out
    page.wait_for_function("['before', 'after'].every(c => { const i = document.querySelector('#overlay img.' + c);"
                           " return i && i.complete && i.naturalWidth > 0; })")
    assert "waiting for review" in page.locator("#overlay").inner_text()
    _artefact(page, tmp_path / "review-before-after.png", full_page=False)
    page.keyboard.press("Escape")
    page.locator("#overlay").wait_for(state="hidden")
    _artefact(page, tmp_path / "review.png")

    first.locator("form.approve button").click()
    first.wait_for(state="detached", timeout=15_000)
    second = page.locator('tr.rv[data-source="shoot/fog-b.png"]')
    second.locator("form.reject input[name=reason]").fill("the fog is not the product")
    second.locator("form.reject button").click()
    second.wait_for(state="detached", timeout=15_000)
    page.locator("#review .empty", has_text="Nothing waits for review").wait_for(timeout=10_000)

    assert waiting() == [] and "shoot/fog-a.png" in daemon.outputs()
    assert daemon.quarantined()["shoot/fog-b.png"] == "rejected"
    report = (daemon.quarantine / "shoot/fog-b.png.error.json").read_text()
    assert "the fog is not the product" in report
    assert (daemon.quarantine / "shoot/fog-b.png.cutout-fog-b.png").exists()  # its cut-out beside it
    page.close()
    assert daemon.stop() == 0


def _artefact(page, path: Path, *, full_page: bool = True) -> Path:  # type: ignore[no-untyped-def]
    """A screenshot in the test's folder, and in $CUTOUT_SCREENSHOTS when set."""
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get(SCREENSHOTS_ENV):
        Path(os.environ[SCREENSHOTS_ENV]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ[SCREENSHOTS_ENV]) / path.name)
    return path


def test_cutout_dashboard_runs_alone_and_stops_on_sigterm(tmp_path: Path) -> None:
    from daemon.store.sqlite import JobQueue

    state = tmp_path / "state"
    JobQueue(state / "queue.sqlite3").close()
    port = free_port()
    args = [sys.executable, "-m", "daemon", "dashboard", "--input", str(tmp_path / "in"), "--output",
            str(tmp_path / "out"), "--state", str(state), "--port", str(port), "--bind", "0.0.0.0"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            except urllib.error.HTTPError as exc:
                assert exc.code == 401  # exposed: the token is needed
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "the dashboard did not start"
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    token = (state / "dashboard-token").read_text()
    assert process.returncode == 0
    assert f"needs the token in {state / 'dashboard-token'}" in output and token not in output
