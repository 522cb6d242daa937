"""The doubt score: each kind of wrong matte raises it through its own part, a clean one keeps it low.

Mattes are drawn on the spot at the model's scale; how well the score separates good cut-outs
from bad ones over hundreds of cases is measured by `python -m benchmarks.doubt`, not here.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from structlog.testing import capture_logs

from daemon.pipeline.doubt import LIMITS, doubt
from daemon.pipeline.matte import FloatArray

SIDE = 512
CLEAR = 0.2
"""A clean cut-out scores under this."""
DOUBTFUL = 0.5


def _subject(*, soft: float = 0.8) -> FloatArray:
    """An oval with a box on it, hard-edged (or as soft as `soft`, a blur's sigma in pixels)."""
    canvas = np.zeros((SIDE, SIDE), np.uint8)
    cv2.ellipse(canvas, (256, 300), (110, 150), 0, 0, 360, 255, -1)
    cv2.rectangle(canvas, (200, 100), (310, 200), 255, -1)
    return np.asarray(cv2.GaussianBlur(canvas.astype(np.float32) / 255, (0, 0), soft), np.float32)


@pytest.mark.parametrize("soft", [0.8, 6.0])
def test_a_clean_matte_hard_or_softly_edged_scores_low(soft: float) -> None:
    found = doubt(_subject(soft=soft))
    assert found.score < CLEAR, found.parts
    assert set(found.parts) == set(LIMITS) - {"unfounded"} and all(0.0 <= value <= 1.0 for value in found.parts.values())
    seen = doubt(_subject(soft=soft), image=_photo(_subject(soft=soft)))
    assert set(seen.parts) == set(LIMITS) and seen.parts["unfounded"] == 0.0 and seen.score < CLEAR


def _photo(present: FloatArray, *, seed: int = 3) -> FloatArray:
    """What the model saw: a textured orange subject where `present`, over a blue-grey backdrop
    with a light fall-off and sensor noise (0..1, H x W x 3)."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (SIDE, SIDE)).astype(np.float32), (0, 0), 1.5)
    subject = np.array([0.85, 0.5, 0.2], np.float32) + 0.05 * (texture / texture.std())[..., None]
    backdrop = np.array([0.35, 0.4, 0.5], np.float32) + 0.1 * np.linspace(0, 1, SIDE, dtype=np.float32)[:, None, None]
    a = present[..., None]
    noise = rng.normal(0, 0.01, (SIDE, SIDE, 3)).astype(np.float32)
    return np.asarray(np.clip(a * subject + (1 - a) * backdrop + noise, 0, 1), np.float32)


@pytest.mark.parametrize("soft", [0.8, 6.0])
def test_a_confident_cut_through_the_subject_is_unfounded_in_the_photo(soft: float) -> None:
    """Every pixel of the matte sure, a third of the subject missing: the matte alone scores it
    clean, the photo shows the subject's colour on both sides of the cut."""
    whole = _subject(soft=soft)
    cut = whole.copy()
    cut[:, 300:] = 0.0
    assert doubt(cut).score < CLEAR
    found = doubt(cut, image=_photo(whole))
    assert found.parts["unfounded"] > DOUBTFUL and found.score > DOUBTFUL, found.parts


def test_a_blob_of_backdrop_taken_in_confidently_is_unfounded_in_the_photo() -> None:
    whole = _subject()
    leaked = whole.copy()
    cv2.circle(leaked, (380, 300), 70, 1.0, -1)  # joined to the oval's right side, all backdrop
    found = doubt(leaked, image=_photo(whole))
    assert found.parts["unfounded"] > DOUBTFUL and found.score > DOUBTFUL, found.parts
    assert doubt(leaked).score < CLEAR


@pytest.mark.parametrize(("where", "radius"), [((256, 330), 70), ((90, 90), 50)], ids=["inside", "on-backdrop"])
def test_a_piece_wrong_all_the_way_round_is_unfounded(where: tuple[int, int], radius: int) -> None:
    """A disc wholly inside the subject, or wholly on the backdrop: no stretch of its outline
    has contrast, so the outline cannot be its own yardstick; the photo's spread is."""
    wrong = np.zeros((SIDE, SIDE), np.float32)
    cv2.circle(wrong, where, radius, 1.0, -1)
    found = doubt(wrong, image=_photo(_subject()))
    assert found.parts["unfounded"] > DOUBTFUL and found.score > DOUBTFUL, found.parts


def test_a_low_contrast_photo_is_judged_against_its_own_outline() -> None:
    """The same clean cut-out with the subject a few levels off the backdrop: its outline is
    weak everywhere alike, so nothing along it is unfounded."""
    whole = _subject()
    faint = 0.5 + 0.05 * (_photo(whole) - 0.5)
    assert doubt(whole, image=faint).parts["unfounded"] == 0.0


def test_a_fog_of_uncertainty_over_the_subject_is_doubtful() -> None:
    rng = np.random.default_rng(1)
    blotches = cv2.GaussianBlur(rng.normal(0, 1, (SIDE, SIDE)).astype(np.float32), (0, 0), 10)
    fogged = np.clip(0.5 * _subject() + 0.35 + 2.0 * blotches, 0, 1).astype(np.float32)
    found = doubt(fogged)
    assert found.score > DOUBTFUL and found.parts["fog"] == max(found.parts.values())


def test_a_fog_over_a_hairy_subject_is_not_diluted_by_its_long_outline() -> None:
    """Unsure patches inside a head of hair: the strands make the outline many times longer,
    but the share of the subject in doubt is what counts."""
    rng = np.random.default_rng(2)
    hairy = _subject()
    for _ in range(300):
        x, y = rng.uniform(150, 360), rng.uniform(100, 200)
        cv2.line(hairy, (int(x), int(y)), (int(x + rng.uniform(-90, 90)), int(y - rng.uniform(40, 95))), 1.0, 1)
    clean = doubt(hairy)
    fogged = hairy.copy()
    for centre in ((230, 330), (290, 380), (250, 260)):
        cv2.circle(fogged, centre, 28, 0.6, -1)
    assert clean.score < CLEAR and doubt(fogged).parts["fog"] > DOUBTFUL, (clean.parts, doubt(fogged).parts)


def test_a_cut_through_a_small_subject_counts_in_its_own_widths() -> None:
    """A quarter-size subject with a third cut off: the chord is short against the frame but
    long against the subject, and that is what the cut-out loses."""
    small = np.asarray(cv2.resize(_subject(), (SIDE // 4, SIDE // 4), interpolation=cv2.INTER_AREA), np.float32)
    whole = np.zeros((SIDE, SIDE), np.float32)
    whole[200:200 + SIDE // 4, 200:200 + SIDE // 4] = small
    cut = whole.copy()
    cut[:, 200 + 75:] = 0.0
    found = doubt(cut, image=_photo(whole))
    assert found.parts["unfounded"] > DOUBTFUL and doubt(whole, image=_photo(whole)).score < CLEAR, found.parts


def test_an_empty_matte_and_a_full_frame_are_doubtful_by_their_area() -> None:
    empty = np.full((SIDE, SIDE), 0.02, np.float32)
    full = np.full((SIDE, SIDE), 0.99, np.float32)
    for matte in (empty, full):
        found = doubt(matte)
        assert found.score > DOUBTFUL and found.parts["area"] == 1.0


def test_the_backdrop_taken_for_the_subject_runs_along_the_borders() -> None:
    found = doubt(1.0 - _subject())
    assert found.score > DOUBTFUL and found.parts["borders"] == 1.0


def test_two_subjects_of_a_size_are_doubtful_one_with_a_crumb_is_not() -> None:
    twin = _subject().copy()
    twin[:, :SIDE // 2] = twin[:, ::-1][:, :SIDE // 2]  # mirrored: the left half a subject of its own
    twin[:, SIDE // 2 - 60:SIDE // 2 + 60] = 0.0
    crumb = _subject().copy()
    cv2.circle(crumb, (60, 60), 8, 1.0, -1)
    assert doubt(twin).parts["pieces"] > DOUBTFUL and doubt(twin).score > DOUBTFUL
    assert doubt(crumb).score < CLEAR


def test_a_dropped_piece_nearer_the_centre_than_the_kept_one_counts_in_full() -> None:
    """The clean-up keeps the larger piece; when the smaller is the one in the middle of the
    frame, it likely kept an intruder at the side. The other way round the doubt is halved."""
    intruder_kept = np.zeros((SIDE, SIDE), np.float32)
    cv2.circle(intruder_kept, (256, 256), 60, 1.0, -1)
    cv2.circle(intruder_kept, (90, 90), 75, 1.0, -1)
    subject_kept = np.zeros((SIDE, SIDE), np.float32)
    cv2.circle(subject_kept, (256, 256), 75, 1.0, -1)
    cv2.circle(subject_kept, (90, 90), 60, 1.0, -1)
    assert doubt(intruder_kept).parts["pieces"] > DOUBTFUL > doubt(subject_kept).parts["pieces"] > 0.0


def test_of_two_pieces_of_a_size_the_score_judges_the_one_the_clean_up_keeps() -> None:
    """Equal areas: the clean-up keeps the first in raster order (here the one off-centre, so the
    centred one it drops counts in full), and the score must read that same piece."""
    from daemon.pipeline.postprocess import largest_component

    tied = np.zeros((SIDE, SIDE), np.float32)
    tied[40:140, 40:140] = 1.0
    tied[206:306, 206:306] = 1.0
    kept, _ = largest_component(tied, threshold=0.5)
    assert kept[90, 90] == 1.0 and kept[256, 256] == 0.0  # the clean-up's choice, for the record
    assert doubt(tied).parts["pieces"] == 1.0


def test_a_blurred_edge_far_wider_than_a_soft_one_is_doubtful() -> None:
    found = doubt(np.asarray(cv2.GaussianBlur(_subject(), (0, 0), 30), np.float32))
    assert found.score > DOUBTFUL


def test_the_score_combines_the_parts_so_that_any_clear_sign_is_enough() -> None:
    found = doubt(np.full((SIDE, SIDE), 0.02, np.float32))
    assert found.score == pytest.approx(1 - np.prod([1 - value for value in found.parts.values()]))


def test_every_cut_out_carries_its_doubt(tmp_path: object) -> None:
    """`finish` scores the model's matte over the image (the padding left out)."""
    from pathlib import Path

    from daemon.pipeline.constants import PipelineParams
    from daemon.pipeline.pipeline import process_image
    from daemon.testing import BrightModel
    from tests.conftest import subject_image, write_image

    path = write_image(Path(str(tmp_path)) / "a.png", subject_image(120, 160, (40, 30, 120, 90)))
    with capture_logs():
        result = process_image(path, model=BrightModel(), params=PipelineParams(target_size=128))
    judged = result.cutout.doubt
    assert judged is not None and judged.score < CLEAR and set(judged.parts) == set(LIMITS)


def test_a_batch_names_its_doubtful_files_at_the_end(tmp_path: object) -> None:
    """`cutout process` prints the doubtful cut-outs after the failures: a fog of mid-bright
    pixels over the subject leaves the stand-in model unsure inside it."""
    import io
    from pathlib import Path

    from daemon.pipeline.constants import PipelineParams
    from daemon.testing import BrightModel
    from daemon.work.batch import print_summary, run_batch
    from tests.conftest import foggy_image, subject_image, write_image

    root = Path(str(tmp_path))
    write_image(root / "in" / "clean.png", subject_image(200, 200, (40, 40, 160, 160)))
    write_image(root / "in" / "foggy.png", foggy_image(200, 200))
    with capture_logs():
        report = run_batch(root / "in", root / "out", model=BrightModel(), params=PipelineParams(target_size=128),
                           progress=False)
    out = io.StringIO()
    print_summary(report, input_dir=root / "in", out=out)
    assert sorted(p.name for p in report.doubtful) == ["foggy.png"] and len(report.done) == 2
    assert "DOUBTFUL foggy.png: doubt" in out.getvalue() and "fog" in out.getvalue()


# --- the flip pass ------------------------------------------------------------------------------------
def test_a_mirror_pass_that_agrees_adds_nothing_and_one_that_finds_another_subject_is_doubtful() -> None:
    from daemon.pipeline.doubt import FLIP_LIMITS

    whole = _subject()
    alone = doubt(whole)
    agreed = doubt(whole, mirrored=whole.copy())
    assert agreed.parts["flip"] == 0.0 and agreed.score == pytest.approx(alone.score) and "flip" not in alone.parts
    cut = whole.copy()
    cut[:, 300:] = 0.0  # a confident cut: every pixel sure, a part of the subject missing
    assert doubt(cut).score < CLEAR  # the matte alone cannot see it
    witnessed = doubt(cut, mirrored=whole)
    assert witnessed.parts["flip"] == 1.0 and witnessed.score > DOUBTFUL
    assert FLIP_LIMITS[0] < FLIP_LIMITS[1]


class _Lopsided:
    """A confidently wrong model: the bright-pixel rule, blind to the right part of whatever it is shown."""

    def __init__(self) -> None:
        from daemon.testing import BrightModel

        self.inner = BrightModel()
        self.calls = 0

    def predict(self, batch: FloatArray) -> FloatArray:
        self.calls += 1
        matte = self.inner.predict(batch).copy()
        matte[:, int(matte.shape[1] * 0.5):] = 0.0
        return matte


def test_a_confident_cut_by_a_model_is_caught_by_the_photo_and_by_the_flip_pass(tmp_path: object) -> None:
    from pathlib import Path

    from daemon.pipeline.constants import PipelineParams
    from daemon.work.batch import run_batch
    from tests.conftest import subject_image, write_image

    root = Path(str(tmp_path))
    write_image(root / "in" / "wide.png", subject_image(200, 300, (40, 15, 260, 185)))  # cut across 0.57 of the side
    for flip_pass, folder in ((False, "plain"), (True, "flipped")):
        model = _Lopsided()
        with capture_logs() as logs:
            report = run_batch(root / "in", root / folder, model=model, params=PipelineParams(target_size=128),
                               progress=False, flip_pass=flip_pass)
        assert model.calls == (2 if flip_pass else 1) and len(report.done) == 1
        [judged] = report.doubtful.values()  # the photo shows the cut either way ...
        assert judged.parts["unfounded"] > DOUBTFUL
        assert judged.parts.get("flip") == (1.0 if flip_pass else None)  # ... and so does the mirror
        [done] = [entry for entry in logs if entry["event"] == "image_done"]
        assert ("flip_pass" in done["timings"]) == flip_pass


def test_the_daemons_worker_runs_the_flip_pass_and_stores_its_part(tmp_path: object) -> None:
    from pathlib import Path, PurePosixPath

    from daemon.folders.outputs import Folders
    from daemon.pipeline.constants import PipelineParams
    from daemon.settings import QueueSettings
    from daemon.store.jobs import Fingerprint
    from daemon.store.sqlite import JobQueue
    from daemon.work.worker import Worker
    from tests.conftest import subject_image, write_image

    root = Path(str(tmp_path))
    folders = Folders(input=root / "in", output=root / "out", quarantine=root / "q", archive=root / "a",
                      state=root / "state")
    folders.output.mkdir(parents=True)
    path = write_image(folders.input / "wide.png", subject_image(200, 300, (40, 50, 260, 150)))
    queue = JobQueue(folders.state / "queue.sqlite3")
    queue.offer(PurePosixPath("wide.png"), Fingerprint.of(path))
    model = _Lopsided()
    worker = Worker(model=model, params=PipelineParams(target_size=128), folders=folders, queue=queue,
                    queue_settings=QueueSettings(), policy="keep", in_flight=1, cpu_threads=1, flip_pass=True)
    with capture_logs():
        for _ in range(100):
            worker.run_once(idle_wait=0.01)
            if queue.counts()["done"]:
                break
        worker.close()
    job = queue.get(PurePosixPath("wide.png"))
    assert job is not None and job.doubt_parts is not None and job.doubt_parts["flip"] == 1.0 and model.calls == 2
    queue.close()
