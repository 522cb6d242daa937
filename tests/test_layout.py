"""Inputs found in a tree, and output names that never collide."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from itertools import islice

from daemon.folders.layout import candidate_outputs, iter_inputs
from daemon.folders.routing import SEED_ROUTING, plan_files

P = PurePosixPath


def plan_outputs(inputs: list[PurePosixPath]) -> dict[PurePosixPath, PurePosixPath]:
    """The seed's one output per input, named as a batch names them (routing.plan_files)."""
    return {rel: files[0].path for rel, files in plan_files(inputs, routing=SEED_ROUTING).items()}


def test_inputs_are_found_recursively_skipping_hidden_files_folders_and_non_images(tmp_path: Path) -> None:
    for rel in ["a.jpg", "sub/deep/B.PNG", "sub/._B.PNG", ".hidden.jpg", "notes.txt", ".Trashes/x.jpg", "c.tiff"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert list(iter_inputs(tmp_path)) == [P("a.jpg"), P("c.tiff"), P("sub/deep/B.PNG")]


def test_outputs_mirror_the_tree_with_a_png_suffix() -> None:
    assert plan_outputs([P("a/b/c.jpg")]) == {P("a/b/c.jpg"): P("a/b/c.png")}


def test_inputs_sharing_a_stem_get_distinct_outputs_the_first_in_sorted_order_keeps_the_plain_name() -> None:
    plan = plan_outputs([P("x.png"), P("x.jpg"), P("X.webp")])
    assert plan == {P("X.webp"): P("X.png"), P("x.jpg"): P("x.jpg.png"), P("x.png"): P("x.png.png")}


def test_an_input_named_like_a_fallback_gets_the_next_free_name() -> None:
    plan = plan_outputs([P("x.jpg"), P("x.png"), P("x.png.png"), P("x.png.png.png")])
    assert plan == {
        P("x.jpg"): P("x.png"),
        P("x.png"): P("x.png.png"),
        P("x.png.png"): P("x.png.png.png"),
        P("x.png.png.png"): P("x.png.png.png.png"),
    }


def test_the_counter_is_used_when_the_plain_and_extension_names_are_taken() -> None:
    assert list(islice(candidate_outputs(P("X.JPG")), 4)) == [P("X.png"), P("X.JPG.png"), P("X.JPG.2.png"),
                                                               P("X.JPG.3.png")]
