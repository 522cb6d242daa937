"""`cutout model fetch` and pinned start-up: a fake hub behind the one seam, everything else real.

The fake download fills the session's real Hugging Face cache (HF_HOME from conftest) in
huggingface_hub's layout; loading then goes through transformers' real offline path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants
from huggingface_hub.utils.tqdm import are_progress_bars_disabled

from daemon.cli.context import Context, open_model
from daemon.cli.main import main
from daemon.errors import ConfigError, ModelLoadError
from daemon.models.fetch import PIN_FILE_NAME, ModelStore, Snapshot, fetch_model, hub_download, plan_load
from daemon.pipeline.modelspec import ModelSpec
from daemon.service import Host
from daemon.settings import ModelSettings, load_settings
from tests.conftest import subject_image, write_image
from tests.fake_hub import COMMIT_A, COMMIT_B, FakeHub, broken_model_dir, lay_out_snapshot, repo_folder, unique_repo

CACHE = Path(constants.HF_HUB_CACHE)


@pytest.fixture
def repo() -> str:
    return unique_repo()


@pytest.fixture
def hub(hf_model_dir: Path, tmp_path: Path) -> FakeHub:
    """main -> A (the tiny model); B is a later revision whose code must never run unasked."""
    broken = broken_model_dir(hf_model_dir, tmp_path / "revision-b")
    return FakeHub(trees={COMMIT_A: hf_model_dir, COMMIT_B: broken})


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def ctx(hub: FakeHub, state: Path, tmp_path: Path) -> Context:
    host = Host(system="Linux", machine="x86_64", home=tmp_path / "home", uid=1000, python=tmp_path / "python")
    return Context(
        host=host, hf_home=Path(constants.HF_HOME), hf_cache=CACHE, default_state=state, downloader=hub
    )


def _pins(state: Path) -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = json.loads((state / PIN_FILE_NAME).read_text())["models"]
    return models


def _config(tmp_path: Path, repo: str, *, revision: str | None = None, offline: bool = False) -> Path:
    path = tmp_path / "config.yaml"
    lines = [f"model:\n  name: hf:{repo}\n  device: cpu\n  offline: {str(offline).lower()}\n"]
    if revision is not None:
        lines.append(f"  revision: {revision}\n")
    path.write_text("".join(lines))
    return path


def _open(tmp_path: Path, repo: str, ctx: Context, *, revision: str | None = None, offline: bool = False) -> str:
    settings = load_settings(_config(tmp_path, repo, revision=revision, offline=offline))
    return open_model(settings, ctx=ctx).origin


# --- fetch -----------------------------------------------------------------------------------
def test_fetch_pins_the_commit_the_default_branch_resolved_to(
    repo: str, ctx: Context, hub: FakeHub, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "fetch", "--model", f"hf:{repo}", "--state", str(state)], context=ctx) == 0
    pin = _pins(state)[f"hf:{repo}"]
    assert pin["revision"] == COMMIT_A and pin["requested"] is None and pin["repo"] == repo
    assert {"config.json", "birefnet.py", "BiRefNet_config.py", "model.safetensors"} <= set(pin["files"])
    assert hub.calls == [(repo, None, False)]
    assert f"pinned hf:{repo} at {COMMIT_A}" in capsys.readouterr().out


def test_fetch_writes_the_pin_atomically_and_keeps_other_models_pins(
    ctx: Context, state: Path
) -> None:
    first, second = unique_repo(), unique_repo()
    for repo in (first, second):
        assert main(["model", "fetch", "--model", f"hf:{repo}", "--state", str(state)], context=ctx) == 0
    assert set(_pins(state)) == {f"hf:{first}", f"hf:{second}"}
    assert [p.name for p in state.iterdir()] == [PIN_FILE_NAME]  # no temp file left behind


def test_fetch_of_a_new_revision_changes_the_pin_deliberately_and_says_so(
    repo: str, ctx: Context, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["model", "fetch", "--model", f"hf:{repo}", "--state", str(state)], context=ctx)
    assert main(["model", "fetch", "--model", f"hf:{repo}", "--revision", COMMIT_B, "--state", str(state)],
                context=ctx) == 0
    assert _pins(state)[f"hf:{repo}"]["revision"] == COMMIT_B
    assert f"at {COMMIT_B} (was {COMMIT_A})" in capsys.readouterr().out


def test_fetch_of_a_local_model_is_refused(
    torchscript_model: Path, ctx: Context, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "fetch", "--model", str(torchscript_model), "--state", str(state)], context=ctx) == 2
    assert "is a local model: there is nothing to fetch" in capsys.readouterr().err
    assert not state.exists()


def test_a_download_that_resolves_to_no_commit_is_not_pinned(tmp_path: Path, state: Path) -> None:
    def branch_named(*, repo: str, revision: str | None, cache: Path, progress: bool) -> Snapshot:
        return Snapshot(commit="main", folder=tmp_path)

    store = ModelStore(pin_file=state / PIN_FILE_NAME, cache=CACHE)
    with pytest.raises(ModelLoadError, match="not a commit hash"):
        fetch_model(ModelSpec("hf", unique_repo()), revision=None, store=store, downloader=branch_named, progress=False)
    assert not state.exists()


def test_the_real_downloader_offline_fails_with_a_clear_message_and_restores_progress_bars(tmp_path: Path) -> None:
    before = are_progress_bars_disabled()
    with pytest.raises(ModelLoadError, match=r"could not download cutout-tests/absent @ default branch.*network"):
        hub_download(repo="cutout-tests/absent", revision=None, cache=tmp_path / "cache", progress=False)
    assert are_progress_bars_disabled() == before


# --- starting on the pin ----------------------------------------------------------------------
@pytest.mark.slow  # loads the tiny model through transformers twice
def test_a_later_start_loads_the_pinned_commit_offline_without_downloading(
    repo: str, ctx: Context, hub: FakeHub, state: Path, tmp_path: Path
) -> None:
    main(["model", "fetch", "--model", f"hf:{repo}", "--state", str(state)], context=ctx)
    hub.calls.clear()
    # Upstream moves on, and something else updates the shared cache: main now names B.
    lay_out_snapshot(CACHE, repo=repo, commit=COMMIT_B, source=hub.trees[COMMIT_B], ref="main")
    write_image(tmp_path / "in" / "a.jpg", subject_image(300, 400, (100, 80, 300, 220)))
    code = main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model", f"hf:{repo}",
                 "--state", str(state), "--device", "cpu"], context=ctx)
    assert code == 0 and (tmp_path / "out" / "a.png").is_file()  # revision B's code would have raised
    assert hub.calls == []


@pytest.mark.slow  # loads the tiny model through transformers
def test_the_loaded_model_reports_the_pinned_revision(repo: str, ctx: Context, state: Path, tmp_path: Path) -> None:
    main(["model", "fetch", "--model", f"hf:{repo}", "--state", str(state)], context=ctx)
    assert _open(tmp_path, repo, ctx) == f"Hugging Face {repo} @ {COMMIT_A}"


def test_a_config_revision_that_differs_from_the_pin_is_refused(
    repo: str, ctx: Context, hub: FakeHub, state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["model", "fetch", "--model", f"hf:{repo}", "--state", str(state)], context=ctx)
    config = _config(tmp_path, repo, revision=COMMIT_B)
    (tmp_path / "in").mkdir()
    code = main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--config", str(config),
                 "--state", str(state)], context=ctx)
    assert code == ModelLoadError.exit_status
    assert (
        f"model.revision {COMMIT_B} differs from the fetched pin {COMMIT_A} (hf:{repo}): "
        f"run `cutout model fetch --revision {COMMIT_B}` to change it deliberately"
    ) in capsys.readouterr().err
    assert len(hub.calls) == 1  # only the fetch: the refusal downloads nothing


def test_a_config_may_name_the_pinned_commit_or_the_branch_it_was_fetched_from(
    repo: str, ctx: Context, state: Path, tmp_path: Path
) -> None:
    main(["model", "fetch", "--model", f"hf:{repo}", "--revision", "main", "--state", str(state)], context=ctx)
    assert _open(tmp_path, repo, ctx, revision="main").endswith(COMMIT_A)
    assert _open(tmp_path, repo, ctx, revision=COMMIT_A).endswith(COMMIT_A)


def test_the_first_start_without_a_pin_fetches_and_pins_once(
    repo: str, ctx: Context, hub: FakeHub, state: Path, tmp_path: Path
) -> None:
    assert _open(tmp_path, repo, ctx).endswith(COMMIT_A)
    assert _open(tmp_path, repo, ctx).endswith(COMMIT_A)
    assert len(hub.calls) == 1 and _pins(state)[f"hf:{repo}"]["revision"] == COMMIT_A


def test_offline_without_a_pin_never_downloads(repo: str, ctx: Context, hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="could not load Hugging Face model"):
        _open(tmp_path, repo, ctx, offline=True)
    assert hub.calls == []


def test_a_pinned_model_whose_files_left_the_cache_is_refused_with_the_fix(
    repo: str, ctx: Context, state: Path, tmp_path: Path
) -> None:
    main(["model", "fetch", "--model", f"hf:{repo}", "--state", str(state)], context=ctx)
    for blob in (repo_folder(CACHE, repo) / "blobs").iterdir():
        blob.unlink()
    with pytest.raises(ModelLoadError, match=rf"pinned at {COMMIT_A}, but 4 of its 4 files .* not in the Hugging Face cache"):
        _open(tmp_path, repo, ctx)


def test_a_damaged_pin_file_says_how_to_recover(repo: str, ctx: Context, state: Path, tmp_path: Path) -> None:
    state.mkdir()
    (state / PIN_FILE_NAME).write_text("{not json")
    with pytest.raises(ModelLoadError, match="is damaged .*delete it and run `cutout model fetch` again"):
        _open(tmp_path, repo, ctx)


def test_local_models_are_never_pinned(hf_model_dir: Path, state: Path) -> None:
    store = ModelStore(pin_file=state / PIN_FILE_NAME, cache=CACHE)
    plan = plan_load(ModelSettings(name=f"hf:{hf_model_dir}"), store=store)
    assert plan.pin is None and not plan.needs_fetch and not plan.offline


def test_an_unwritable_state_folder_is_a_config_error(repo: str, ctx: Context, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = ModelStore(pin_file=blocker / "state" / PIN_FILE_NAME, cache=CACHE)
    with pytest.raises(ConfigError, match="cannot write the model pin"):
        fetch_model(ModelSpec("hf", repo), revision=None, store=store, downloader=ctx.downloader, progress=False)
