"""The decoder's patch order is a property of each checkpoint: read from its repository's
`birefnet.py` (as text) at fetch, recorded in the pin, shown and used; an older pin gets it
without downloading the weights again.

The hub is the fake one behind the `Downloader` seam, laying out a real hub cache in a folder
of this test's own; the weights are a small stand-in file (these tests never load them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.cli.context import Context
from daemon.cli.main import main
from daemon.errors import ModelLoadError
from daemon.models.fetch import PIN_FILE_NAME, ModelPin, ModelStore, complete_pin, fetch_model, patch_order_for
from daemon.pipeline.modelspec import WEIGHTS_FILE, parse_model_spec
from daemon.pipeline.patchorder import PatchOrderFinding, patch_order_of_code
from daemon.service import Host
from tests.fake_hub import COMMIT_A, FakeHub
from tests.hub_code import EINOPS_CODE, LEGACY_CODE, UNKNOWN_CODE

LITE = parse_model_spec("birefnet-lite")


# --- reading the code ------------------------------------------------------------------------
def test_the_einops_call_is_read_as_the_einops_order() -> None:
    finding = patch_order_of_code(EINOPS_CODE)
    assert finding.order == "einops" and "image2patches" in finding.reason


def test_get_patches_batch_is_read_as_the_legacy_order() -> None:
    finding = patch_order_of_code(LEGACY_CODE)
    assert finding.order == "legacy" and "get_patches_batch" in finding.reason


@pytest.mark.parametrize("code", [
    UNKNOWN_CODE,
    "",
    # image2patches with only its batch-major default: no channel stacking the model knows
    "patches = image2patches(x, patch_ref=x4)\n",
    # a definition alone is no call
    "def get_patches_batch(self, x, p):\n    return x\n",
], ids=["other-layout", "empty", "default-transformation", "definition-only"])
def test_code_that_shows_neither_order_is_unknown_and_says_why(code: str) -> None:
    finding = patch_order_of_code(code)
    assert finding.order is None and "cannot be told" in finding.reason


def test_code_that_calls_both_orders_is_unknown() -> None:
    finding = patch_order_of_code(EINOPS_CODE + LEGACY_CODE)
    assert finding.order is None and "both" in finding.reason


# --- fetch records it --------------------------------------------------------------------------
def _tree(tmp_path: Path, code: str | None, name: str = "tree") -> Path:
    tree = tmp_path / name
    tree.mkdir()
    (tree / WEIGHTS_FILE).write_bytes(b"weights: never loaded by these tests")
    (tree / "config.json").write_text("{}")
    if code is not None:
        (tree / "birefnet.py").write_text(code)
    return tree


def _store(tmp_path: Path) -> ModelStore:
    return ModelStore(pin_file=tmp_path / "state" / PIN_FILE_NAME, cache=tmp_path / "hub")


@pytest.mark.parametrize(("code", "order"), [(EINOPS_CODE, "einops"), (LEGACY_CODE, "legacy"), (UNKNOWN_CODE, None),
                                             (None, None)], ids=["einops", "legacy", "unknown", "no-code"])
def test_fetch_records_the_order_the_revisions_code_uses(tmp_path: Path, code: str | None, order: str | None) -> None:
    store = _store(tmp_path)
    pin = fetch_model(LITE, revision=None, store=store, downloader=FakeHub(trees={COMMIT_A: _tree(tmp_path, code)}),
                      progress=False)
    assert pin.patch_order is not None and pin.patch_order.order == order
    recorded = json.loads(store.pin_file.read_text())["models"]["birefnet-lite"]["patch_order"]
    assert recorded["order"] == order and recorded["reason"] == pin.patch_order.reason
    assert store.pin(LITE) == pin  # read back as written


def test_an_hf_model_records_no_patch_order(tmp_path: Path) -> None:
    store = _store(tmp_path)
    pin = fetch_model(parse_model_spec("hf:someone/model"), revision=None, store=store,
                      downloader=FakeHub(trees={COMMIT_A: _tree(tmp_path, EINOPS_CODE)}), progress=False)
    assert pin.patch_order is None


def test_a_pin_with_an_unknown_order_value_is_refused_as_damaged(tmp_path: Path) -> None:
    store = _store(tmp_path)
    fetch_model(LITE, revision=None, store=store, downloader=FakeHub(trees={COMMIT_A: _tree(tmp_path, EINOPS_CODE)}),
                progress=False)
    store.pin_file.write_text(store.pin_file.read_text().replace('"order": "einops"', '"order": "sideways"'))
    with pytest.raises(ModelLoadError, match="is damaged"):
        store.pin(LITE)


# --- a pin made before the order was recorded ---------------------------------------------------
def _old_pin(tmp_path: Path, code: str | None, *, requested: str | None = "main") -> tuple[ModelStore, ModelPin, FakeHub]:
    """A pin as the previous version wrote it (no patch_order), over a snapshot holding the
    weights alone when `code` is None (the version that fetched only model.safetensors)."""
    store = _store(tmp_path)
    full = _tree(tmp_path, code if code is not None else EINOPS_CODE, "full")
    hub = FakeHub(trees={COMMIT_A: full})
    files = (WEIGHTS_FILE,) if code is None else None
    hub(repo=LITE.source, revision=COMMIT_A, cache=store.cache, progress=False, only=files)
    hub.calls.clear()
    hub.only.clear()
    pin = ModelPin(model="birefnet-lite", repo=LITE.source, requested=requested, revision=COMMIT_A,
                   files=files or (WEIGHTS_FILE, "birefnet.py", "config.json"), cache=str(store.cache),
                   fetched_at="2026-11-01T00:00:00+00:00")
    legacy_json = {"format": 1, "models": {"birefnet-lite": {k: v for k, v in pin.to_json().items() if k != "patch_order"}}}
    store.pin_file.parent.mkdir(parents=True)
    store.pin_file.write_text(json.dumps(legacy_json))
    return store, pin, hub


def test_an_older_pin_reads_its_order_from_the_snapshot_and_records_it_without_a_download(tmp_path: Path) -> None:
    store, pin, hub = _old_pin(tmp_path, LEGACY_CODE)
    loaded = store.pin(LITE)
    assert loaded is not None and loaded.patch_order is None
    assert patch_order_for(loaded, store=store).order == "legacy"
    completed = complete_pin(loaded, store=store, downloader=hub)
    assert hub.calls == [] and completed.patch_order is not None and completed.patch_order.order == "legacy"
    assert store.pin(LITE) == completed and completed.requested == "main" and completed.revision == COMMIT_A


def test_an_older_pin_without_the_code_is_refused_offline_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    store, pin, _ = _old_pin(tmp_path, None)
    with pytest.raises(ModelLoadError) as caught:
        complete_pin(pin, store=store, downloader=None)
    message = str(caught.value)
    assert f"cutout model fetch --revision {COMMIT_A}" in message and "not downloaded again" in message
    assert "patch_order" not in store.pin_file.read_text()  # nothing recorded from a guess


def test_an_older_pin_fetches_only_the_code_at_its_own_commit_never_the_weights_again(tmp_path: Path) -> None:
    store, pin, hub = _old_pin(tmp_path, None)
    weights = store.snapshot(pin) / WEIGHTS_FILE
    before = weights.resolve().stat()
    completed = complete_pin(pin, store=store, downloader=hub)
    assert hub.calls == [(LITE.source, COMMIT_A, False)] and hub.only == [("birefnet.py",)]
    assert completed.patch_order is not None and completed.patch_order.order == "einops"
    assert completed.requested == "main" and "birefnet.py" in completed.files
    after = weights.resolve().stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


# --- shown ---------------------------------------------------------------------------------------
def _ctx(tmp_path: Path, hub: FakeHub) -> Context:
    host = Host(system="Linux", machine="x86_64", home=tmp_path / "home", uid=1000, python=tmp_path / "python")
    return Context(host=host, hf_home=tmp_path, hf_cache=tmp_path / "hub", default_state=tmp_path / "state",
                   downloader=hub)


def test_model_list_shows_each_pinned_members_patch_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = FakeHub(trees={COMMIT_A: _tree(tmp_path, LEGACY_CODE)})
    ctx = _ctx(tmp_path, hub)
    state = ["--state", str(tmp_path / "state")]
    assert main(["model", "fetch", "--model", "birefnet-lite", *state], context=ctx) == 0
    capsys.readouterr()
    assert main(["model", "list"], context=ctx) == 0  # the default state folder: the one fetched into
    rows = {line[2:].split()[0]: line for line in capsys.readouterr().out.splitlines()[1:7]}
    assert " legacy " in rows["birefnet-lite"] and " - " in rows["birefnet"]


def test_doctor_says_which_patch_order_the_pinned_revision_uses(tmp_path: Path) -> None:
    from daemon.cli.doctor import check_model_cache
    from daemon.settings import load_settings

    store = _store(tmp_path)
    fetch_model(LITE, revision=None, store=store, downloader=FakeHub(trees={COMMIT_A: _tree(tmp_path, EINOPS_CODE)}),
                progress=False)
    (tmp_path / "c.yaml").write_text("model:\n  name: birefnet-lite\n")
    check = check_model_cache(load_settings(tmp_path / "c.yaml"), store=store)
    assert check.status == "ok" and "einops patch order" in check.detail


def test_the_patch_order_finding_survives_the_pin_round_trip() -> None:
    pin = ModelPin(model="birefnet", repo="r/r", requested=None, revision="a" * 40, files=("x",), cache="c",
                   fetched_at="t", patch_order=PatchOrderFinding("einops", "because"))
    assert ModelPin.from_json("birefnet", json.loads(json.dumps(pin.to_json()))) == pin
