"""The BiRefNet family by name, the built-in model loaded from a hub-style weights file, and
the faster precision and compile paths with their float32 check.

The architecture's numbers against the reference implementation are in test_birefnet_native.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from daemon.errors import ConfigError, ModelLoadError
from daemon.pipeline.birefnet import BiRefNet, build_birefnet
from daemon.pipeline.inference import TorchMatteModel
from daemon.pipeline.model import DeviceChoice, load_model
from daemon.pipeline.modelspec import FAMILY, ModelSpec, parse_model_spec
from daemon.pipeline.native import CheckpointMismatch, NativeCheckpoint, checkpoint_shapes, load_native, on_meta
from daemon.pipeline.patchorder import PatchOrderFinding
from daemon.pipeline.precision import Tolerance, compiled, difference, probe_batch, with_precision
from daemon.settings import load_settings
from tests import birefnet_weights

CPU = DeviceChoice(torch.device("cpu"), "cpu requested")
EINOPS = PatchOrderFinding("einops", "the test's weights are the einops model's")


# --- the family ------------------------------------------------------------------------------------
def test_every_family_member_parses_by_name_to_its_hub_repo_and_backbone() -> None:
    assert set(FAMILY) == {"birefnet", "birefnet-lite", "birefnet-hr", "birefnet-matting", "birefnet-portrait",
                           "birefnet-dynamic"}
    for name, family in FAMILY.items():
        spec = parse_model_spec(name.upper())
        assert spec == ModelSpec("native", family.repo, name) and str(spec) == name
    assert FAMILY["birefnet-lite"].backbone == "swin_v1_t" and FAMILY["birefnet"].backbone == "swin_v1_l"


def test_target_size_follows_the_model_unless_the_config_sets_it(tmp_path: Path) -> None:
    def size(text: str) -> int:
        (tmp_path / "c.yaml").write_text(text)
        return load_settings(tmp_path / "c.yaml").pipeline.target_size

    assert size("model:\n  name: birefnet-hr\n") == 2048
    assert size("model:\n  name: birefnet-hr\npipeline:\n  target_size: 0\n") == 2048
    assert size("model:\n  name: birefnet-hr\npipeline:\n  target_size: 1024\n") == 1024
    assert size("model:\n  name: birefnet\n") == 1088 and size("model:\n  name: hf:me/model\n") == 1088


def test_a_faster_precision_on_the_cpu_is_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("model:\n  device: cpu\n  precision: float16\n")
    with pytest.raises(ConfigError, match="model.precision: float16 needs a GPU"):
        load_settings(tmp_path / "c.yaml")


# --- loading the built-in model from a weights file --------------------------------------------------
def _rule_weights(tmp_path: Path, backbone: str) -> tuple[Path, torch.nn.Module]:
    model = birefnet_weights.load_rule_weights(build_birefnet(backbone, patch_order="einops"), backbone)  # type: ignore[arg-type]
    path = tmp_path / "model.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    return path, model


@pytest.mark.slow
def test_the_lite_model_loads_strictly_from_a_hub_weights_file_and_computes_as_the_module_it_came_from(
    tmp_path: Path,
) -> None:
    weights, reference = _rule_weights(tmp_path, "swin_v1_t")
    loaded = load_native(FAMILY["birefnet-lite"], NativeCheckpoint(weights, EINOPS))
    assert on_meta(loaded) == []  # every parameter and buffer got a value
    batch = birefnet_weights.golden_input(64)
    with torch.inference_mode():
        expected, found = reference(batch), loaded(batch)
    torch.testing.assert_close(found, expected, rtol=0.0, atol=1e-5)  # same weights; threads may reorder sums


@pytest.mark.slow
def test_load_model_runs_the_native_lite_model_as_a_matte_model(tmp_path: Path) -> None:
    weights, _ = _rule_weights(tmp_path, "swin_v1_t")
    loaded = load_model(parse_model_spec("birefnet-lite"), device=CPU, size=64, checkpoint=NativeCheckpoint(weights, EINOPS))
    assert loaded.warning is None and "built-in BiRefNet" in loaded.origin
    matte = loaded.model.predict(probe_batch(64))
    assert matte.shape == (64, 64) and matte.dtype == np.float32 and 0.0 <= matte.min() <= matte.max() <= 1.0


def test_a_checkpoint_that_does_not_fit_names_its_keys_before_anything_loads(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    save_file({"bb.renamed.weight": torch.zeros(2, 2), "decoder.conv_out1.0.weight": torch.zeros(1, 3)}, str(weights))
    assert checkpoint_shapes(weights) == {"bb.renamed.weight": [2, 2], "decoder.conv_out1.0.weight": [1, 3]}
    with pytest.raises(CheckpointMismatch) as caught:
        load_native(FAMILY["birefnet-lite"], NativeCheckpoint(weights, EINOPS))
    message = str(caught.value)
    assert "1 unexpected: bb.renamed.weight" in message and "with another shape: decoder.conv_out1.0.weight" in message
    assert "missing: " in message


@pytest.mark.slow  # transformers' loading machinery: seconds
def test_a_checkpoint_that_does_not_fit_falls_back_to_the_hubs_own_code_never_to_random_weights(
    tmp_path: Path, hf_model_dir: Path
) -> None:
    weights = tmp_path / "model.safetensors"
    save_file({"renamed.weight": torch.zeros(1)}, str(weights))
    spec = ModelSpec("native", str(hf_model_dir), "birefnet-lite")  # its hub repo: here a local folder
    loaded = load_model(spec, device=CPU, size=64, checkpoint=NativeCheckpoint(weights, EINOPS))
    assert loaded.warning is not None and "unexpected: renamed.weight" in loaded.warning
    assert "loaded the hub's own code" in loaded.warning and "its own code" in loaded.origin
    assert not isinstance(loaded.model.module, BiRefNet)  # the tiny hub model's own class


def test_an_unfetched_family_model_says_to_fetch_it() -> None:
    with pytest.raises(ModelLoadError, match="not fetched yet: run `cutout model fetch`"):
        load_model(parse_model_spec("birefnet"), device=CPU, size=64, checkpoint=None)


# --- precision and compile ---------------------------------------------------------------------------
class _Edges(torch.nn.Module):
    """Logits from the image's brightness through a convolution: a real small network."""

    def __init__(self, *, broken_below_float32: bool = False) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)
        torch.nn.init.constant_(self.conv.weight, 1.0)
        torch.nn.init.constant_(self.conv.bias, -2.0)
        self.broken = broken_below_float32

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self.conv(batch)
        # Stands in for a kernel that is wrong at reduced precision on some machine.
        return -logits if self.broken and batch.dtype != torch.float32 else logits


def _matte_model(module: torch.nn.Module) -> TorchMatteModel:
    return TorchMatteModel(module.eval(), device=torch.device("cpu"), size=64)


def test_a_precision_that_matches_float32_on_the_probe_is_used() -> None:
    model = _matte_model(_Edges())
    reference = model.predict(probe_batch(64))
    faster = with_precision(model, precision="bfloat16", reference=reference)
    assert faster.dtype == torch.bfloat16 and next(faster.module.parameters()).dtype == torch.bfloat16
    assert difference(reference, faster.predict(probe_batch(64))).within(Tolerance())


def test_a_precision_whose_matte_differs_from_float32_refuses_to_start_with_the_numbers() -> None:
    model = _matte_model(_Edges(broken_below_float32=True))
    reference = model.predict(probe_batch(64))
    with pytest.raises(ModelLoadError, match=r"bfloat16 gives another matte than float32 .*mean 0\.\d+.*use float32"):
        with_precision(model, precision="bfloat16", reference=reference)


def test_the_probe_image_has_both_subject_and_background() -> None:
    batch = probe_batch(128)
    assert batch.shape == (1, 3, 128, 128) and batch.dtype == np.float32
    assert batch.max() - batch.min() > 2.0  # a lit disc on a darker ground: the matte has edges to check


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compile_is_used_only_when_it_gives_the_eager_matte() -> None:
    model = _matte_model(_Edges())
    reference = model.predict(probe_batch(64))
    chosen, outcome = compiled(model, reference=reference)
    # With a C compiler (as here) inductor compiles on the CPU; without one the eager model stays.
    assert (chosen is not model and outcome.startswith("compiled")) or (chosen is model and "uncompiled" in outcome)
    assert difference(reference, chosen.predict(probe_batch(64))).within(Tolerance())
    broken = dataclasses.replace(Tolerance(), mean=-1.0)  # nothing can be within it: the eager model must stay
    assert compiled(model, reference=reference, tolerance=broken)[0] is model


def _family_context(tmp_path: Path, trees: dict[str, Path]) -> tuple[object, Path, Path]:
    """A real hub cache fed by a fake hub serving `trees` (commit -> folder), and a config for birefnet-lite."""
    from huggingface_hub import constants

    from daemon.cli.context import Context
    from daemon.service import Host
    from tests.fake_hub import FakeHub

    state = tmp_path / "state"
    host = Host(system="Linux", machine="x86_64", home=tmp_path / "home", uid=1000, python=tmp_path / "python")
    ctx = Context(host=host, hf_home=Path(constants.HF_HOME), hf_cache=Path(constants.HF_HUB_CACHE),
                  default_state=state, downloader=FakeHub(trees=trees, refs={"main": next(iter(trees))}))
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  name: birefnet-lite\n  device: cpu\nfolders:\n  state: {state}\n"
                      "pipeline:\n  target_size: 64\n")
    return ctx, config, state


@pytest.mark.slow
def test_a_family_model_is_fetched_and_pinned_and_loads_offline_into_the_built_in_code_never_the_repos(
    tmp_path: Path,
) -> None:
    from daemon.cli.context import open_model
    from daemon.cli.main import main
    from tests.fake_hub import COMMIT_A
    from tests.hub_code import EINOPS_CODE

    tree = tmp_path / "hub-tree"
    tree.mkdir()
    _rule_weights(tree, "swin_v1_t")
    (tree / "birefnet.py").write_text(EINOPS_CODE)  # the repository's code: read for its patch order, never run
    ctx, config, _ = _family_context(tmp_path, {COMMIT_A: tree})
    assert main(["model", "fetch", "--config", str(config)], context=ctx) == 0
    loaded = open_model(load_settings(config), ctx=ctx)  # type: ignore[arg-type]
    assert loaded.revision == COMMIT_A and "built-in BiRefNet, einops patch order" in loaded.origin
    assert loaded.warning is None and loaded.patch_order == "einops"
    assert isinstance(loaded.model.module, BiRefNet) and loaded.model.module.decoder.patch_order == "einops"
    assert loaded.model.predict(probe_batch(64)).shape == (64, 64)


@pytest.mark.slow  # Swin-T weights drawn, transformers' loading machinery: seconds
def test_a_checkpoint_whose_code_tells_no_patch_order_runs_the_hubs_own_code_and_says_why(
    tmp_path: Path, hf_model_dir: Path
) -> None:
    weights, _ = _rule_weights(tmp_path, "swin_v1_t")  # the keys fit: only the order is unknown
    unknown = PatchOrderFinding(None, "birefnet.py calls neither ...: its decoder's patch order cannot be told")
    spec = ModelSpec("native", str(hf_model_dir), "birefnet-lite")  # its hub repo: here a local folder
    loaded = load_model(spec, device=CPU, size=64, checkpoint=NativeCheckpoint(weights, unknown))
    assert loaded.warning is not None and "patch order cannot be told" in loaded.warning
    assert "loaded the hub's own code" in loaded.warning and loaded.patch_order is None
    assert not isinstance(loaded.model.module, BiRefNet)


@pytest.mark.slow
def test_a_pinned_revision_that_no_longer_fits_loads_offline_with_the_repos_own_code_and_says_why(
    tmp_path: Path, hf_model_dir: Path
) -> None:
    from daemon.cli.context import open_model
    from daemon.cli.main import main
    from tests.fake_hub import COMMIT_B

    ctx, config, _ = _family_context(tmp_path, {COMMIT_B: hf_model_dir})  # a "renamed" checkpoint, with its code
    assert main(["model", "fetch", "--config", str(config)], context=ctx) == 0
    (tmp_path / "c2.yaml").write_text(config.read_text().replace("device: cpu", "device: cpu\n  offline: true"))
    loaded = open_model(load_settings(tmp_path / "c2.yaml"), ctx=ctx)  # type: ignore[arg-type]
    assert loaded.warning is not None and "does not fit the birefnet-lite architecture" in loaded.warning
    assert not isinstance(loaded.model.module, BiRefNet) and loaded.revision == COMMIT_B


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_built_in_model_exports_to_torchscript_with_the_same_logits(tmp_path: Path) -> None:
    from daemon.pipeline.model import export_torchscript, load_torchscript_module

    weights, _ = _rule_weights(tmp_path, "swin_v1_t")
    native = load_native(FAMILY["birefnet-lite"], NativeCheckpoint(weights, EINOPS))
    out = export_torchscript(native, out=tmp_path / "lite.torchscript", input_res=64)
    traced = load_torchscript_module(out)
    batch = birefnet_weights.golden_input(64)
    with torch.inference_mode():
        expected = native(batch)
        found = traced(batch)
    torch.testing.assert_close(found, expected[-1] if isinstance(expected, (list, tuple)) else expected,
                               rtol=0.0, atol=1e-4)


def test_a_pin_made_under_the_old_hub_name_serves_the_family_name_after_an_upgrade(tmp_path: Path) -> None:
    from daemon.models.fetch import PIN_FILE_NAME, ModelPin, ModelStore

    store = ModelStore(pin_file=tmp_path / PIN_FILE_NAME, cache=tmp_path / "hub")
    store.record(ModelPin(model="hf:ZhengPeng7/BiRefNet", repo="ZhengPeng7/BiRefNet", requested=None,
                          revision="a" * 40, files=("model.safetensors", "birefnet.py"), cache=str(tmp_path / "hub"),
                          fetched_at="2026-11-01T00:00:00+00:00"))
    pin = store.pin(parse_model_spec("birefnet"))
    assert pin is not None and pin.revision == "a" * 40 and pin.model == "birefnet"
    assert store.pin(parse_model_spec("birefnet-lite")) is None  # another repository: not this pin
