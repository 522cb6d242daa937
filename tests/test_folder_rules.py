"""No two of the input, output, quarantine, archive and state folders may be one place, or nested.

Each collision here once destroyed originals: a quarantined `c.png` overwritten by the cutout
of `c.jpg`, an archived original overwritten by a later cutout, `cutout process DIR DIR`
replacing PNG originals with their cutouts, `process DIR DIR/cutouts` cutting out its own
outputs on the next run. Folders are compared as the file system sees them: after symlinks
and `..`, and case-blind where the file system ignores case (macOS's default).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from daemon.cli.context import Context
from daemon.cli.main import main
from daemon.errors import ConfigError
from daemon.work.batch import run_batch
from daemon.folders.outputs import (
    Folders,
    folder_relation,
    is_case_insensitive,
    parts_inside,
    same_or_nested,
    validate_folders,
)
from daemon.folders.outputs import OriginalsPolicy
from daemon.pipeline import PipelineParams
from daemon.service import Host
from daemon.settings import FolderSettings
from daemon.testing import BrightModel
from tests.conftest import subject_image, write_image
from tests.fake_hub import FakeHub


# --- same_or_nested ------------------------------------------------------------------------------
def test_a_folder_is_the_same_as_itself_under_another_spelling(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert same_or_nested(tmp_path / "a", tmp_path / "a" / "b" / "..")
    assert folder_relation(tmp_path / "link", tmp_path / "a") == "is the same folder as"


def test_nesting_is_seen_both_ways_and_through_symlinks(tmp_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "hot").symlink_to(tmp_path / "in")
    assert folder_relation(tmp_path / "in" / "sub", tmp_path / "in") == "is inside"
    assert folder_relation(tmp_path / "in", tmp_path / "in" / "sub") == "contains"
    assert folder_relation(tmp_path / "elsewhere" / "hot" / "cutouts", tmp_path / "in") == "is inside"


def test_folders_that_do_not_exist_yet_are_compared_by_name(tmp_path: Path) -> None:
    assert folder_relation(tmp_path / "new" / "out" / "q", tmp_path / "new" / "out") == "is inside"
    assert folder_relation(tmp_path / "new" / "out", tmp_path / "new" / "out" / ".") == "is the same folder as"


def test_siblings_that_share_a_prefix_are_apart(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "output").mkdir()
    assert not same_or_nested(tmp_path / "out", tmp_path / "output")
    assert not same_or_nested(tmp_path / "a" / "out", tmp_path / "b" / "out")


def test_parts_are_compared_case_blind_only_when_the_file_system_is() -> None:
    hot, cutouts = ("/", "Users", "me", "Hot"), ("/", "users", "me", "hot", "cutouts")
    assert parts_inside(cutouts, hot, fold_case=True)
    assert not parts_inside(cutouts, hot, fold_case=False)
    assert not parts_inside(hot, cutouts, fold_case=True)


def test_case_insensitivity_is_detected_as_the_file_system_behaves(tmp_path: Path) -> None:
    (tmp_path / "probe").mkdir()
    ignores_case = (tmp_path / "PROBE").exists()  # what the file system does, asked directly
    assert is_case_insensitive(tmp_path / "probe") is ignores_case
    assert is_case_insensitive(tmp_path / "probe" / "not" / "yet") is ignores_case


@pytest.mark.skipif(
    not is_case_insensitive(Path(__file__).parent), reason="needs a case-insensitive file system (macOS's default)"
)
def test_on_a_case_insensitive_file_system_another_case_is_the_same_folder(tmp_path: Path) -> None:
    (tmp_path / "Hot").mkdir()
    assert folder_relation(tmp_path / "hot", tmp_path / "Hot") == "is the same folder as"
    assert folder_relation(tmp_path / "HOT" / "cutouts", tmp_path / "Hot") == "is inside"
    assert folder_relation(tmp_path / "New" / "q", tmp_path / "new") == "is inside"


# --- cutout watch: every pair of folders -------------------------------------------------------
def _folders(tmp_path: Path, **paths: Path) -> Folders:
    (tmp_path / "in").mkdir(exist_ok=True)
    settings = FolderSettings(input=tmp_path / "in", output=tmp_path / "out", **paths)
    return settings.resolve(default_state=tmp_path / "state")


def _refusal(folders: Folders, *, policy: OriginalsPolicy = "keep") -> str:
    with pytest.raises(ConfigError) as caught:
        validate_folders(folders, policy=policy)
    return str(caught.value)


def test_the_default_layout_is_accepted(tmp_path: Path) -> None:
    validate_folders(_folders(tmp_path), policy="archive")
    assert all((tmp_path / name).is_dir() for name in ("out", "quarantine", "archive", "state"))


def test_a_quarantine_that_is_the_output_folder_is_refused(tmp_path: Path) -> None:
    # A quarantined c.png would be overwritten by the cutout of c.jpg.
    message = _refusal(_folders(tmp_path, quarantine=tmp_path / "out"))
    out = tmp_path / "out"
    assert f"folders.quarantine ({out}) is the same folder as folders.output ({out})" in message
    assert "overwrite a quarantined original c.png" in message and "give each its own folder" in message


def test_an_archive_that_is_the_output_folder_is_refused_when_originals_are_archived(tmp_path: Path) -> None:
    message = _refusal(_folders(tmp_path, archive=tmp_path / "out"), policy="archive")
    assert "folders.archive" in message and "folders.output" in message and "an archived original" in message


def test_an_unused_archive_folder_is_not_held_against_the_config(tmp_path: Path) -> None:
    validate_folders(_folders(tmp_path, archive=tmp_path / "out"), policy="keep")


@pytest.mark.parametrize(
    ("paths", "policy", "expected"),
    [
        ({"state": "in/.cutout"}, "keep", "folders.state ({root}/in/.cutout) is inside folders.input ({root}/in)"),
        ({"state": "out"}, "keep", "folders.state ({root}/out) is the same folder as folders.output ({root}/out)"),
        ({"quarantine": "out/failed"}, "keep", "folders.quarantine ({root}/out/failed) is inside folders.output"),
        ({"quarantine": "."}, "keep", "folders.quarantine ({root}) contains folders.input ({root}/in)"),
        ({"archive": "quarantine"}, "archive", "folders.archive ({root}/quarantine) is the same folder as folders.quarantine"),
        ({"state": "quarantine/db"}, "keep", "folders.state ({root}/quarantine/db) is inside folders.quarantine"),
        ({"quarantine": "out/../out"}, "keep", "folders.quarantine ({root}/out) is the same folder as folders.output"),
    ],
)
def test_any_two_folders_in_one_place_are_refused_naming_both_settings(
    tmp_path: Path, paths: dict[str, str], policy: OriginalsPolicy, expected: str
) -> None:
    folders = _folders(tmp_path, **{name: tmp_path / rel for name, rel in paths.items()})
    assert expected.format(root=tmp_path) in _refusal(folders, policy=policy)


def test_a_symlink_does_not_hide_a_collision(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "failed").symlink_to(tmp_path / "out")
    message = _refusal(_folders(tmp_path, quarantine=tmp_path / "failed"))
    assert "folders.quarantine" in message and "is the same folder as folders.output" in message


def test_nothing_is_created_when_the_folders_collide(tmp_path: Path) -> None:
    _refusal(_folders(tmp_path, quarantine=tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()


def test_cutout_watch_exits_2_on_a_collision_before_loading_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    args = ["watch", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--quarantine", str(tmp_path / "out"), "--state", str(tmp_path / "state"),
            "--model", str(tmp_path / "no-such-model.torchscript")]
    assert main(args) == 2
    assert "folders.quarantine" in capsys.readouterr().err  # not the missing model


def test_service_install_dry_run_refuses_a_collision_and_creates_nothing(
    tmp_path: Path, torchscript_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hot").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        "folders:\n  input: hot\n  output: cutouts\n  quarantine: cutouts\n  state: state\n"
        f"model:\n  name: {torchscript_model}\n"
    )
    host = Host(system="Darwin", machine="arm64", home=tmp_path / "home", uid=501, python=Path(sys.executable))
    mac = Context(host=host, hf_home=tmp_path / "hf", hf_cache=tmp_path / "hf" / "hub",
                  default_state=tmp_path / "state", downloader=FakeHub(trees={}))
    assert main(["service", "install", "--config", str(config), "--dry-run"], context=mac) == 2
    assert "folders.quarantine" in capsys.readouterr().err
    assert not (tmp_path / "cutouts").exists() and not (tmp_path / "home").exists()


# --- cutout process IN OUT: the same rule ---------------------------------------------------------
def _process(tmp_path: Path, model: Path, *args: str) -> int:
    return main(["process", *args, "--model", str(model), "--device", "cpu"])


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder with a PNG original that a cutout of the same name would replace."""
    root = tmp_path / "photos"
    write_image(root / "c.png", subject_image(120, 160, (40, 30, 120, 90)))
    write_image(root / "d.jpg", subject_image(120, 160, (40, 30, 120, 90)))
    return root


def test_process_into_its_own_input_folder_is_refused_and_the_originals_stay(
    tmp_path: Path, torchscript_model: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (photos / "c.png").read_bytes()
    assert _process(tmp_path, torchscript_model, str(photos), str(photos)) == 2
    err = capsys.readouterr().err
    assert f"the output folder ({photos}) is the same folder as the input folder ({photos})" in err
    assert (photos / "c.png").read_bytes() == before and not (photos / "d.png").exists()


def test_process_into_a_folder_inside_its_input_is_refused(
    tmp_path: Path, torchscript_model: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Else the next run over the same folder cuts out the cutouts.
    assert _process(tmp_path, torchscript_model, str(photos), str(photos / "cutouts")) == 2
    assert "the output folder" in capsys.readouterr().err and not (photos / "cutouts").exists()


def test_process_of_a_folder_inside_its_output_is_refused(
    tmp_path: Path, torchscript_model: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _process(tmp_path, torchscript_model, str(photos), str(tmp_path)) == 2
    assert f"the output folder ({tmp_path}) contains the input folder ({photos})" in capsys.readouterr().err


def test_process_through_a_symlinked_output_is_refused(
    tmp_path: Path, torchscript_model: Path, photos: Path
) -> None:
    (tmp_path / "same").symlink_to(photos)
    before = (photos / "c.png").read_bytes()
    assert _process(tmp_path, torchscript_model, str(photos), str(tmp_path / "same")) == 2
    assert (photos / "c.png").read_bytes() == before


def test_process_refuses_a_state_folder_inside_its_input(
    tmp_path: Path, torchscript_model: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = (str(photos), str(tmp_path / "out"), "--state", str(photos / ".state"))
    assert _process(tmp_path, torchscript_model, *args) == 2
    assert "folders.state" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_process_into_a_separate_folder_still_works(tmp_path: Path, torchscript_model: Path, photos: Path) -> None:
    assert _process(tmp_path, torchscript_model, str(photos), str(tmp_path / "out")) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c.png", "d.png"]


def test_run_batch_itself_refuses_to_write_into_its_input(photos: Path) -> None:
    before = (photos / "c.png").read_bytes()
    with pytest.raises(ConfigError, match="the output folder"):
        run_batch(photos, photos, model=BrightModel(), params=PipelineParams(), progress=False)
    assert (photos / "c.png").read_bytes() == before
