"""Loading the tiny real models through the real code paths, and choosing a device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from daemon.errors import ModelLoadError
from daemon.pipeline import PipelineParams
from daemon.pipeline.model import DeviceChoice, choose_device, export_torchscript, load_model
from daemon.pipeline.modelspec import BIREFNET_REPO, ModelSpec, parse_model_spec
from daemon.pipeline.preprocess import normalize, resize_and_pad
from tests import tiny_models
from tests.conftest import subject_image

CPU = DeviceChoice(torch.device("cpu"), "test")


class FakeAccelerators:
    """Stands in for hardware this machine lacks (the one seam for MPS)."""

    def __init__(self, *, mps: bool, cuda: bool) -> None:
        self.mps, self.cuda = mps, cuda

    def mps_available(self) -> bool:
        return self.mps

    def cuda_available(self) -> bool:
        return self.cuda


def _subject_batch() -> tuple[np.ndarray, np.ndarray]:
    """A normalised 1088 batch of a subject image, and the matte the tiny models must give."""
    padded, _ = resize_and_pad(subject_image(300, 400, (100, 80, 300, 220)), params=PipelineParams())
    expected = tiny_models.expected_foreground(torch.from_numpy(padded)).numpy()
    return normalize(padded, params=PipelineParams()), expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hf:ZhengPeng7/BiRefNet", ModelSpec("hf", BIREFNET_REPO)),
        ("hf:birefnet", ModelSpec("hf", BIREFNET_REPO)),
        ("birefnet", ModelSpec("native", BIREFNET_REPO, "birefnet")),
        ("BiRefNet-Lite", ModelSpec("native", "ZhengPeng7/BiRefNet_lite", "birefnet-lite")),
        ("hf:/models/local", ModelSpec("hf", "/models/local")),
        ("models/x.torchscript", ModelSpec("torchscript", "models/x.torchscript")),
    ],
)
def test_model_specs_name_a_hub_repo_a_folder_or_a_torchscript_file(text: str, expected: ModelSpec) -> None:
    assert parse_model_spec(text) == expected


@pytest.mark.parametrize(
    ("mps", "cuda", "expected"), [(True, True, "mps"), (False, True, "cuda"), (False, False, "cpu")]
)
def test_auto_prefers_mps_then_cuda_then_cpu(mps: bool, cuda: bool, expected: str) -> None:
    choice = choose_device("auto", accelerators=FakeAccelerators(mps=mps, cuda=cuda))
    assert choice.device.type == expected and "auto" in choice.reason


def test_mps_requested_without_mps_fails_clearly() -> None:
    with pytest.raises(ModelLoadError, match="MPS needs Apple Silicon"):
        choose_device("mps", accelerators=FakeAccelerators(mps=False, cuda=True))


def test_mps_requested_with_mps_is_chosen() -> None:
    assert choose_device("mps", accelerators=FakeAccelerators(mps=True, cuda=False)).device.type == "mps"


@pytest.mark.parametrize("kind", tiny_models.RETURN_KINDS)
def test_torchscript_model_loads_as_float32_and_predicts_the_bright_subject(tmp_path: Path, kind: str) -> None:
    path = tiny_models.build_torchscript_model(tmp_path / f"{kind}.pt", return_kind=kind)
    loaded = load_model(ModelSpec("torchscript", str(path)), device=CPU)
    assert all(p.dtype == torch.float32 for p in loaded.model.module.parameters())
    assert all(b.dtype == torch.float32 for b in loaded.model.module.buffers())
    batch, expected = _subject_batch()
    assert np.array_equal(loaded.model.predict(batch) > 0.5, expected)


def test_a_state_dict_file_is_refused_with_what_was_expected(tmp_path: Path) -> None:
    path = tiny_models.build_state_dict_file(tmp_path / "weights.pt")
    with pytest.raises(ModelLoadError, match="state_dict.*not a TorchScript model.*torch.jit.save"):
        load_model(ModelSpec("torchscript", str(path)), device=CPU)


def test_a_file_that_is_no_model_at_all_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(ModelLoadError, match="is not a TorchScript model"):
        load_model(ModelSpec("torchscript", str(path)), device=CPU)


def test_a_missing_model_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(ModelSpec("torchscript", str(tmp_path / "nope.pt")), device=CPU)


def test_hf_folder_loads_through_from_pretrained_with_its_weights(hf_model_dir: Path) -> None:
    loaded = load_model(parse_model_spec(f"hf:{hf_model_dir}"), device=CPU)
    assert "local Hugging Face folder" in loaded.origin
    batch, expected = _subject_batch()
    assert np.array_equal(loaded.model.predict(batch) > 0.5, expected)


def test_hf_folder_whose_model_replaces_its_config_still_loads_every_weight(tmp_path: Path) -> None:
    # The hub's BiRefNet does `self.config = Config()`, which breaks from_pretrained on transformers 5.
    folder = tiny_models.build_hf_model_dir(tmp_path / "quirky-birefnet", replace_config=True)
    loaded = load_model(parse_model_spec(f"hf:{folder}"), device=CPU)
    batch, expected = _subject_batch()
    assert np.array_equal(loaded.model.predict(batch) > 0.5, expected)


def test_a_hub_model_that_is_not_cached_fails_clearly_offline() -> None:
    with pytest.raises(ModelLoadError, match="could not load Hugging Face model"):
        load_model(parse_model_spec("hf:cutout-tests/not-a-real-repo"), device=CPU, offline=True)


def test_export_traces_the_hf_model_to_torchscript_with_the_same_output(tmp_path: Path, hf_model_dir: Path) -> None:
    loaded = load_model(parse_model_spec(f"hf:{hf_model_dir}"), device=CPU)
    out = export_torchscript(loaded.model.module, out=tmp_path / "exported.torchscript")
    reloaded = load_model(ModelSpec("torchscript", str(out)), device=CPU)
    batch, _ = _subject_batch()
    assert np.array_equal(reloaded.model.predict(batch), loaded.model.predict(batch))
