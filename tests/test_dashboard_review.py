"""The dashboard's Review view over HTTP (Starlette's test client), on a real store with real files.

Each test builds a studio whose review step is on: three cut-outs waiting for review (each a
PNG in the review folder at its output path, its original in the hot folder, its job `review`
in a real SQLite queue, as the worker leaves it), and one cut-out delivered. The actions must
do exactly what `cutout review` does (daemon/store/review.py, tests/test_review.py); these
tests check that the dashboard reaches it, under the same rules as Retry. The browser test is
in tests/test_dashboard_e2e.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath as P
from typing import Any

import pytest
from PIL import Image
from starlette.testclient import TestClient

from daemon.companions.dashboard.app import Dashboard, create_app
from daemon.companions.dashboard.auth import TOKEN_COOKIE
from daemon.companions.dashboard.server import build_dashboard
from daemon.folders.outputs import Folders
from daemon.pipeline.modelspec import FAMILY
from daemon.settings import load_settings
from daemon.store.jobs import Fingerprint, Job
from daemon.store.sqlite import JobQueue
from daemon.testing import FakeClock

LOCAL = "http://127.0.0.1:8765"
TOKEN = "s3cret-token-0123456789"
WAITING = (  # (original, doubt, its parts), in the order the worker finished them
    ("shoot/b.jpg", 0.91, {"fog": 0.91, "pieces": 0.1}),
    ("a.jpg", 0.62, {"fog": 0.2, "pieces": 0.6, "area": 0.0}),
    ("shoot/c.jpg", 0.77, {"edge": 0.77}),
)


@dataclass
class Studio:
    root: Path
    folders: Folders
    queue: JobQueue
    review: Path

    def dashboard(self, *, review: bool = True, **overrides: object) -> Dashboard:
        f = self.folders
        settings = load_settings(overrides={
            "folders.input": f.input, "folders.output": f.output, "folders.quarantine": f.quarantine,
            "folders.archive": f.archive, "folders.state": f.state,
            **({"review.folder": self.review} if review else {}), **overrides,
        })
        folders = settings.folders.resolve(default_state=f.state, review=settings.review.folder)
        return build_dashboard(settings, folders)

    def open(self, *, review: bool = True, **overrides: object) -> tuple[TestClient, Dashboard]:
        dash = self.dashboard(review=review, **overrides)
        return TestClient(create_app(dash), base_url=LOCAL, follow_redirects=False), dash

    def job(self, source: str) -> Job:
        job = self.queue.get(P(source))
        assert job is not None
        return job


def _image(path: Path, size: tuple[int, int], *, mode: str = "RGB", color: Any = (200, 120, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def _finished(studio: Studio, source: str, *, doubt: float, parts: dict[str, float], review: bool) -> Job:
    """A job as the worker leaves it: in review (its cut-out in the review folder) or done."""
    original = _image(studio.folders.input / source, (400, 300))
    studio.queue.offer(P(source), Fingerprint.of(original))
    job = studio.queue.claim()
    assert job is not None and job.source == P(source)
    _image((studio.review if review else studio.folders.output) / job.output, (200, 160), mode="RGBA",
           color=(200, 120, 40, 180))
    assert studio.queue.finish(job, content_hash="h", fingerprint=Fingerprint.of(original), publish=lambda: None,
                               doubt=doubt, doubt_parts=parts, review=review)
    return studio.job(source)


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[Studio]:
    root = tmp_path / "studio"
    folders = Folders(input=root / "in", output=root / "out", quarantine=root / "q", archive=root / "archive",
                      state=root / "state")
    for folder in (folders.input, folders.output, folders.quarantine, folders.state, root / "review"):
        folder.mkdir(parents=True)
    clock = FakeClock(1_000_000.0)
    queue = JobQueue(folders.state / "queue.sqlite3", clock=clock)
    made = Studio(root, folders, queue, root / "review")
    _finished(made, "done.jpg", doubt=0.1, parts={"fog": 0.1}, review=False)
    for source, doubt, parts in WAITING:
        clock.advance(60)
        _finished(made, source, doubt=doubt, parts=parts, review=True)
    yield made
    queue.close()


def _rows(html: str) -> list[str]:
    """The originals the Review list shows, in its order."""
    return [chunk.split('"', 1)[0] for chunk in html.split('<tr class="rv" data-job="')[1:] for chunk in
            [chunk.split('data-source="', 1)[1]]]


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --- the view ---------------------------------------------------------------------------------
def test_the_review_view_lists_each_waiting_cut_out_with_its_score_parts_thumbnails_and_actions(studio: Studio) -> None:
    client, dash = studio.open()
    page = client.get("/review")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert _rows(html) == ["shoot/b.jpg", "shoot/c.jpg", "a.jpg"]  # the most doubtful first
    assert "done.jpg" not in html  # delivered: not waiting
    row = html.split(f'data-job="{studio.job("a.jpg").id}" data-source="a.jpg"')[1].split("</tr>")[0]
    assert '<b data-doubt="0.62">0.62</b><ul class="parts"><li>pieces 0.60</li><li>fog 0.20</li></ul>' in row
    thumb = "/thumb/review/a.png?px=s&amp;v="
    assert row.count(thumb) == 2 and '<span class="checker"><img' in row and '<span class="white"><img' in row
    assert f"<small>{studio.folders.input / 'a.jpg'}</small>" in row  # the original's path
    assert f'href="/view/{studio.job("a.jpg").id}"' in row
    for action in ("approve", "reject", "redo"):
        form = row.split(f'action="/review/{action}"')[1].split("</form>")[0]
        assert f'name="csrf" value="{dash.access.csrf}"' in form
        assert f'name="file" value="{studio.review / "a.png"}"' in form  # the cut-out: one job, never two
    assert 'name="reason"' in row.split('action="/review/reject"')[1].split("</form>")[0]
    assert "<span class=\"n\">3</span> cut-outs with a doubt over 0.50 wait in the review folder" in html
    overview = client.get("/").text
    assert '<a href="/review">Review</a>' in overview and 'data-tile="waiting for review"><b>3</b>' in overview


@pytest.mark.parametrize(("sort", "order"), [
    (None, ["shoot/b.jpg", "shoot/c.jpg", "a.jpg"]),
    ("-score", ["shoot/b.jpg", "shoot/c.jpg", "a.jpg"]),
    ("score", ["a.jpg", "shoot/c.jpg", "shoot/b.jpg"]),
    ("file", ["a.jpg", "shoot/b.jpg", "shoot/c.jpg"]),
    ("-file", ["shoot/c.jpg", "shoot/b.jpg", "a.jpg"]),
    ("time", ["shoot/b.jpg", "a.jpg", "shoot/c.jpg"]),  # the order they went into review
    ("-time", ["shoot/c.jpg", "a.jpg", "shoot/b.jpg"]),
    ("<script>", ["shoot/b.jpg", "shoot/c.jpg", "a.jpg"]),  # not a column: the default
])
def test_the_review_list_sorts_by_the_column_asked(studio: Studio, sort: str | None, order: list[str]) -> None:
    client = studio.open()[0]
    query = "" if sort is None else f"?sort={sort}"
    assert _rows(client.get(f"/review{query}").text) == order
    assert _rows(client.get(f"/review/parts{query}").json()["parts"]["review"]) == order  # the live update keeps it


def test_a_click_on_a_column_header_sorts_by_it_and_a_second_click_turns_the_order(studio: Studio) -> None:
    client = studio.open()[0]

    def links(html: str) -> dict[str, str]:
        return {column: html.split(f'data-sort="{column}" href="/review?sort=')[1].split('"')[0]
                for column in ("score", "file", "time")}

    first = client.get("/review").text
    assert links(first) == {"score": "score", "file": "file", "time": "-time"}
    assert '<th aria-sort="descending"><a class="sort" data-sort="score"' in first
    by_file = client.get("/review?sort=file").text
    assert links(by_file) == {"score": "-score", "file": "-file", "time": "-time"}
    assert 'data-parts="/review/parts?sort=file"' in by_file  # the live update asks for the same order
    assert links(client.get("/review?sort=-file").text)["file"] == "file"


def test_the_live_parts_are_the_pages_and_follow_the_store(studio: Studio) -> None:
    client, dash = studio.open()
    parts = client.get("/review/parts").json()
    assert set(parts["parts"]) == {"status", "banner", "review"} and parts["csrf"] == dash.access.csrf
    assert parts["parts"]["review"] in client.get("/review").text
    studio.queue.offer(P("late.jpg"), Fingerprint(1, 1))
    job = studio.queue.claim()
    assert job is not None
    _image(studio.review / job.output, (20, 20), mode="RGBA")
    studio.queue.finish(job, content_hash="h", fingerprint=Fingerprint(1, 1), publish=lambda: None, doubt=0.99,
                        doubt_parts={"fog": 0.99}, review=True)
    assert _rows(client.get("/review/parts").json()["parts"]["review"])[0] == "late.jpg"  # read afresh each time


def test_with_the_review_step_off_the_view_says_how_to_turn_it_on_and_nothing_is_served(studio: Studio) -> None:
    client, dash = studio.open(review=False)
    html = client.get("/review").text
    assert "The review step is off" in html and "<code>review.folder</code>" in html and _rows(html) == []
    assert client.get("/thumb/review/a.png?px=s").status_code == 404  # not a root while it is off
    assert client.get("/file/review/a.png").status_code == 404
    assert client.get(f"/view/{studio.job('a.jpg').id}").status_code == 404
    refused = client.post("/review/approve", data={"file": "a.jpg", "csrf": dash.access.csrf})
    assert refused.status_code == 404 and "review step is off" in refused.json()["error"]
    assert studio.job("a.jpg").state == "review" and (studio.review / "a.png").exists()


def test_a_hostile_file_name_shows_as_text_never_as_markup(studio: Studio) -> None:
    name = "<b onclick=alert(1)>\"'&.jpg"
    _finished(studio, f"shoot/{name}", doubt=0.95, parts={"<i>fog</i>": 0.95}, review=True)
    client = studio.open()[0]
    texts = [client.get("/review").text, *client.get("/review/parts").json()["parts"].values()]
    for text in texts:
        assert "<b onclick" not in text and "<i>fog" not in text
    page = texts[0]
    assert 'data-source="shoot/&lt;b onclick=alert(1)&gt;&#34;&#39;&amp;.jpg"' in page
    assert "<b>shoot/&lt;b onclick=alert(1)&gt;&#34;&#39;&amp;.jpg</b>" in page
    assert f'name="file" value="{studio.review}/shoot/&lt;b onclick=alert(1)&gt;&#34;&#39;&amp;.png"' in page
    assert "<li>&lt;i&gt;fog&lt;/i&gt; 0.95</li>" in page


# --- its files --------------------------------------------------------------------------------
def test_the_review_folder_is_served_for_thumbnails_the_before_after_view_and_downloads(studio: Studio) -> None:
    client = studio.open(**{"dashboard.thumbnail_px": 64})[0]
    thumb = client.get("/thumb/review/a.png?px=s")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert max(image.size) == 64 and image.mode == "RGBA"
    assert client.get("/file/review/shoot/b.png").content == (studio.review / "shoot/b.png").read_bytes()
    view = client.get(f"/view/{studio.job('a.jpg').id}?fragment=1").text
    assert "/thumb/input/a.jpg?px=l" in view and "/thumb/review/a.png?px=l" in view  # before, after
    assert "After (waiting for review)" in view and '<a href="/file/review/a.png" download>' in view
    assert "<dt>doubt</dt><dd>0.62 (pieces 0.60, fog 0.20)</dd>" in view
    done = client.get(f"/view/{studio.job('done.jpg').id}?fragment=1").text
    assert "/thumb/output/done.png?px=l" in done and "waiting for review" not in done


def test_nothing_outside_the_review_folder_is_served_through_it(studio: Studio) -> None:
    secret = _image(studio.root / "secret.png", (20, 20))
    (studio.review / "escape.png").symlink_to(secret)  # planted by whoever can write in the review folder
    (studio.review / "away").symlink_to(studio.folders.state, target_is_directory=True)
    client = studio.open()[0]
    for url in ("/thumb/review/escape.png", "/file/review/escape.png", "/file/review/away/queue.sqlite3",
                "/file/review/%2e%2e/secret.png", "/file/review/..%2Fsecret.png", "/thumb/review/%2e%2e/in/a.jpg",
                "/file/review/shoot", "/file/review//etc/passwd"):
        answer = client.get(url)
        assert answer.status_code == 404, url
        assert b"PNG" not in answer.content and b"SQLite" not in answer.content, url


# --- the actions: exactly `cutout review` ----------------------------------------------------
def test_approve_delivers_the_cut_out_and_applies_the_originals_policy(studio: Studio) -> None:
    client, dash = studio.open(originals="archive")
    waiting = (studio.review / "a.png").read_bytes()
    answer = client.post("/review/approve", data={"file": str(studio.review / "a.png"), "csrf": dash.access.csrf},
                         headers={"Accept": "application/json"})
    archived = studio.folders.archive / "a.jpg"
    assert answer.status_code == 200 and answer.json() == {"lines": [
        f"approved: a.jpg -> {studio.folders.output / 'a.png'} (the original archived to {archived})"]}
    assert (studio.folders.output / "a.png").read_bytes() == waiting and not (studio.review / "a.png").exists()
    assert not (studio.folders.input / "a.jpg").exists() and (studio.folders.archive / "a.jpg").exists()
    assert studio.job("a.jpg").state == "done"
    assert _rows(client.get("/review/parts").json()["parts"]["review"]) == ["shoot/b.jpg", "shoot/c.jpg"]
    again = client.post("/review/approve", data={"file": "a.jpg", "csrf": dash.access.csrf})
    assert again.status_code == 404 and "no cut-out waiting for review" in again.json()["error"]


def test_a_plain_form_comes_back_to_the_review_view(studio: Studio) -> None:
    client, dash = studio.open()
    answer = client.post("/review/approve", data={"file": "shoot/b.jpg", "csrf": dash.access.csrf})  # by its original
    assert answer.status_code == 303 and answer.headers["location"] == "/review"
    assert _files(studio.folders.output) == ["done.png", "shoot/b.png"] and studio.job("shoot/b.jpg").state == "done"


def test_reject_quarantines_the_original_with_the_reason_given_and_the_cut_out_beside_it(studio: Studio) -> None:
    client, dash = studio.open()
    answer = client.post("/review/reject", headers={"Accept": "application/json"}, data={
        "file": str(studio.review / "shoot/c.png"), "reason": "  the handle is cut off  ", "csrf": dash.access.csrf})
    assert answer.status_code == 200
    [line] = answer.json()["lines"]
    assert line.startswith(f"rejected: shoot/c.jpg -> {studio.folders.quarantine / 'shoot/c.jpg'}; its cut-out: ")
    assert _files(studio.folders.quarantine) == ["shoot/c.jpg", "shoot/c.jpg.cutout-c.png", "shoot/c.jpg.error.json"]
    report = json.loads((studio.folders.quarantine / "shoot/c.jpg.error.json").read_text())
    assert report["reason"] == "rejected" and report["message"] == "the handle is cut off"
    assert not (studio.review / "shoot/c.png").exists() and not (studio.folders.input / "shoot/c.jpg").exists()
    job = studio.job("shoot/c.jpg")
    assert job.state == "failed" and job.reason == "rejected"
    assert 'data-file="shoot/c.jpg"' in client.get("/parts").json()["parts"]["quarantine"]  # Retry can bring it back


def test_reject_without_a_reason_says_it_was_rejected_on_review(studio: Studio) -> None:
    client, dash = studio.open()
    answer = client.post("/review/reject", data={"file": "a.jpg", "reason": "", "csrf": dash.access.csrf},
                         headers={"Accept": "application/json"})
    assert answer.status_code == 200 and answer.json()["lines"][0].startswith("rejected: a.jpg")
    report = json.loads((studio.folders.quarantine / "a.jpg.error.json").read_text())
    assert report["message"] == "its cut-out was rejected on review"


def test_redo_queues_the_original_again_and_the_waiting_cut_out_stays_until_replaced(studio: Studio) -> None:
    client, dash = studio.open()
    answer = client.post("/review/redo", data={"file": str(studio.review / "a.png"), "csrf": dash.access.csrf},
                         headers={"Accept": "application/json"})
    assert answer.status_code == 200 and answer.json() == {"lines": ["queued again: a.jpg"]}
    job = studio.job("a.jpg")
    assert job.state == "pending" and job.doubt is None
    assert (studio.review / "a.png").exists() and (studio.folders.input / "a.jpg").exists()
    assert "a.jpg" not in _rows(client.get("/review").text)


def test_redo_offers_the_configs_recipes_and_the_birefnet_family_each_empty_by_default(studio: Studio) -> None:
    client = studio.open(recipes={"matte": {"mask": "also", "suffix": "-m"}})[0]
    html = client.get("/review").text
    row = html.split(f'data-job="{studio.job("a.jpg").id}" data-source="a.jpg"')[1].split("</tr>")[0]
    form = row.split('action="/review/redo"')[1].split("</form>")[0]
    recipes = form.split('<select name="recipe"')[1].split("</select>")[0]
    assert '<option value="" selected>recipe: its own</option>' in recipes
    assert recipes.count("<option") == 3 and recipes.index('value="default"') < recipes.index('value="matte"')
    models = form.split('<select name="model"')[1].split("</select>")[0]
    assert '<option value="" selected>model: the daemon\'s</option>' in models
    assert [chunk.split('"')[0] for chunk in models.split('<option value="')[2:]] == list(FAMILY)
    assert 'type="text"' not in form  # no model typed in: only the family's names
    for action in ("approve", "reject"):
        assert "<select" not in row.split(f'action="/review/{action}"')[1].split("</form>")[0]
    assert client.get("/review/parts").json()["parts"]["review"].count('<select name="model"') == 3  # the live update


def test_redo_with_a_recipe_and_a_model_queues_the_file_with_them_and_says_so(studio: Studio) -> None:
    client, dash = studio.open(recipes={"matte": {"mask": "also", "suffix": "-m"}})
    answer = client.post("/review/redo", headers={"Accept": "application/json"}, data={
        "file": str(studio.review / "a.png"), "recipe": "matte", "model": "birefnet-hr", "csrf": dash.access.csrf})
    assert answer.status_code == 200 and answer.json() == {
        "lines": ["queued again with the recipe matte and the model birefnet-hr: a.jpg"]}
    job = studio.job("a.jpg")
    assert job.state == "pending" and job.recipes == ("matte",) and job.model == "birefnet-hr"
    assert (studio.folders.input / "a.jpg").exists()
    assert "a.jpg" not in _rows(client.get("/review").text)


@pytest.mark.parametrize(("recipe", "model", "lines"), [
    ("", "", ["queued again: a.jpg"]),  # the form's defaults: its own recipe, the daemon's model
    ("default", "", ["queued again with the recipe default: a.jpg"]),
    ("", "birefnet-matting", ["queued again with the model birefnet-matting: a.jpg"]),
])
def test_redo_chooses_only_what_was_chosen(studio: Studio, recipe: str, model: str, lines: list[str]) -> None:
    client, dash = studio.open()
    answer = client.post("/review/redo", headers={"Accept": "application/json"}, data={
        "file": "a.jpg", "recipe": recipe, "model": model, "csrf": dash.access.csrf})
    assert answer.status_code == 200 and answer.json() == {"lines": lines}
    job = studio.job("a.jpg")
    assert job.recipes == ((recipe,) if recipe else None) and job.model == (model or None)


def test_a_plain_redo_form_with_its_choices_comes_back_to_the_review_view(studio: Studio) -> None:
    client, dash = studio.open()
    answer = client.post("/review/redo", data={"file": "a.jpg", "recipe": "default", "model": "birefnet-lite",
                                               "csrf": dash.access.csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/review"
    assert studio.job("a.jpg").model == "birefnet-lite" and studio.job("a.jpg").recipes == ("default",)


@pytest.mark.parametrize(("choice", "error"), [
    ({"recipe": "nope"}, "recipe: no recipe named 'nope' (known: default, matte)"),
    ({"recipe": "<b>matte</b>"}, "no recipe named '<b>matte</b>'"),  # JSON, shown as text by the page
    ({"model": "birefnet-huge"}, "model: 'birefnet-huge' is not one Redo offers (known: birefnet, "),
    ({"model": "/tmp/model.torchscript"}, "is not one Redo offers"),  # a path: the command's, never the web's
    ({"model": "hf:someone/else"}, "is not one Redo offers"),
    ({"model": "BiRefNet-HR"}, "is not one Redo offers"),  # the names as the list spells them
    ({"recipe": "matte", "model": "nope"}, "is not one Redo offers"),  # one refused: nothing done
])
def test_redo_refuses_a_recipe_or_model_it_does_not_offer_and_changes_nothing(
    studio: Studio, choice: dict[str, str], error: str
) -> None:
    client, dash = studio.open(recipes={"matte": {"mask": "also", "suffix": "-m"}})
    before = studio.job("a.jpg")
    answer = client.post("/review/redo", data={"file": "a.jpg", "csrf": dash.access.csrf, **choice})
    assert answer.status_code == 400 and error in answer.json()["error"]  # a refusal: JSON even to a plain form
    assert studio.job("a.jpg") == before and before.state == "review"
    assert (studio.review / "a.png").exists() and (studio.folders.input / "a.jpg").exists()


def test_approve_and_reject_take_no_recipe_or_model(studio: Studio) -> None:
    client, dash = studio.open()
    answer = client.post("/review/reject", headers={"Accept": "application/json"}, data={
        "file": "a.jpg", "recipe": "nope", "model": "/tmp/x.torchscript", "csrf": dash.access.csrf})
    assert answer.status_code == 200 and studio.job("a.jpg").state == "failed"  # not theirs: not read


# --- refused exactly as Retry is ----------------------------------------------------------------
@pytest.mark.parametrize("action", ["approve", "reject", "redo"])
@pytest.mark.parametrize(("headers", "data", "status"), [
    ({}, {"file": "a.jpg"}, 403),  # no CSRF value
    ({}, {"file": "a.jpg", "csrf": "guess"}, 403),
    ({"X-CSRF-Token": "guess"}, {"file": "a.jpg"}, 403),
    ({"Origin": "http://evil.example"}, {"file": "a.jpg", "csrf": "{csrf}"}, 403),  # another site's page
    ({"Origin": "null"}, {"file": "a.jpg", "csrf": "{csrf}"}, 403),  # a sandboxed frame or a data: page
    ({}, {"csrf": "{csrf}"}, 400),
    ({}, {"file": "elsewhere.jpg", "csrf": "{csrf}"}, 404),  # not waiting for review
    ({"Content-Length": "70000"}, {"file": "a.jpg", "csrf": "{csrf}"}, 413),
    ({}, {"file": "a.jpg", "recipe": "default", "model": "birefnet-hr"}, 403),  # a choice is no pass
    ({"Origin": "http://evil.example"}, {"file": "a.jpg", "model": "birefnet-hr", "csrf": "{csrf}"}, 403),
    ({}, {"file": "a.jpg", "recipe": "nope", "model": "birefnet-hr", "csrf": "guess"}, 403),  # CSRF comes first
])
def test_the_actions_need_the_pages_csrf_value_and_its_own_origin(
    studio: Studio, action: str, headers: dict[str, str], data: dict[str, str], status: int
) -> None:
    client, dash = studio.open()
    form = {key: value.format(csrf=dash.access.csrf) for key, value in data.items()}
    if "Content-Length" in headers:
        form["pad"] = "x" * 70_000
        headers = {}
    assert client.post(f"/review/{action}", data=form, headers=headers).status_code == status
    job = studio.job("a.jpg")
    assert job.state == "review" and (studio.review / "a.png").exists()  # nothing happened
    assert job.recipes is None and job.model is None
    assert (studio.folders.input / "a.jpg").exists() and _files(studio.folders.quarantine) == []


def test_the_actions_are_post_only_and_the_csrf_header_works(studio: Studio) -> None:
    client, dash = studio.open()
    for action in ("approve", "reject", "redo"):
        assert client.get(f"/review/{action}?file=a.jpg").status_code == 405
    assert studio.job("a.jpg").state == "review"
    ok = client.post("/review/redo", data={"file": "a.jpg"},
                     headers={"X-CSRF-Token": dash.access.csrf, "Origin": LOCAL, "Accept": "application/json"})
    assert ok.status_code == 200 and studio.job("a.jpg").state == "pending"


def test_an_exposed_dashboard_asks_the_token_of_the_review_view_and_its_actions(studio: Studio) -> None:
    dash = studio.dashboard(**{"dashboard.bind": "0.0.0.0", "dashboard.token": TOKEN})
    client = TestClient(create_app(dash), base_url="http://studio-mini.local:8765", follow_redirects=False)
    form = {"file": "a.jpg", "csrf": dash.access.csrf}
    for url in ("/review", "/review/parts", "/thumb/review/a.png", "/file/review/a.png"):
        refused = client.get(url)
        assert refused.status_code == 401 and TOKEN not in refused.text, url
    for action in ("approve", "reject", "redo"):
        assert client.post(f"/review/{action}", data=form).status_code == 401
        assert client.post(f"/review/{action}?token={TOKEN}", data=form).status_code == 401  # a link never acts
    assert studio.job("a.jpg").state == "review"
    client.cookies.set(TOKEN_COOKIE, TOKEN)
    page = client.get("/review")
    assert page.status_code == 200 and TOKEN not in page.text and _rows(page.text)[-1] == "a.jpg"
    assert client.post("/review/approve", data=form).status_code == 303
    assert studio.job("a.jpg").state == "done"
