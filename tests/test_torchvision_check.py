"""torchvision against torch (`cutout doctor`), and install hints that name a command that works.

The real mismatch needs two torch builds and a download; the decision is tested with the
version strings and messages of the real case (torch 2.13.0+cpu installed under torchvision
0.29.1, which requires torch>=2.14.0; or PyPI's CUDA torchvision 0.28.0 on that CPU torch),
and the probe runs for real: on this environment, and on a torchvision without its compiled
operators, which is what a mismatched one is to torch.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from daemon.cli.main import main
from daemon.errors import ModelLoadError
from daemon.models.torchvision_check import TorchFacts, read_facts, satisfies, torch_requirement, verdict
from daemon.pipeline.installs import birefnet_install_command, matching_torchvision_command
from daemon.pipeline.model import load_hf_module
from tests import tiny_models

NMS_MISSING = "RuntimeError: operator torchvision::nms does not exist"
CPU_FIX = "pip install 'torch==2.13.0' torchvision --index-url https://download.pytorch.org/whl/cpu"


# --- The decision, on the real case's facts --------------------------------------------------------
def test_torch_pinned_under_a_torchvision_for_a_newer_one_fails_with_the_command_that_fixes_it() -> None:
    facts = TorchFacts(torch="2.13.0+cpu", torchvision="0.29.1", torch_requirement=">=2.14.0", error=NMS_MISSING)
    found = verdict(facts, needed=True)
    assert found.status == "FAIL"
    assert "torchvision 0.29.1 requires torch>=2.14.0 but torch 2.13.0+cpu is installed" in found.detail
    assert "operator torchvision::nms does not exist" in found.detail and "no Hugging Face model loads" in found.detail
    assert found.fix == CPU_FIX


def test_a_cuda_torchvision_on_a_cpu_torch_fails_although_the_versions_match() -> None:
    facts = TorchFacts(torch="2.13.0+cpu", torchvision="0.28.0", torch_requirement="==2.13.0", error=NMS_MISSING)
    found = verdict(facts, needed=True)
    assert found.status == "FAIL" and "does not fit torch 2.13.0+cpu" in found.detail
    assert found.fix == CPU_FIX


def test_a_version_conflict_fails_even_before_the_import_does() -> None:
    facts = TorchFacts(torch="2.14.1", torchvision="0.28.0", torch_requirement="==2.13.0", error=None)
    found = verdict(facts, needed=True)
    assert found.status == "FAIL" and "requires torch==2.13.0 but torch 2.14.1 is installed" in found.detail
    assert found.fix == "pip install 'torch==2.14.1' torchvision"  # a PyPI build: no other index


def test_a_matching_pair_is_ok() -> None:
    facts = TorchFacts(torch="2.14.1", torchvision="0.29.1", torch_requirement=">=2.14.0", error=None)
    assert verdict(facts, needed=True).status == "ok"


def test_a_broken_torchvision_only_warns_when_the_model_does_not_need_it() -> None:
    facts = TorchFacts(torch="2.13.0+cpu", torchvision="0.29.1", torch_requirement=">=2.14.0", error=NMS_MISSING)
    found = verdict(facts, needed=False)
    assert found.status == "warn" and found.fix == CPU_FIX


def test_a_missing_torchvision_fails_only_for_a_hub_model_and_says_how_to_install_it() -> None:
    facts = TorchFacts(torch="2.13.0+cpu", torchvision=None)
    missing = verdict(facts, needed=True)
    assert missing.status == "FAIL" and "not installed" in missing.detail
    assert missing.fix == birefnet_install_command("2.13.0+cpu")
    assert verdict(facts, needed=False).status == "skip"


@pytest.mark.parametrize(
    ("requires", "expected"),
    [
        (["numpy", "torch (==2.13.0)", "pillow (!=8.3.*,>=5.3.0)", "gdown (>=4.7.3) ; extra == 'gdown'"], "==2.13.0"),
        (["numpy", "torch (>=2.14.0)", "pillow (!=8.3.*,>=5.3.0)"], ">=2.14.0"),
        (["torch==2.8.0", "torchaudio"], "==2.8.0"),
        (["numpy", "scipy ; extra == 'scipy'"], None),
        (["torchaudio==2.8.0", "torch ; platform_system == 'Linux'"], None),
    ],
)
def test_torchvisions_requirement_on_torch_is_read_from_its_metadata_lines(
    requires: list[str], expected: str | None
) -> None:
    assert torch_requirement(requires) == expected


@pytest.mark.parametrize(
    ("version", "requirement", "expected"),
    [
        ("2.13.0+cpu", "==2.13.0", True),
        ("2.13.0+cpu", ">=2.14.0", False),
        ("2.14.1", ">=2.14.0", True),
        ("2.14.1", "==2.13.0", False),
        ("2.13.1", "==2.13.*", True),
        ("2.14", "==2.14.0", True),
        ("2.13.0", ">=2.4,<3", True),
        ("3.0.0", ">=2.4,<3", False),
        ("2.13.0", "~=2.13", None),
    ],
)
def test_torch_versions_are_compared_with_the_requirement(version: str, requirement: str, expected: bool | None) -> None:
    assert satisfies(version, requirement) is expected


def test_commands_keep_the_installed_torch_build() -> None:
    assert matching_torchvision_command("2.13.0+cpu") == CPU_FIX
    assert matching_torchvision_command("2.14.1+cu128") == (
        "pip install 'torch==2.14.1' torchvision --index-url https://download.pytorch.org/whl/cu128"
    )
    assert matching_torchvision_command("2.14.1") == "pip install 'torch==2.14.1' torchvision"


# --- The real probe ----------------------------------------------------------------------------------
def test_the_probe_reports_this_environment_as_it_is() -> None:
    facts = read_facts()
    assert facts.torch == metadata.version("torch")
    try:
        installed: str | None = metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        installed = None
    assert facts.torchvision == installed
    if installed is None:  # the test environment: torchvision matters only for hub models
        assert verdict(facts, needed=False).status == "skip"
        assert "not installed" in verdict(facts, needed=True).detail
    else:  # a working environment must pass, or the check would cry wolf
        assert facts.error is None and verdict(facts, needed=True).status == "ok"


def _torchvision_without_operators(root: Path, *, version: str, requires: str) -> Path:
    """A torchvision whose compiled operators did not load: an empty package, with its metadata."""
    (root / "torchvision").mkdir(parents=True)
    (root / "torchvision" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    info = root / f"torchvision-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: torchvision\nVersion: {version}\nRequires-Dist: numpy\nRequires-Dist: {requires}\n"
    )
    return root


@pytest.mark.slow  # a real interpreter imports torch and a broken torchvision
def test_the_probe_finds_torchvision_operators_missing_for_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _torchvision_without_operators(tmp_path / "site", version="0.29.1", requires="torch (>=99.0)")
    monkeypatch.setenv("PYTHONPATH", str(root))
    facts = read_facts(python=sys.executable)
    assert facts.torchvision == "0.29.1" and facts.torch_requirement == ">=99.0"
    assert facts.error is not None and "torchvision" in facts.error and "nms" in facts.error


@pytest.mark.slow  # a real interpreter imports torch and a broken torchvision
def test_doctor_fails_on_a_torchvision_that_does_not_fit_and_prints_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _torchvision_without_operators(tmp_path / "site", version="0.29.1", requires="torch (>=99.0)")
    monkeypatch.setenv("PYTHONPATH", str(root))
    main(["doctor", "--device", "cpu", "--state", str(tmp_path / "state"), "--model", "hf:ZhengPeng7/BiRefNet"])
    out = capsys.readouterr().out
    torch_version = metadata.version("torch")
    assert f"[FAIL] torchvision: torchvision 0.29.1 requires torch>=99.0 but torch {torch_version} is installed" in out
    assert f"fix: {matching_torchvision_command(torch_version)}" in out


# --- Install hints -------------------------------------------------------------------------------------
def test_the_birefnet_hint_names_the_checkout_command_and_the_installed_one() -> None:
    hint = birefnet_install_command("2.13.0+cpu")
    assert hint.startswith(CPU_FIX + ", then pip install -e '.[birefnet]' (in the cutout checkout")
    assert "pip install 'cutout-daemon[birefnet]' works from any folder" in hint


def test_a_hub_model_whose_code_needs_a_missing_package_says_how_to_install_the_extra(tmp_path: Path) -> None:
    model_dir = tiny_models.build_hf_model_dir(tmp_path / "needs-missing-package")
    modeling = model_dir / f"{tiny_models.HF_MODEL_MODULE}.py"
    modeling.write_text("import cutout_absent_package_for_this_test\n" + modeling.read_text())
    with pytest.raises(ModelLoadError) as raised:
        load_hf_module(str(model_dir), revision=None, offline=True)
    message = str(raised.value)
    assert "cutout_absent_package_for_this_test" in message
    assert birefnet_install_command(metadata.version("torch")) in message
