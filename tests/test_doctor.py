"""`cutout doctor`'s checks: folders, macOS privacy, MPS, the model cache and the service.

Platform-dependent checks take the host as an argument: "macOS on Apple Silicon" is a Host
value, the GPU is a fake Accelerators, launchctl/systemctl are fake executables on PATH.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from daemon.cli.context import Context
from daemon.cli.main import main
from daemon.cli.doctor import (
    Check,
    check_agent,
    check_folder,
    check_folders,
    check_model_cache,
    check_mps,
    check_privacy,
    protected_place,
    report,
    service_paths,
)
from daemon.folders.outputs import Folders
from daemon.models.fetch import PIN_FILE_NAME, ModelStore, fetch_model
from daemon.pipeline.modelspec import ModelSpec
from daemon.service import Host
from daemon.settings import ModelSettings, Settings
from tests.fake_hub import COMMIT_A, COMMIT_B, FakeHub, repo_folder, unique_repo
from tests.service_fakes import (  # noqa: F401  (fake_* are fixtures)
    LABEL,
    RUNNING_PRINT,
    STOPPED_PRINT,
    SYSTEMD_FAILED,
    SYSTEMD_RUNNING,
    UID,
    FakeTool,
    fake_bin,
    fake_launchctl,
    fake_systemctl,
)


class FakeAccelerators:
    def __init__(self, *, mps: bool) -> None:
        self.mps = mps

    def mps_available(self) -> bool:
        return self.mps

    def cuda_available(self) -> bool:
        return False


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _host(home: Path, *, system: str = "Darwin", machine: str = "arm64", python: Path | None = None) -> Host:
    return Host(system=system, machine=machine, home=home, uid=UID, python=python or Path(sys.executable))


def _folders(tmp_path: Path, **paths: Path) -> Folders:
    defaults = {name: tmp_path / name for name in ("input", "output", "quarantine", "archive", "state")}
    return Folders(**(defaults | paths))


# --- folders ---------------------------------------------------------------------------------
def test_existing_writable_folders_pass_and_missing_outputs_will_be_created(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "output").mkdir()
    checks = {c.name: c for c in check_folders(_folders(tmp_path), policy="keep")}
    assert set(checks) == {"folders.input", "folders.output", "folders.quarantine", "folders.state"}
    assert all(c.status == "ok" for c in checks.values())
    assert "creates it at start" in checks["folders.quarantine"].detail
    assert not (tmp_path / "quarantine").exists()  # doctor creates nothing


def test_a_missing_hot_folder_fails_with_the_command_that_creates_it(tmp_path: Path) -> None:
    check = check_folder("input", tmp_path / "Hot", hot=tmp_path / "Hot")
    assert check.status == "FAIL" and check.fix == f"create it: mkdir -p '{tmp_path / 'Hot'}'"


def test_a_folder_that_cannot_be_created_fails(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    check = check_folder("output", tmp_path / "a-file" / "out", hot=tmp_path / "input")
    assert check.status == "FAIL" and "cannot be created" in check.detail


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_folder_fails(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert check_folder("output", locked, hot=tmp_path / "input").status == "FAIL"
    finally:
        locked.chmod(0o700)


def test_an_output_inside_the_hot_folder_fails(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    check = check_folder("output", tmp_path / "input" / "out", hot=tmp_path / "input")
    assert check.status == "FAIL" and "inside the hot folder" in check.detail


def test_without_configured_folders_the_folder_check_is_skipped() -> None:
    assert [c.status for c in check_folders(None, policy="keep")] == ["skip"]


# --- macOS privacy ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("relative", "place"),
    [
        ("Desktop/Hot", "Desktop"),
        ("Documents/Shoots/in", "Documents"),
        ("Downloads", "Downloads"),
        ("Library/Mobile Documents/com~apple~CloudDocs/Hot", "iCloud Drive"),
        ("desktop/hot", "Desktop"),  # APFS ignores case by default
        ("Pictures/Hot", None),
        ("HotFolder", None),
    ],
)
def test_protected_places_are_desktop_documents_downloads_and_icloud(home: Path, relative: str, place: str | None) -> None:
    assert protected_place(home / relative, home=home) == place


def test_volumes_are_protected_and_a_symlink_into_the_desktop_is_too(home: Path, tmp_path: Path) -> None:
    assert protected_place(Path("/Volumes/NAS/hot"), home=home) == "an external or network volume"
    (home / "Desktop" / "Hot").mkdir(parents=True)
    (tmp_path / "link").symlink_to(home / "Desktop" / "Hot")
    assert protected_place(tmp_path / "link", home=home) == "Desktop"


def test_a_protected_folder_warns_with_the_exact_full_disk_access_steps(home: Path, tmp_path: Path) -> None:
    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(os.path.realpath(sys.executable))
    host = _host(home, python=venv_python)
    check = check_privacy({"folders.input": home / "Documents" / "Hot"}, host=host, label=LABEL)
    assert check.status == "warn"
    assert f"folders.input {home / 'Documents' / 'Hot'} is in Documents" in check.detail
    assert (
        "System Settings > Privacy & Security > Full Disk Access > click + > press Cmd-Shift-G, "
        f"paste {os.path.realpath(sys.executable)} > Open > switch it on" in check.fix
    )
    assert f"launchctl kickstart -k gui/{UID}/{LABEL}" in check.fix


def test_folders_outside_protected_places_need_no_grant(home: Path) -> None:
    assert check_privacy({"folders.input": home / "HotFolder"}, host=_host(home), label=LABEL).status == "ok"


def test_privacy_is_skipped_off_macos(home: Path) -> None:
    check = check_privacy({"folders.input": home / "Desktop"}, host=_host(home, system="Linux"), label=LABEL)
    assert check.status == "skip"


def test_the_service_reads_its_python_environment_config_and_every_folder(home: Path, tmp_path: Path) -> None:
    host = _host(home, python=home / "Documents" / "cutout" / ".venv" / "bin" / "python")
    paths = service_paths(host=host, config=tmp_path / "c.yaml", folders=_folders(tmp_path), policy="archive")
    assert paths["the Python environment"] == home / "Documents" / "cutout" / ".venv"
    assert {"config", "folders.input", "folders.archive", "folders.state"} <= set(paths)
    assert check_privacy(paths, host=host, label=LABEL).status == "warn"


# --- MPS -------------------------------------------------------------------------------------------
def test_mps_on_apple_silicon_passes_when_torch_can_use_the_gpu(home: Path) -> None:
    assert check_mps(host=_host(home), accelerators=FakeAccelerators(mps=True)).status == "ok"


def test_mps_missing_on_apple_silicon_fails_with_a_fix(home: Path) -> None:
    check = check_mps(host=_host(home), accelerators=FakeAccelerators(mps=False))
    assert check.status == "FAIL" and "about a minute per image" in check.detail and "pip install" in check.fix


@pytest.mark.parametrize(("system", "machine"), [("Linux", "x86_64"), ("Linux", "aarch64"), ("Darwin", "x86_64")])
def test_mps_is_skipped_where_there_is_no_apple_silicon(home: Path, system: str, machine: str) -> None:
    check = check_mps(host=_host(home, system=system, machine=machine), accelerators=FakeAccelerators(mps=False))
    assert check.status == "skip"


# --- model cache ----------------------------------------------------------------------------------
def _store(tmp_path: Path, cache: Path) -> ModelStore:
    return ModelStore(pin_file=tmp_path / "state" / PIN_FILE_NAME, cache=cache)


def _hub_settings(repo: str, *, revision: str | None = None) -> Settings:
    return Settings(model=ModelSettings(name=f"hf:{repo}", revision=revision))


def test_a_fetched_model_with_every_file_cached_passes(tmp_path: Path, hf_model_dir: Path) -> None:
    repo, store = unique_repo(), _store(tmp_path, tmp_path / "hub")
    fetch_model(ModelSpec("hf", repo), revision=None, store=store, downloader=FakeHub(trees={COMMIT_A: hf_model_dir}),
                progress=False)
    check = check_model_cache(_hub_settings(repo), store=store)
    assert check.status == "ok" and f"pinned at {COMMIT_A}" in check.detail and "loads offline" in check.detail


def test_a_model_that_was_never_fetched_fails_with_the_fetch_command(tmp_path: Path) -> None:
    check = check_model_cache(_hub_settings(unique_repo()), store=_store(tmp_path, tmp_path / "hub"))
    assert check.status == "FAIL" and "has not been fetched" in check.detail
    assert check.fix == "fetch it once with network access: cutout model fetch --config F"


def test_a_pinned_model_missing_from_the_cache_or_on_another_revision_fails(tmp_path: Path, hf_model_dir: Path) -> None:
    repo, store = unique_repo(), _store(tmp_path, tmp_path / "hub")
    fetch_model(ModelSpec("hf", repo), revision=None, store=store, downloader=FakeHub(trees={COMMIT_A: hf_model_dir}),
                progress=False)
    assert "differs from the fetched pin" in check_model_cache(_hub_settings(repo, revision=COMMIT_B), store=store).detail
    (repo_folder(tmp_path / "hub", repo) / "snapshots" / COMMIT_A / "model.safetensors").unlink()
    check = check_model_cache(_hub_settings(repo), store=store)
    assert check.status == "FAIL" and "model.safetensors" in check.detail


def test_a_local_model_needs_no_cache(tmp_path: Path, torchscript_model: Path) -> None:
    settings = Settings(model=ModelSettings(name=str(torchscript_model)))
    assert check_model_cache(settings, store=_store(tmp_path, tmp_path / "hub")).status == "skip"


# --- the service ----------------------------------------------------------------------------------
def test_a_loaded_running_agent_passes(home: Path, fake_launchctl: FakeTool) -> None:
    fake_launchctl.set_loaded(RUNNING_PRINT)
    check = check_agent(host=_host(home), label=LABEL)
    assert check.status == "ok" and "running (pid 4242)" in check.detail
    assert fake_launchctl.calls() == [["print", f"gui/{UID}/{LABEL}"]]


def test_a_loaded_agent_that_is_not_running_fails_with_its_exit_status(home: Path, fake_launchctl: FakeTool) -> None:
    fake_launchctl.set_loaded(STOPPED_PRINT)
    check = check_agent(host=_host(home), label=LABEL)
    assert check.status == "FAIL" and "last exit status 78" in check.detail and "cutout.log" in check.fix


def test_an_installed_agent_that_is_not_loaded_fails(home: Path, fake_launchctl: FakeTool) -> None:
    plist = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    plist.parent.mkdir(parents=True)
    plist.write_text("")
    check = check_agent(host=_host(home), label=LABEL)
    assert check.status == "FAIL" and check.fix.startswith("cutout service install --config F")


def test_no_agent_installed_is_skipped(home: Path, fake_launchctl: FakeTool) -> None:
    assert check_agent(host=_host(home), label=LABEL).status == "skip"


def test_on_linux_the_systemd_unit_is_checked(home: Path, fake_systemctl: FakeTool) -> None:
    fake_systemctl.set_loaded(SYSTEMD_RUNNING)
    assert check_agent(host=_host(home, system="Linux"), label=LABEL).status == "ok"
    fake_systemctl.set_loaded(SYSTEMD_FAILED)
    assert check_agent(host=_host(home, system="Linux"), label=LABEL).status == "FAIL"


def test_without_launchctl_or_systemctl_the_agent_check_is_skipped(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    for system in ("Darwin", "Linux"):
        check = check_agent(host=_host(home, system=system), label=LABEL)
        assert check.status == "skip" and "not found on PATH" in check.detail


def test_a_service_manager_that_errors_is_a_warning(
    home: Path, fake_systemctl: FakeTool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SYSTEMCTL_FAIL", "show")
    check = check_agent(host=_host(home, system="Linux"), label=LABEL)
    assert check.status == "warn" and "cannot ask systemd" in check.detail


# --- the report and the command ----------------------------------------------------------------------
def test_report_fails_only_on_failures_and_prints_every_fix() -> None:
    out = io.StringIO()
    checks = [Check("a", "ok", "fine"), Check("b", "warn", "hm", "do x"), Check("c", "skip", "n/a")]
    assert report(iter(checks), out=out) == 0
    assert "[warn] b: hm\n       fix: do x" in out.getvalue()
    assert report(iter([*checks, Check("d", "FAIL", "broken", "do y")]), out=io.StringIO()) == 1


def test_doctor_on_a_mac_checks_folders_privacy_model_and_agent(
    tmp_path: Path, home: Path, torchscript_model: Path, fake_launchctl: FakeTool, capsys: pytest.CaptureFixture[str]
) -> None:
    hot = home / "Desktop" / "Hot"
    hot.mkdir(parents=True)
    host = _host(home, machine="x86_64")
    ctx = Context(host=host, hf_home=tmp_path / "hf", hf_cache=tmp_path / "hf" / "hub",
                  default_state=tmp_path / "state", downloader=FakeHub(trees={}))
    code = main(["doctor", "--model", str(torchscript_model), "--input", str(hot), "--output",
                 str(tmp_path / "out"), "--device", "cpu"], context=ctx)
    out = capsys.readouterr().out
    assert code == 0  # a privacy warning and a missing agent do not fail
    for line in ("[ok] folders.input:", "[ok] folders.output:", "[warn] privacy: folders.input",
                 "[skip] service:", "[skip] model cache:", "[ok] model:", "[skip] mps:"):
        assert line in out


def test_doctors_fix_lines_repeat_the_flags_it_was_run_with(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Run with flags only (no config file), the fix names those flags, not `--config F`."""
    from daemon.cli.main import main

    state = tmp_path / "state"
    state.mkdir()
    (state / "queue.sqlite3").write_bytes(b"not a database at all, just bytes" * 100)
    main(["doctor", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--state", str(state),
          "--model", str(tmp_path / "m.torchscript")])
    out = capsys.readouterr().out
    assert f"cutout queue rebuild --model {tmp_path / 'm.torchscript'} --input {tmp_path / 'in'}" in out
    assert "--config F" not in out
