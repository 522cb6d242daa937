"""The dashboard's endpoints over HTTP (Starlette's test client), on a real store with real jobs.

Each test builds a studio on disk: a real SQLite queue with a done job (its original and its
cutout on disk), two quarantined files of two reasons, a running and a pending job, and the
daemon's telemetry as the daemon publishes it. The browser test and the real server are in
tests/test_dashboard_e2e.py.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath as P
from typing import Any

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from daemon.companions.dashboard.app import Dashboard, create_app
from daemon.companions.dashboard.auth import TOKEN_COOKIE
from daemon.companions.dashboard.board import Board
from daemon.companions.dashboard.paths import open_file
from daemon.companions.dashboard.server import TOKEN_FILE, build_dashboard
from daemon.companions.dashboard.thumbs import ThumbCache, make_thumbnail
from daemon.companions.telemetry import Telemetry, TelemetryPublisher
from daemon.errors import QueueError
from daemon.folders.outputs import ErrorReport, Folders, error_file
from daemon.settings import Settings, load_settings, public_settings
from daemon.store.jobs import Fingerprint
from daemon.store.session import SessionRecord
from daemon.store.sqlite import JobQueue
from daemon.store.view import StoreView
from daemon.work.record import JobRecord

LOCAL = "http://127.0.0.1:8765"
TOKEN = "s3cret-token-0123456789"
WEBHOOK = "https://hooks.example.test/services/T0/B0/hush-hush-key"


@dataclass
class Studio:
    root: Path
    folders: Folders
    queue: JobQueue

    def settings(self, **overrides: object) -> Settings:
        f = self.folders
        return load_settings(overrides={
            "folders.input": f.input, "folders.output": f.output, "folders.quarantine": f.quarantine,
            "folders.archive": f.archive, "folders.state": f.state, **overrides,
        })

    def dashboard(self, **overrides: object) -> Dashboard:
        return build_dashboard(self.settings(**overrides), self.folders)

    def client(self, **overrides: object) -> TestClient:
        return self.open(**overrides)[0]

    def open(self, **overrides: object) -> tuple[TestClient, Dashboard]:
        dash = self.dashboard(**overrides)
        return TestClient(create_app(dash), base_url=LOCAL, follow_redirects=False), dash


def _image(path: Path, size: tuple[int, int], *, mode: str = "RGB", color: Any = (200, 120, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def _done(queue: JobQueue, folders: Folders, source: str) -> None:
    original = _image(folders.input / source, (400, 300))
    queue.offer(P(source), Fingerprint.of(original))
    job = queue.claim()
    assert job is not None
    _image(folders.output / job.output, (200, 160), mode="RGBA", color=(200, 120, 40, 180))
    assert queue.finish(job, content_hash="h", fingerprint=Fingerprint.of(original), publish=lambda: None)


def _quarantined(queue: JobQueue, folders: Folders, source: str, *, reason: str, message: str) -> None:
    path = folders.input / source
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an image")
    queue.offer(P(source), Fingerprint.of(path))
    job = queue.claim()
    assert job is not None
    assert queue.mark_failed(job, reason=reason, message=message, quarantine=P(source))
    (folders.quarantine / source).parent.mkdir(parents=True, exist_ok=True)
    path.rename(folders.quarantine / source)
    report = ErrorReport(file=source, reason=reason, message=message, attempts=1, first_seen=0.0, last_attempt=0.0)
    error_file(folders.quarantine / source).write_bytes(report.to_json(quarantined_as=folders.quarantine / source))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The studio, made once (a few dozen fsyncs); each test gets a copy of it."""
    root = tmp_path_factory.mktemp("studio")
    folders = _folders(root)
    for folder in (folders.input, folders.output, folders.quarantine, folders.state):
        folder.mkdir()
    queue = JobQueue(folders.state / "queue.sqlite3")
    _done(queue, folders, "shoot/a.jpg")
    _quarantined(queue, folders, "bad1.jpg", reason="undecodable", message="cannot identify image file")
    _quarantined(queue, folders, "bad2.jpg", reason="undecodable", message="cannot identify image file")
    _quarantined(queue, folders, "dark.jpg", reason="no_foreground", message="no foreground found")
    for name in ("busy.jpg", "later.jpg"):
        _image(folders.input / name, (40, 30))
        queue.offer(P(name), Fingerprint.of(folders.input / name))
    assert queue.claim() is not None  # busy.jpg: running; later.jpg: pending
    queue.close()
    telemetry = Telemetry(model="tiny.torchscript", device="cpu")
    telemetry.observe(JobRecord(path="shoot/a.jpg", outcome="done", attempt=1, queue_wait=0.2, total=1.5,
                                timings={"load": 0.1, "inference": 1.2, "encode": 0.2}))
    session = SessionRecord(folders.state)
    session.begin(now=0.0)
    TelemetryPublisher(telemetry, session=session).stopped()
    return root


def _folders(root: Path) -> Folders:
    return Folders(input=root / "in", output=root / "out", quarantine=root / "q", archive=root / "archive",
                   state=root / "state")


@pytest.fixture
def studio(template: Path, tmp_path: Path) -> Iterator[Studio]:
    root = tmp_path / "studio"
    shutil.copytree(template, root, symlinks=True)
    folders = _folders(root)
    queue = JobQueue(folders.state / "queue.sqlite3")
    yield Studio(root, folders, queue)
    queue.close()


# --- the page and its parts --------------------------------------------------------------------
def test_the_page_shows_the_queue_recent_cutouts_and_quarantine_by_reason(studio: Studio) -> None:
    page = studio.client().get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'data-tile="pending"><b>1</b>' in html and 'data-tile="running"><b>1</b>' in html
    assert 'data-tile="done today"><b>1</b>' in html and 'data-tile="quarantined"><b>3</b>' in html
    assert 'data-source="shoot/a.jpg"' in html and "/thumb/output/shoot/a.png?px=s" in html
    assert html.index('data-reason="undecodable"') < html.index('data-reason="no_foreground"')  # most first
    assert "Retry all 2" in html and 'data-file="bad1.jpg"' in html and "cannot identify image file" in html
    assert "daemon not running since" in html  # its telemetry says when it stopped
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/app.css", "/static/favicon.svg"):  # served by the package, no CDN
        assert asset in html and studio.client().get(asset).status_code == 200
    assert "http" not in html.replace(LOCAL, "").split("<body")[1].split("</main>")[0].replace("https", "")


def test_a_file_routed_to_another_recipe_shows_and_downloads_the_file_its_recipe_wrote(studio: Studio) -> None:
    _image(studio.folders.output / "shoot/a.jpg", (40, 30))  # shoot/** -> a JPEG on white: no a.png is written
    (studio.folders.output / "shoot/a.png").unlink()
    client = studio.client(recipes={"white": {"format": "jpeg", "background": "#ffffff"}},
                           routes=[{"match": "shoot/**", "recipes": ["white"]}])
    html = client.get("/").text
    assert "/thumb/output/shoot/a.jpg?px=s" in html and "shoot/a.png" not in html
    job = studio.queue.get(P("shoot/a.jpg"))
    assert job is not None
    view = client.get(f"/view/{job.id}").text
    assert '/file/output/shoot/a.jpg"' in view and client.get("/thumb/output/shoot/a.jpg?px=l").status_code == 200


def test_the_live_parts_are_the_same_html_as_the_page_and_follow_the_store(studio: Studio) -> None:
    client, dash = studio.open()
    first = client.get("/parts").json()
    assert set(first["parts"]) == {"status", "banner", "summary", "fleet", "recent", "doubtful", "quarantine"}
    assert first["parts"]["recent"] in client.get("/").text and first["csrf"] == dash.access.csrf
    assert 'data-source="later.jpg"' not in first["parts"]["recent"]
    job = studio.queue.claim()  # later.jpg, pending until now
    assert job is not None
    _image(studio.folders.output / job.output, (50, 40), mode="RGBA")
    studio.queue.finish(job, content_hash="h", fingerprint=Fingerprint(job.size, job.mtime_ns), publish=lambda: None)
    dash.board.invalidate()  # else the same answer for a second
    assert 'data-source="later.jpg"' in client.get("/parts").json()["parts"]["recent"]


def test_the_status_json_and_the_before_after_view(studio: Studio) -> None:
    client = studio.client()
    status = client.get("/api/status").json()
    assert status["counts"] == {"pending": 1, "running": 1, "done": 1, "failed": 3, "review": 0}
    assert status["quarantined"] == {"undecodable": 2, "no_foreground": 1} and status["daemon"]["running"] is False
    view = client.get("/view/1")
    assert view.status_code == 200 and "<!doctype html>" in view.text
    fragment = client.get("/view/1?fragment=1").text
    assert fragment.startswith('<article class="ba"')
    assert '/thumb/input/shoot/a.jpg?px=l' in fragment and "/thumb/output/shoot/a.png?px=l" in fragment
    assert "200 × 160 px" in fragment and "inference</span><b>1.200 s" in fragment  # size, the daemon's stage timings
    assert client.get("/view/2").status_code == 404  # a quarantined job has no cutout to show
    assert client.get("/view/999").status_code == 404
    assert client.get("/view/" + "9" * 30).status_code == 404  # past any 64-bit id: no row, not a 500


def test_a_hostile_file_name_and_message_show_as_text_never_as_markup(studio: Studio) -> None:
    """Names and messages come from whoever can drop a file: every template escapes them."""
    name = "<b onclick=alert(1)>\"'&.jpg"
    message = "<script>alert(2)</script><img src=x onerror=alert(3)>"
    _quarantined(studio.queue, studio.folders, name, reason="undecodable", message=message)
    original = _image(studio.folders.input / "shoot" / name, (40, 30))
    studio.queue.offer(P(f"shoot/{name}"), Fingerprint.of(original))
    job = None
    while job is None or job.source != P(f"shoot/{name}"):  # later.jpg, pending before it, first
        job = studio.queue.claim()
        assert job is not None
    _image(studio.folders.output / job.output, (20, 16), mode="RGBA")
    assert studio.queue.finish(job, content_hash="h", fingerprint=Fingerprint.of(original), publish=lambda: None)
    client = studio.client()
    texts = [client.get("/").text, *client.get("/parts").json()["parts"].values()]
    texts += [client.get(f"/view/{job.id}").text, client.get(f"/view/{job.id}?fragment=1").text]
    for text in texts:
        assert "<b onclick" not in text and "<script>alert" not in text and "<img src=x" not in text
    page = texts[0]
    assert "&lt;b onclick=alert(1)&gt;&#34;&#39;&amp;.jpg" in page  # shown, as text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;&lt;img src=x onerror=alert(3)&gt;" in page
    assert "shoot/&lt;b onclick=alert(1)&gt;&#34;&#39;&amp;.jpg" in texts[-1]


# --- thumbnails -------------------------------------------------------------------------------
def test_thumbnails_are_webp_of_bounded_size_cached_in_the_state_folder_and_capped(studio: Studio) -> None:
    client = studio.client(**{"dashboard.thumbnail_px": 64})
    first = client.get("/thumb/output/shoot/a.png?px=s")
    assert first.status_code == 200 and first.headers["content-type"] == "image/webp"
    with Image.open(__import__("io").BytesIO(first.content)) as thumb:
        assert max(thumb.size) == 64 and thumb.mode == "RGBA"  # transparency kept
    cached = list((studio.folders.state / "thumbnails").glob("*.webp"))
    assert len(cached) == 1
    assert client.get("/thumb/output/shoot/a.png?px=s").content == first.content
    assert client.get("/thumb/quarantine/bad1.jpg").status_code == 404  # does not decode: no thumbnail

    noise = studio.root / "noise.png"
    Image.effect_noise((200, 200), 80).save(noise)
    one = len(make_thumbnail(noise, size=150, max_pixels=10**8) or b"")
    cache = ThumbCache(studio.root / "cache", max_bytes=int(3.5 * one), max_pixels=10**8)
    made = []
    for index in range(6):
        os.utime(noise, ns=(index * 10**9, index * 10**9))  # a changed file: a new thumbnail
        opened = open_file({"root": studio.root}, "root", "noise.png")
        assert opened is not None
        with opened.handle:
            made.append(cache.get(opened, size=150))
        os.utime(made[-1], (index, index))  # and served in this order
    kept = sorted(cache.folder.glob("*.webp"))
    assert sum(f.stat().st_size for f in kept) <= 3.5 * one and made[-1] in kept and made[0] not in kept


def test_a_big_jpeg_is_thumbnailed_from_a_reduced_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import daemon.companions.dashboard.thumbs as thumbs

    big = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (90, 140, 200)).save(big, quality=80)
    decoded: list[tuple[int, int]] = []
    real = thumbs.ImageOps.exif_transpose

    def spy(image: Image.Image, **kwargs: Any) -> Any:
        decoded.append(image.size)
        return real(image)

    monkeypatch.setattr(thumbs.ImageOps, "exif_transpose", spy)
    data = make_thumbnail(big, size=320, max_pixels=10**9)
    assert data is not None and decoded == [(500, 375)]  # libjpeg decoded at 1/8 scale, not 12 MP
    assert make_thumbnail(big, size=320, max_pixels=10**6) is None  # above limits.max_pixels: never decoded


# --- only files under the roots ---------------------------------------------------------------
@pytest.fixture
def outside(studio: Studio) -> Path:
    secret = studio.root / "secret.jpg"
    _image(secret, (20, 20))
    (studio.folders.output / "escape.jpg").symlink_to(secret)
    (studio.folders.output / "inside.png").symlink_to(studio.folders.output / "shoot" / "a.png")
    return secret


ESCAPES = [
    "/file/output/../secret.jpg",  # (the client resolves `..` itself: the real server's test sends it raw)
    "/file/output/%2e%2e/secret.jpg",
    "/file/output/%2E%2E%2Fsecret.jpg",
    "/file/output/shoot/%2e%2e/%2e%2e/secret.jpg",
    "/file/output/%252e%252e/secret.jpg",
    "/file/output/escape.jpg",  # a symbolic link out of the root
    "/thumb/output/escape.jpg",
    "/file/output//etc/passwd",
    "/file/output/%2Fetc%2Fpasswd",
    "/file/%2Fetc/passwd",
    "/file/state/queue.sqlite3",  # not a root
    "/file/output/shoot",  # a folder
    "/file/output/a%00.png",
    "/thumb/input/%2e%2e/state/queue.sqlite3",
    "/file/secret.jpg",
]


def test_paths_outside_the_roots_are_not_found(studio: Studio, outside: Path) -> None:
    client = studio.client()
    for url in ESCAPES:
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"JFIF" not in response.content and b"SQLite" not in response.content, url


def test_files_under_the_roots_are_served_links_inside_included(studio: Studio, outside: Path) -> None:
    client = studio.client()
    assert client.get("/file/output/shoot/a.png").content == (studio.folders.output / "shoot/a.png").read_bytes()
    assert client.get("/file/output/inside.png").status_code == 200
    assert client.get("/thumb/input/shoot/a.jpg?px=l").status_code == 200


def test_a_file_that_is_not_an_image_is_an_inert_download_never_a_page_or_script(studio: Studio) -> None:
    client = studio.client()
    for name, text in (("look.html", "<script>fetch('/parts')</script>"), ("x.js", "fetch('/parts')")):
        (studio.folders.input / name).write_text(text)  # anyone who can drop files in a shared hot folder
        response = client.get(f"/file/input/{name}")
        assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-disposition"].startswith("attachment")
        assert "sandbox" in _policies(response.headers["content-security-policy"])
        assert response.headers["x-content-type-options"] == "nosniff"  # the guard's, on every answer
    image = client.get("/file/output/shoot/a.png")
    assert image.headers["content-type"] == "image/png" and "content-disposition" not in image.headers
    assert "sandbox" in _policies(image.headers["content-security-policy"])


def _policies(header: str) -> list[str]:
    """Each Content-Security-Policy the response carries (every one is enforced)."""
    return [policy.strip() for policy in header.split(",")]


# --- Retry: exactly `cutout retry` --------------------------------------------------------------
def test_retry_one_file_moves_it_back_and_queues_it_again(studio: Studio) -> None:
    client, dash = studio.open()
    answer = client.post("/retry", data={"file": "bad1.jpg", "csrf": dash.access.csrf},
                         headers={"Accept": "application/json"})
    assert answer.status_code == 200 and answer.json() == {"lines": ["queued again: bad1.jpg"]}
    assert (studio.folders.input / "bad1.jpg").exists() and not (studio.folders.quarantine / "bad1.jpg").exists()
    job = studio.queue.get(P("bad1.jpg"))
    assert job is not None and job.state == "pending"
    assert 'data-file="bad1.jpg"' not in client.get("/parts").json()["parts"]["quarantine"]
    missing = client.post("/retry", data={"file": "bad1.jpg", "csrf": dash.access.csrf})
    assert missing.status_code == 404 and "not a quarantined file" in missing.json()["error"]


def test_retry_all_of_one_reason_leaves_the_other_reasons(studio: Studio) -> None:
    dash = studio.dashboard()
    client = TestClient(create_app(dash), base_url=LOCAL, follow_redirects=False)
    answer = client.post("/retry", data={"reason": "undecodable", "csrf": dash.access.csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/"  # a plain form (no script) comes back
    assert studio.queue.counts()["failed"] == 1 and (studio.folders.quarantine / "dark.jpg").exists()


@pytest.mark.parametrize(("headers", "data", "status"), [
    ({}, {"file": "bad1.jpg"}, 403),  # no CSRF value
    ({}, {"file": "bad1.jpg", "csrf": "guess"}, 403),
    ({"Origin": "http://evil.example"}, {"file": "bad1.jpg", "csrf": "{csrf}"}, 403),  # another site's page
    ({"Origin": "null"}, {"file": "bad1.jpg", "csrf": "{csrf}"}, 403),  # a sandboxed frame or a data: page
    ({}, {"csrf": "{csrf}"}, 400),
    ({}, {"file": "bad1.jpg", "reason": "undecodable", "csrf": "{csrf}"}, 400),
])
def test_retry_needs_the_pages_csrf_value_and_its_own_origin(
    studio: Studio, headers: dict[str, str], data: dict[str, str], status: int
) -> None:
    dash = studio.dashboard()
    client = TestClient(create_app(dash), base_url=LOCAL)
    form = {key: value.format(csrf=dash.access.csrf) for key, value in data.items()}
    assert client.post("/retry", data=form, headers=headers).status_code == status
    assert (studio.folders.quarantine / "bad1.jpg").exists()  # nothing happened


def test_state_changes_are_post_only_and_the_csrf_header_works(studio: Studio) -> None:
    dash = studio.dashboard()
    client = TestClient(create_app(dash), base_url=LOCAL)
    assert client.get("/retry?file=bad1.jpg").status_code == 405
    ok = client.post("/retry", data={"file": "bad1.jpg"},
                     headers={"X-CSRF-Token": dash.access.csrf, "Origin": LOCAL, "Accept": "application/json"})
    assert ok.status_code == 200


# --- who may look -------------------------------------------------------------------------
def test_a_local_dashboard_answers_only_to_local_host_names(studio: Studio) -> None:
    client = studio.client()
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"Host": "localhost:8765"}).status_code == 200
    assert client.get("/", headers={"Host": "[::1]:8765"}).status_code == 200
    refused = client.get("/", headers={"Host": "attacker.example:8765"})  # DNS rebinding
    assert refused.status_code == 400 and "default-src 'self'" in refused.headers["content-security-policy"]
    for trick in ("evil.com@127.0.0.1", "evil.com@127.0.0.1:8765", "127.0.0.1/evil", "127.0.0.1:80:80", "",
                  "127.0.0.1.evil.com", "localhost.", "[::1]x", "::1"):
        assert client.get("/", headers={"Host": trick}).status_code == 400, trick


def test_an_exposed_dashboard_needs_the_token_then_a_cookie_and_says_it_is_exposed(studio: Studio) -> None:
    dash = studio.dashboard(**{"dashboard.bind": "0.0.0.0", "dashboard.token": TOKEN})
    client = TestClient(create_app(dash), base_url="http://studio-mini.local:8765", follow_redirects=False)
    for url in ("/", "/parts", "/metrics", "/static/app.js", "/thumb/output/shoot/a.png", "/api/status"):
        refused = client.get(url)
        assert refused.status_code == 401 and TOKEN not in refused.text, url
    assert client.get("/?token=wrong-token-0123456789").status_code == 401
    entered = client.get("/view/1?fragment=1&token=" + TOKEN)
    assert entered.status_code == 303 and entered.headers["location"] == "/view/1?fragment=1"  # the token leaves the URL
    cookie = entered.headers["set-cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}={TOKEN}") and "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    client.cookies.set(TOKEN_COOKIE, TOKEN)
    page = client.get("/")
    assert page.status_code == 200 and "Reachable from the network at 0.0.0.0:8765" in page.text
    assert TOKEN not in page.text
    bearer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200  # Prometheus' bearer_token
    assert client.post(f"/retry?token={TOKEN}", data={"file": "bad1.jpg", "csrf": dash.access.csrf}).status_code == 401


def test_an_exposed_dashboard_without_a_token_generates_one_kept_private(studio: Studio) -> None:
    first = studio.dashboard(**{"dashboard.bind": "0.0.0.0"}).access.token
    path = studio.folders.state / TOKEN_FILE
    assert first and len(first) >= 24 and path.read_text() == first and (path.stat().st_mode & 0o777) == 0o600
    assert studio.dashboard(**{"dashboard.bind": "0.0.0.0"}).access.token == first  # the same at the next start
    assert studio.dashboard().access.token is None  # local: none asked


def test_secrets_never_reach_the_page_the_metrics_or_the_log(studio: Studio) -> None:
    settings = {"dashboard.bind": "0.0.0.0", "dashboard.token": TOKEN, "alerts.webhook_url": WEBHOOK}
    dash = studio.dashboard(**settings)
    client = TestClient(create_app(dash), base_url=LOCAL, cookies={TOKEN_COOKIE: TOKEN})
    with capture_logs() as logs:
        bodies = [client.get(url).text for url in ("/", "/parts", "/api/status", "/metrics", "/view/1")]
    for secret in (TOKEN, "hush-hush-key"):
        assert not any(secret in body for body in bodies)
        assert secret not in json.dumps(public_settings(studio.settings(**settings)))  # the daemon's start-up line
        assert secret not in repr(dash.access) and secret not in json.dumps(logs, default=str)


# --- metrics --------------------------------------------------------------------------------
def test_metrics_parse_as_prometheus_text_and_match_the_store(studio: Studio) -> None:
    text = studio.client().get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(text.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    counts = studio.queue.counts()
    assert samples[("cutout_jobs_total", (("outcome", "done"), ("reason", "")))] == counts["done"] == 1
    assert samples[("cutout_jobs_total", (("outcome", "quarantined"), ("reason", "undecodable")))] == 2
    assert samples[("cutout_jobs_total", (("outcome", "quarantined"), ("reason", "no_foreground")))] == 1
    for state, count in counts.items():
        assert samples[("cutout_queue_jobs", (("state", state),))] == count
    assert samples[("cutout_images_in_flight", ())] == counts["running"] == 1
    assert samples[("cutout_daemon_up", ())] == 0 and samples[("cutout_store_up", ())] == 1
    assert samples[("cutout_last_success_timestamp_seconds", ())] == studio.queue.jobs(state="done")[0].finished_at
    assert families["cutout_stage_seconds"].type == "histogram" and families["cutout_model_forward_seconds"]
    assert ("cutout_oldest_pending_seconds", ()) in samples and families["cutout_job_seconds"].type == "histogram"


def test_metrics_histograms_come_from_the_running_daemons_telemetry(studio: Studio) -> None:
    from daemon.companions.dashboard.metrics import metrics_text
    from daemon.store.statedir import acquire_lock

    telemetry = Telemetry(model="m", device="cpu")
    for seconds, doubt in ((0.3, 0.05), (0.7, 0.15), (20.0, 0.92)):
        telemetry.observe(JobRecord(path="x.jpg", outcome="done", attempt=1, queue_wait=0.0, total=seconds,
                                    timings={"inference": seconds}, doubt=doubt))
    settings = studio.settings()
    board = Board(folders=studio.folders, queue=settings.queue, dashboard=settings.dashboard,
                  telemetry=telemetry.snapshot)
    lock = acquire_lock(studio.folders.state)  # as the running daemon holds it
    try:
        text = metrics_text(board.overview).decode()
    finally:
        lock.close()
        board.close()
    samples = {(s.name, s.labels.get("le")): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("cutout_daemon_up", None)] == 1
    assert samples[("cutout_model_forward_seconds_bucket", "1.0")] == 2
    assert samples[("cutout_model_forward_seconds_bucket", "+Inf")] == samples[("cutout_model_forward_seconds_count", None)] == 3
    assert samples[("cutout_model_forward_seconds_sum", None)] == pytest.approx(21.0)
    assert samples[("cutout_job_seconds_count", None)] == 3 and samples[("cutout_daemon_resident_memory_bytes", None)] > 0
    assert samples[("cutout_doubt_bucket", "0.1")] == 1 and samples[("cutout_doubt_bucket", "0.9")] == 2
    assert samples[("cutout_doubt_count", None)] == 3 and samples[("cutout_doubt_sum", None)] == pytest.approx(1.12)


# --- when things are away --------------------------------------------------------------------
class FlakyView:
    """A store that answers, then does not (a fleet's database restarting)."""

    def __init__(self, real: StoreView) -> None:
        self.real, self.up = real, True

    def __call__(self) -> StoreView:
        if not self.up:
            raise QueueError("could not connect to server: Connection refused")
        return self.real


def test_a_store_that_goes_away_keeps_the_last_figures_and_says_so(studio: Studio) -> None:
    from daemon.store.view import open_view

    settings = studio.settings()
    flaky = FlakyView(open_view(settings.queue, state=studio.folders.state))
    board = Board(folders=studio.folders, queue=settings.queue, dashboard=settings.dashboard, view=flaky)
    assert board.overview().counts["done"] == 1 and board.overview().store_problem is None
    flaky.up = False
    board.invalidate()
    flaky.real.close()  # the broken connection is dropped; the next look opens a new one
    away = board.overview()
    assert away.counts["done"] == 1 and away.store_problem and "cannot be read since" in away.store_problem
    flaky.real, flaky.up = open_view(settings.queue, state=studio.folders.state), True
    board.invalidate()
    assert board.overview().store_problem is None
    board.close()


def test_a_dashboard_without_a_queue_yet_shows_the_problem_not_a_traceback(tmp_path: Path) -> None:
    folders = Folders(input=tmp_path / "in", output=tmp_path / "out", quarantine=tmp_path / "q",
                      archive=tmp_path / "a", state=tmp_path / "state")
    settings = load_settings(overrides={"folders.input": folders.input, "folders.output": folders.output,
                                        "folders.state": folders.state})
    page = TestClient(create_app(build_dashboard(settings, folders)), base_url=LOCAL).get("/")
    assert page.status_code == 200 and "job store cannot be read" in page.text and "daemon not running" in page.text


# --- a fleet's PostgreSQL store --------------------------------------------------------------
def test_the_board_and_metrics_read_a_postgresql_store_and_its_fleet(postgres_url: str, tmp_path: Path) -> None:
    from daemon.companions.dashboard.metrics import metrics_text
    from daemon.store.jobs import WorkerInfo
    from daemon.store.postgres import PostgresStore
    from daemon.store.view import open_view

    store = PostgresStore(postgres_url, worker="mini-1:/state")
    try:
        for name in ("a.jpg", "b.jpg"):
            store.offer(P(name), Fingerprint(1, 1))
        job = store.claim()
        assert job is not None and store.finish(job, content_hash="h", fingerprint=Fingerprint(1, 1), publish=lambda: None)
        job = store.claim()
        assert job is not None and store.mark_failed(job, reason="undecodable", message="x", quarantine=P(job.source))
        store.report_worker(WorkerInfo(worker="mini-1:/state", host="mini-1", pid=42, device="mps", model="birefnet",
                                       started_at=0.0, seen_at=0.0, done=1, leader=True))
    finally:
        store.close()
    folders = _folders(tmp_path)
    folders.state.mkdir()
    settings = load_settings(overrides={"folders.input": folders.input, "folders.output": folders.output,
                                        "folders.state": folders.state, "queue.store": "postgresql",
                                        "queue.url": postgres_url})
    dash = build_dashboard(settings, folders)
    page = TestClient(create_app(dash), base_url=LOCAL).get("/").text
    assert "<h2>Fleet</h2>" in page and "<td>mini-1</td>" in page and 'data-tile="quarantined"><b>1</b>' in page
    samples = {s.name: s.value for f in text_string_to_metric_families(metrics_text(dash.board.overview).decode())
               for s in f.samples if not s.labels or s.labels.get("outcome") == "done"}
    assert samples["cutout_fleet_workers"] == 1 and samples["cutout_jobs_total"] == 1
    view = open_view(settings.queue, state=folders.state)
    try:
        count, failed = view.failed_since(0.0)
        assert count == 1 and failed[0].reason == "undecodable" and view.progress()[0] == 2
    finally:
        view.close()
        dash.board.close()


def test_a_doubtful_cut_out_is_marked_in_the_grid_and_its_view_says_why(studio: Studio) -> None:
    job = studio.queue.get(P("shoot/a.jpg"))
    assert job is not None
    with studio.queue.db() as conn:  # as the worker would have stored it
        conn.execute("UPDATE jobs SET doubt = 0.83, doubt_parts = ? WHERE id = ?",
                     (json.dumps({"fog": 0.8, "pieces": 0.15, "area": 0.0}), job.id))
    client = studio.client()
    page = client.get("/").text
    assert 'data-doubt="0.83"' in page and 'title="fog 0.80, pieces 0.15"' in page
    view = client.get(f"/view/{job.id}?fragment=1").text
    assert "<dt>doubt</dt><dd>0.83 (fog 0.80, pieces 0.15)</dd>" in view
    listed = client.get("/parts").json()["parts"]["doubtful"]
    assert f'<a href="/view/{job.id}">shoot/a.jpg</a></td><td>0.83</td><td>fog 0.80, pieces 0.15</td>' in listed
    with studio.queue.db() as conn:
        conn.execute("UPDATE jobs SET doubt = 0.12 WHERE id = ?", (job.id,))
    again = studio.client().get("/").text
    assert "data-doubt" not in again and "Doubtful cut-outs" not in again  # a clean one is neither marked nor listed


def test_the_doubtful_list_puts_the_most_doubtful_first(studio: Studio) -> None:
    for index, (name, doubt) in enumerate((("d1.jpg", 0.61), ("d2.jpg", 0.97), ("d3.jpg", 0.74))):
        studio.queue.offer(P(name), Fingerprint(1, 1))
        with studio.queue.db() as conn:  # done, as the worker leaves a doubtful cut-out
            conn.execute("UPDATE jobs SET state = 'done', finished_at = ?, doubt = ?, doubt_parts = ? WHERE source = ?",
                         (1000.0 + index, doubt, json.dumps({"fog": doubt}), name))
    listed = studio.client().get("/parts").json()["parts"]["doubtful"]
    assert [listed.index(name) for name in ("d2.jpg", "d3.jpg", "d1.jpg")] == sorted(
        listed.index(name) for name in ("d1.jpg", "d2.jpg", "d3.jpg"))
    assert '<span class="n">3</span>' in listed
