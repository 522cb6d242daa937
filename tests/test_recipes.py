"""Recipes and routes: the config, which files get which recipes, their names, and the commands
that run them (`cutout process --recipe/--force/--skip-existing`, `cutout reprocess`).

The pixels of each recipe are tested in test_render.py; the real daemon routing three
subfolders to three recipes in test_recipes_e2e.py.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from daemon.errors import ConfigError
from daemon.folders.outputs import Folders
from daemon.folders.routing import SEED_ROUTING, Route, Routing, matches, plan_files
from daemon.pipeline.constants import PipelineParams
from daemon.pipeline.recipe import Recipe
from daemon.settings import QueueSettings, load_settings, routing
from daemon.store.jobs import Fingerprint
from daemon.store.sqlite import JobQueue
from daemon.store.steering import reprocess
from daemon.testing import BrightModel, FakeClock
from daemon.work.batch import run_batch
from daemon.work.worker import Worker
from tests.conftest import subject_image, write_image

P = PurePosixPath
BOX = (100, 80, 300, 220)
SHOP = """
recipes:
  white-2000:
    format: jpeg
    background: '#ffffff'
    crop: canvas
    canvas: [400, 400]
    margin: 10%
  web:
    format: webp
    subfolder: web
  mask-only:
    mask: only
routes:
  - match: shop/**
    recipes: white-2000
  - match: shop/special/**
    recipes: [web]
  - match: retouch/**
    recipes: [default, mask-only]
"""


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


# --- the config ---------------------------------------------------------------------------------
def test_recipes_and_routes_are_read_with_the_seed_defaults_for_what_they_leave_out(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path, SHOP))
    white = settings.recipes["white-2000"]
    assert (white.format, white.background, white.crop, white.canvas, white.margin) == (
        "jpeg", "#ffffff", "canvas", (400, 400), "10%")
    assert white.mask == "none" and white.suffix == "" and settings.all_recipes["default"] == Recipe()
    assert settings.routes[0] == Route(match="shop/**", recipes=("white-2000",))  # one name alone is a list of one


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("recipes:\n  r:\n    format: gif\n", "recipes.r.format: 'gif' is not one of png, webp, tiff, jpeg"),
        ("recipes:\n  r:\n    format: jpeg\n", "recipes.r.format: jpeg has no transparency"),
        ("recipes:\n  r:\n    background: white\n", "recipes.r.background: 'white' is not `transparent`"),
        ("recipes:\n  r:\n    crop: canvas\n    canvas: [0, 100]\n", "recipes.r.canvas: 0 x 100 is not a possible"),
        ("recipes:\n  r:\n    crop: canvas\n    margin: 50%\n", "recipes.r.margin: 50% leaves no room"),
        ("recipes:\n  r:\n    margin: 7 px\n", "recipes.r.margin: '7 px' is not a margin"),
        ("recipes:\n  r:\n    subfolder: ../out\n", "recipes.r.subfolder: '../out' must be a relative folder"),
        ("recipes:\n  r:\n    format: webp\n    bit_depth: 16\n", "recipes.r.bit_depth: webp is 8 bits only"),
        ("recipes:\n  r:\n    quality: 0\n    format: jpeg\n    background: '#000'\n", "recipes.r.quality"),
        ("routes:\n  - match: shop/**\n    recipes: [nope]\n", "routes[0].recipes: no recipe named 'nope'"),
        ("routes:\n  - match: /abs/**\n", "routes[0].match: '/abs/**' must be a glob relative"),
        ("routes:\n  - match: a/**\n    recipes: []\n", "routes[0].recipes: names no recipe"),
        ("recipes:\n  copy: {}\nroutes:\n  - match: '**'\n    recipes: [default, copy]\n",
         "routes[0].recipes: default, copy would write files of the same name"),
        ("routes:\n  - recipes: [default]\n", "routes[0].match: is required here"),
        ("recipes:\n  r:\n    colour: red\n", "unknown setting 'recipes.r.colour'"),
        ("color:\n  convert_to_srgb: true\nrecipes:\n  r:\n    format: tiff\n    bit_depth: 16\n",
         "color.convert_to_srgb: true needs 8-bit outputs, and the recipes' bit_depth asks for 16 bits"),
        ("color:\n  convert_to_srgb: true\noutput:\n  bit_depth: source\n",
         "color.convert_to_srgb: true needs 8-bit outputs, and output.bit_depth asks for 16 bits"),
    ],
)
def test_a_bad_recipe_or_route_is_refused_with_its_key_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        load_settings(_config(tmp_path, text))
    assert message in str(caught.value)


# --- which files get which recipes, and their names ---------------------------------------------
@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        ("shop/**", "shop/x.jpg", True), ("shop/**", "shop/a/b/x.jpg", True), ("shop/**", "shopping/x.jpg", False),
        ("**/*.tif", "x.tif", True), ("**/*.tif", "a/b/X.TIF", True), ("*.jpg", "a/x.jpg", False),
        ("Retouch/*.jpg", "retouch/x.jpg", True), ("shop/**/hero-?.jpg", "shop/a/hero-1.jpg", True),
        ("caf\u00e9/**", "cafe\u0301/x.jpg", True), ("STRASSE/*", "stra\u00dfe/x.jpg", True),  # NFD, folded case
    ],
)
def test_route_globs_match_relative_paths_with_double_star_across_folders(glob: str, path: str, expected: bool) -> None:
    assert matches(glob, P(path)) is expected


def test_the_first_matching_route_wins_and_unrouted_files_get_default(tmp_path: Path) -> None:
    rules = routing(load_settings(_config(tmp_path, SHOP)))
    assert rules.recipe_names(P("shop/special/x.jpg")) == ("white-2000",)  # shop/** comes first
    assert rules.recipe_names(P("retouch/a/x.jpg")) == ("default", "mask-only")
    assert rules.recipe_names(P("x.jpg")) == ("default",)


def test_each_recipe_names_its_files_from_the_claimed_name(tmp_path: Path) -> None:
    rules = routing(load_settings(_config(tmp_path, SHOP + "  - match: web/**\n    recipes: [web]\n")))
    assert [f.path.as_posix() for f in rules.files(P("shop/x.jpg"), claimed=P("shop/x.png"))] == ["shop/x.jpg"]
    assert [(f.path.as_posix(), f.mask) for f in rules.files(P("retouch/x.jpg"), claimed=P("retouch/x.png"))] == [
        ("retouch/x.png", False), ("retouch/x-mask.png", True)]
    assert [f.path.as_posix() for f in rules.files(P("web/x.png"), claimed=P("web/x.png.png"))] == ["web/web/x.png.webp"]


def test_a_batch_claims_every_derived_name_so_no_two_inputs_share_an_output() -> None:
    rules = Routing(recipes={"default": Recipe(), "mask": Recipe(mask="only")},
                    routes=[Route(match="**", recipes=("default", "mask"))])
    plan = plan_files([P("x.jpg"), P("x-mask.jpg")], routing=rules)
    names = [f.path.as_posix() for files in plan.values() for f in files]
    assert sorted(names) == ["x-mask-mask.png", "x-mask.png", "x.jpg-mask.png", "x.jpg.png"]


# --- cutout process -----------------------------------------------------------------------------------
def _photos(root: Path, *names: str) -> None:
    for name in names:
        write_image(root / name, subject_image(300, 400, BOX))


def _batch(tmp_path: Path, rules: Routing, **kwargs: object) -> list[str]:
    report = run_batch(tmp_path / "in", tmp_path / "out", model=BrightModel(), params=PipelineParams(),
                       progress=False, routing=rules, **kwargs)  # type: ignore[arg-type]
    assert not report.failed, report.failed
    return sorted(p.as_posix() for p in report.done)


def test_process_writes_each_routed_recipe_in_its_own_format(tmp_path: Path) -> None:
    _photos(tmp_path / "in", "shop/a.jpg", "retouch/b.jpg", "c.jpg")
    rules = routing(load_settings(_config(tmp_path, SHOP)))
    assert _batch(tmp_path, rules) == ["c.jpg", "retouch/b.jpg", "shop/a.jpg"]
    out = tmp_path / "out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "c.png", "retouch/b-mask.png", "retouch/b.png", "shop/a.jpg"]
    with Image.open(out / "shop/a.jpg") as shop:
        assert (shop.format, shop.mode, shop.size) == ("JPEG", "RGB", (400, 400))
    with Image.open(out / "retouch/b-mask.png") as mask, Image.open(out / "retouch/b.png") as cutout:
        assert mask.mode == "L" and np.array_equal(np.asarray(mask), np.asarray(cutout)[..., 3])


def test_process_recipe_applies_one_recipe_to_every_file(tmp_path: Path) -> None:
    _photos(tmp_path / "in", "shop/a.jpg", "b.jpg")
    _batch(tmp_path, routing(load_settings(_config(tmp_path, SHOP)), only="web"))
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.webp")) == ["a.webp", "b.webp"]
    with pytest.raises(ConfigError, match="--recipe: no recipe named 'nope'"):
        routing(load_settings(_config(tmp_path, SHOP)), only="nope")


def test_skip_existing_finishes_only_the_files_an_interrupted_batch_left(tmp_path: Path) -> None:
    _photos(tmp_path / "in", "a.jpg", "b.jpg", "c.jpg")
    rules = Routing(recipes={"default": Recipe(), "mask": Recipe(mask="only")},
                    routes=[Route(match="**", recipes=("default", "mask"))])
    assert _batch(tmp_path, rules) == ["a.jpg", "b.jpg", "c.jpg"]
    (tmp_path / "out" / "b.png").unlink()  # as if the batch was killed between b's two files
    (tmp_path / "out" / "c-mask.png").unlink()
    assert _batch(tmp_path, rules, skip="existing") == ["b.jpg", "c.jpg"]
    assert _batch(tmp_path, rules, skip="never") == ["a.jpg", "b.jpg", "c.jpg"]  # --force


def test_process_refuses_to_write_over_outputs_unless_told_which_way(tmp_path: Path) -> None:
    from daemon.work.batch import refuse_overwrite

    _photos(tmp_path / "in", "a.jpg", "b.jpg")
    rules = Routing(recipes={"default": Recipe()})
    refuse_overwrite(tmp_path / "in", tmp_path / "out", routing=rules)  # nothing there yet
    _batch(tmp_path, rules)
    (tmp_path / "out" / "a.png").unlink()
    with pytest.raises(ConfigError, match=r"1 of this batch's output files are already in .*\(first: b.png\): "
                                          r"--force writes them again, --skip-existing keeps them"):
        refuse_overwrite(tmp_path / "in", tmp_path / "out", routing=rules)


# --- the daemon's worker and cutout reprocess ------------------------------------------------------
@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    made = Folders(input=tmp_path / "in", output=tmp_path / "out", quarantine=tmp_path / "q",
                   archive=tmp_path / "archive", state=tmp_path / "state")
    for path in (made.input, made.output, made.quarantine, made.state):
        path.mkdir()
    return made


def _drain(worker: Worker, queue: JobQueue) -> None:
    for _ in range(300):
        worker.run_once(idle_wait=0.02)
        counts = queue.counts()
        if counts["running"] == counts["pending"] == 0:
            return
    raise AssertionError(queue.counts())


def _worker(folders: Folders, queue: JobQueue, rules: Routing, clock: FakeClock) -> Worker:
    queue.name_outputs(rules.name_deriver)
    return Worker(model=BrightModel(), params=PipelineParams(), folders=folders, queue=queue,
                  queue_settings=QueueSettings(), policy="keep", in_flight=2, cpu_threads=2, clock=clock,
                  routing=rules)


def test_the_worker_publishes_every_file_of_a_routed_job_and_reprocess_rewrites_them_with_the_new_recipe(
    folders: Folders, tmp_path: Path, clock: FakeClock
) -> None:
    queue = JobQueue(folders.state / "queue.sqlite3", clock=clock)
    for name in ("retouch/a.jpg", "retouch/b.jpg", "c.jpg"):
        write_image(folders.input / name, subject_image(300, 400, BOX))
        queue.offer(P(name), Fingerprint.of(folders.input / name))
    first = routing(load_settings(_config(tmp_path, SHOP)))
    _drain(_worker(folders, queue, first, clock), queue)
    assert sorted(p.relative_to(folders.output).as_posix() for p in folders.output.rglob("*.png")) == [
        "c.png", "retouch/a-mask.png", "retouch/a.png", "retouch/b-mask.png", "retouch/b.png"]

    changed = routing(load_settings(_config(tmp_path, SHOP.replace("[default, mask-only]", "[web]"))))
    assert reprocess(folders, target=Path("retouch"), routing=changed) == ["queued again: 2 files"]
    assert reprocess(folders, target=folders.input / "retouch", routing=changed) == ["queued again: 0 files"]
    _drain(_worker(folders, queue, changed, clock), queue)
    assert sorted(p.relative_to(folders.output / "web").as_posix() for p in (folders.output / "web").rglob("*")) == [
        "retouch", "retouch/a.webp", "retouch/b.webp"]
    with Image.open(io.BytesIO((folders.output / "web/retouch/a.webp").read_bytes())) as webp:
        assert webp.format == "WEBP" and webp.mode == "RGBA"
    with pytest.raises(ConfigError, match="is not in the hot folder"):
        reprocess(folders, target=tmp_path / "elsewhere", routing=changed)


def test_an_input_named_like_anothers_mask_gets_its_own_files_and_overwrites_nothing(
    folders: Folders, clock: FakeClock
) -> None:
    queue = JobQueue(folders.state / "queue.sqlite3", clock=clock)
    rules = Routing(recipes={"default": Recipe(), "mask": Recipe(mask="only")},
                    routes=[Route(match="**", recipes=("default", "mask"))])
    worker = _worker(folders, queue, rules, clock)
    write_image(folders.input / "x.jpg", subject_image(300, 400, BOX))
    write_image(folders.input / "x-mask.jpg", subject_image(300, 400, (20, 20, 120, 100)))  # another subject
    for name in ("x.jpg", "x-mask.jpg"):
        queue.offer(P(name), Fingerprint.of(folders.input / name))
    _drain(worker, queue)
    assert sorted(p.name for p in folders.output.iterdir()) == [
        "x-mask.jpg-mask.png", "x-mask.jpg.png", "x-mask.png", "x.png"]
    with Image.open(folders.output / "x.png") as cutout, Image.open(folders.output / "x-mask.png") as mask:
        assert np.array_equal(np.asarray(cutout)[..., 3], np.asarray(mask))  # x.jpg's matte, not x-mask.jpg's cutout


def test_a_rebuilt_queue_adopts_what_each_recipe_wrote_and_claims_it(
    folders: Folders, tmp_path: Path, clock: FakeClock
) -> None:
    from daemon.store.rebuild import rebuild_queue

    rules = Routing(recipes={"default": Recipe(), "white": Recipe(format="jpeg", background="#ffffff"),
                             "mask": Recipe(mask="only")},
                    routes=[Route(match="shop/**", recipes=("white", "mask"))])
    queue = JobQueue(folders.state / "queue.sqlite3", clock=clock)
    for name in ("shop/x.jpg", "shop/y.jpg", "z.jpg"):
        write_image(folders.input / name, subject_image(300, 400, BOX))
        queue.offer(P(name), Fingerprint.of(folders.input / name))
    _drain(_worker(folders, queue, rules, clock), queue)
    queue.close()
    (folders.output / "shop/y-mask.png").unlink()  # y lost one of its files: not done

    report = rebuild_queue(folders, routing=rules)
    assert (report.done, report.not_done) == (2, 1)
    rebuilt = JobQueue(folders.state / "queue.sqlite3", clock=clock)
    rebuilt.name_outputs(rules.name_deriver)
    assert {job.source.as_posix() for job in rebuilt.jobs(state="done")} == {"shop/x.jpg", "z.jpg"}
    rebuilt.offer(P("shop/x-mask.jpg"), Fingerprint(1, 1))  # shop/x-mask.png is x.jpg's mask, adopted and claimed
    job = rebuilt.get(P("shop/x-mask.jpg"))
    assert job is not None and job.output == P("shop/x-mask.jpg.png")
    rebuilt.close()


def test_the_store_is_told_of_derived_names_only_when_a_recipe_in_use_writes_one() -> None:
    from daemon.folders.routing import SEED_ROUTING

    assert SEED_ROUTING.name_deriver is None  # the seed's output alone: claims stay as cheap as before
    deep = Routing(recipes={"default": Recipe(), "deep": Recipe(bit_depth=16), "web": Recipe(format="webp")},
                   routes=[Route(match="a/**", recipes=("deep",))])
    assert Routing(recipes={"default": Recipe(), "deep": Recipe(bit_depth=16)}, routes=deep.routes).name_deriver \
        is None  # `deep` writes x.png too
    # `web` is defined: no route uses it, but `cutout review redo --recipe web` may choose it for one file.
    assert deep.name_deriver is not None and deep.name_deriver(P("a/x.jpg"), P("a/x.png"), None) == []
    assert deep.name_deriver(P("a/x.jpg"), P("a/x.png"), ("web",)) == [P("a/x.webp")]
    web = Routing(recipes=deep.recipes, routes=[Route(match="a/**", recipes=("web",))])
    assert web.name_deriver is not None and web.name_deriver(P("a/x.jpg"), P("a/x.png"), None) == [P("a/x.webp")]


def test_reprocess_after_a_new_recipe_keeps_every_name_and_leaves_a_file_whose_new_name_is_anothers(
    folders: Folders, clock: FakeClock
) -> None:
    """x.jpg and x-mask.jpg were cut out as x.png and x-mask.png. A mask recipe is added: x.jpg's
    mask would be x-mask.png, which is x-mask.jpg's cut-out. Reprocess keeps x.png (a name never
    changes once given), leaves x.jpg as it is and says why; x-mask.jpg gets its mask."""
    queue = JobQueue(folders.state / "queue.sqlite3", clock=clock)
    for name in ("x.jpg", "x-mask.jpg"):
        write_image(folders.input / name, subject_image(300, 400, BOX))
        queue.offer(P(name), Fingerprint.of(folders.input / name))
    _drain(_worker(folders, queue, SEED_ROUTING, clock), queue)
    before = {name: (folders.output / name).read_bytes() for name in ("x.png", "x-mask.png")}
    masked = Routing(recipes={"default": Recipe(), "mask": Recipe(mask="only")},
                     routes=[Route(match="**", recipes=("default", "mask"))])
    queue.close()

    lines = reprocess(folders, target=None, routing=masked)
    assert lines[0] == "queued again: 1 file"
    assert lines[1].startswith("left as it is: x.jpg") and "x-mask.png is x-mask.jpg's" in lines[1]
    queue = JobQueue(folders.state / "queue.sqlite3", clock=clock)
    _drain(_worker(folders, queue, masked, clock), queue)
    assert sorted(p.name for p in folders.output.iterdir()) == ["x-mask-mask.png", "x-mask.png", "x.png"]
    assert (folders.output / "x.png").read_bytes() == before["x.png"]
    job = queue.get(P("x.jpg"))
    assert job is not None and job.output == P("x.png") and job.state == "done"
    queue.close()


def test_a_changed_done_file_whose_new_recipe_names_anothers_file_never_overwrites_it(
    folders: Folders, clock: FakeClock
) -> None:
    """The same two files; x.jpg is replaced after the mask recipe is added: it keeps x.png, and
    its mask would overwrite x-mask.jpg's cut-out, so it is quarantined with the reason."""
    queue = JobQueue(folders.state / "queue.sqlite3", clock=clock)
    for name in ("x.jpg", "x-mask.jpg"):
        write_image(folders.input / name, subject_image(300, 400, BOX))
        queue.offer(P(name), Fingerprint.of(folders.input / name))
    _drain(_worker(folders, queue, SEED_ROUTING, clock), queue)
    theirs = (folders.output / "x-mask.png").read_bytes()
    masked = Routing(recipes={"default": Recipe(), "mask": Recipe(mask="only")},
                     routes=[Route(match="**", recipes=("default", "mask"))])
    write_image(folders.input / "x.jpg", subject_image(300, 400, (50, 50, 250, 200)))
    queue.offer(P("x.jpg"), Fingerprint.of(folders.input / "x.jpg"), content_hash=lambda: "new")
    _drain(_worker(folders, queue, masked, clock), queue)
    assert (folders.output / "x-mask.png").read_bytes() == theirs
    job = queue.get(P("x.jpg"))
    assert job is not None and job.state == "failed" and job.reason == "name_taken"
    assert "x-mask.png is the file of x-mask.jpg" in str(job.message)
    queue.close()
