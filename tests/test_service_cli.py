"""`cutout service install|uninstall|status` through main(), on a "Mac" or a "Linux" host.

The host (platform, home, uid, interpreter) is what main() would read from the process;
tests pass their own. launchctl/systemctl are the fake executables of tests/service_fakes.py
on PATH, so every command really runs and is recorded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import plistlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from daemon.cli.context import Context
from daemon.cli.main import _configure_logging, build_parser, main, settings_from
from daemon.errors import ModelLoadError, ServiceError
from daemon.models.fetch import PIN_FILE_NAME, ModelStore, fetch_model
from daemon.pipeline.model import ModelSpec
from daemon.service import Host
from daemon.service.launchd import plist_path
from daemon.service.systemd import unit_path
from tests.fake_hub import COMMIT_A, COMMIT_B, FakeHub, unique_repo
from tests.service_fakes import (  # noqa: F401  (fake_* are fixtures)
    LABEL,
    RUNNING_PRINT,
    SYSTEMD_RUNNING,
    TARGET,
    UID,
    FakeTool,
    fake_bin,
    fake_launchctl,
    fake_systemctl,
)


@pytest.fixture(autouse=True)
def _close_log_files() -> Iterator[None]:
    """main() opens the configured log file, as a command would for its lifetime: close it after."""
    before = set(logging.getLogger().handlers)
    yield
    for handler in set(logging.getLogger().handlers) - before:
        handler.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def python(tmp_path: Path) -> Path:
    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(os.path.realpath(sys.executable))
    return venv_python


def _context(tmp_path: Path, *, home: Path, python: Path, system: str, hub: FakeHub | None = None) -> Context:
    host = Host(system=system, machine="arm64", home=home, uid=UID, python=python)
    hf_home = tmp_path / "hf"
    return Context(host=host, hf_home=hf_home, hf_cache=hf_home / "hub", default_state=tmp_path / "state",
                   downloader=hub or FakeHub(trees={}))


@pytest.fixture
def mac(tmp_path: Path, home: Path, python: Path) -> Context:
    return _context(tmp_path, home=home, python=python, system="Darwin")


@pytest.fixture
def linux(tmp_path: Path, home: Path, python: Path) -> Context:
    return _context(tmp_path, home=home, python=python, system="Linux")


def _write_config(tmp_path: Path, *, model: str, hot: Path | None = None, extra: str = "") -> Path:
    hot = hot or tmp_path / "hot"
    hot.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"folders:\n  input: {hot}\n  output: {tmp_path / 'cutouts'}\n  state: {tmp_path / 'state'}\n"
        f"model:\n  name: {model}\n{extra}"
    )
    return config


@pytest.fixture
def config(tmp_path: Path, torchscript_model: Path) -> Path:
    return _write_config(tmp_path, model=str(torchscript_model))


def _plist(home: Path) -> dict[str, Any]:
    parsed = plistlib.loads(plist_path(label=LABEL, home=home).read_bytes(), fmt=plistlib.FMT_XML)
    assert isinstance(parsed, dict)
    return parsed


# --- install on macOS ----------------------------------------------------------------------------
def test_install_writes_the_agent_with_the_absolute_config_and_the_rotated_log_then_starts_it(
    mac: Context, config: Path, home: Path, python: Path, fake_launchctl: FakeTool,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(config.parent)
    assert main(["service", "install", "--config", config.name], context=mac) == 0
    parsed = _plist(home)
    log_file = home / "Library" / "Logs" / LABEL / "cutout.log"
    assert parsed["ProgramArguments"] == [
        str(python), "-m", "daemon", "watch", "--config", str(config), "--log-file", str(log_file)
    ]
    assert parsed["EnvironmentVariables"]["HF_HUB_OFFLINE"] == "1"
    assert parsed["EnvironmentVariables"]["HF_HOME"] == str(mac.hf_home)
    plist = plist_path(label=LABEL, home=home)
    assert fake_launchctl.changes() == [["enable", TARGET], ["bootstrap", f"gui/{UID}", str(plist)], ["kickstart", TARGET]]
    assert f"log: {log_file}" in capsys.readouterr().out


def test_reinstall_replaces_the_loaded_agent_with_the_same_file(
    mac: Context, config: Path, home: Path, fake_launchctl: FakeTool
) -> None:
    assert main(["service", "install", "--config", str(config)], context=mac) == 0
    first = plist_path(label=LABEL, home=home).read_bytes()
    fake_launchctl.log.unlink()
    assert main(["service", "install", "--config", str(config)], context=mac) == 0
    assert plist_path(label=LABEL, home=home).read_bytes() == first
    assert [call[0] for call in fake_launchctl.changes()] == ["bootout", "enable", "bootstrap", "kickstart"]


def test_a_config_log_file_becomes_the_agents_log_file(
    mac: Context, tmp_path: Path, torchscript_model: Path, home: Path, fake_launchctl: FakeTool
) -> None:
    config = _write_config(tmp_path, model=str(torchscript_model), extra=f"logging:\n  file: {tmp_path / 'my.log'}\n")
    assert main(["service", "install", "--config", str(config)], context=mac) == 0
    assert _plist(home)["ProgramArguments"][-1] == str(tmp_path / "my.log")


def test_dry_run_prints_the_plist_and_the_commands_and_changes_nothing(
    mac: Context, config: Path, home: Path, fake_launchctl: FakeTool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["service", "install", "--config", str(config), "--dry-run"], context=mac) == 0
    out = capsys.readouterr().out
    assert "<key>ProgramArguments</key>" in out and f"would run launchctl bootstrap gui/{UID}" in out
    assert not home.exists() and fake_launchctl.calls() == []
    assert not (config.parent / "cutouts").exists() and not (config.parent / "state").exists()


def test_dry_run_refuses_a_broken_config_without_creating_folders(
    mac: Context, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hot").rmdir()
    assert main(["service", "install", "--config", str(config), "--dry-run"], context=mac) == 2
    assert f"folders.input: hot folder {tmp_path / 'hot'} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("watch:\n  settle_secs: 2\n", "unknown setting 'watch.settle_secs'"),
        ("originals: shred\n", "originals: 'shred' is not one of keep, archive, delete"),
    ],
)
def test_install_refuses_a_config_that_does_not_validate_and_installs_nothing(
    mac: Context, tmp_path: Path, torchscript_model: Path, home: Path, fake_launchctl: FakeTool,
    capsys: pytest.CaptureFixture[str], extra: str, message: str,
) -> None:
    config = _write_config(tmp_path, model=str(torchscript_model), extra=extra)
    assert main(["service", "install", "--config", str(config)], context=mac) == 2
    assert message in capsys.readouterr().err
    assert not home.exists() and fake_launchctl.calls() == []


def test_install_refuses_a_missing_hot_folder(
    mac: Context, config: Path, tmp_path: Path, home: Path, fake_launchctl: FakeTool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "hot").rmdir()
    assert main(["service", "install", "--config", str(config)], context=mac) == 2
    assert f"folders.input: hot folder {tmp_path / 'hot'} does not exist" in capsys.readouterr().err
    assert not home.exists() and fake_launchctl.calls() == []


def test_install_takes_relative_folders_from_the_config_folder_not_the_shells(
    mac: Context, tmp_path: Path, torchscript_model: Path, fake_launchctl: FakeTool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The service starts elsewhere, but the daemon reads `hot` from the config's folder too.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (tmp_path / "studio" / "hot").mkdir(parents=True)
    config = tmp_path / "studio" / "config.yaml"
    config.write_text(f"folders:\n  input: hot\n  output: out\n  state: state\nmodel:\n  name: {torchscript_model}\n")
    assert main(["service", "install", "--config", str(config)], context=mac) == 0
    assert (tmp_path / "studio" / "out").is_dir() and (tmp_path / "studio" / "state").is_dir()
    assert not (elsewhere / "out").exists() and fake_launchctl.changes()


def test_install_needs_the_config_the_service_runs_with(
    mac: Context, fake_launchctl: FakeTool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["service", "install"], context=mac) == 2
    assert "cutout service install: give the settings file the service runs with: --config F" in capsys.readouterr().err


def test_install_refuses_a_hub_model_that_was_not_fetched(
    mac: Context, tmp_path: Path, home: Path, fake_launchctl: FakeTool, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = unique_repo()
    config = _write_config(tmp_path, model=f"hf:{repo}")
    assert main(["service", "install", "--config", str(config)], context=mac) == 2
    assert f"model hf:{repo} has not been fetched: run `cutout model fetch --config {config}` first" in capsys.readouterr().err
    assert not home.exists()


def _fetched(tmp_path: Path, ctx: Context, hf_model_dir: Path) -> str:
    repo = unique_repo()
    store = ModelStore(pin_file=tmp_path / "state" / PIN_FILE_NAME, cache=ctx.hf_cache)
    fetch_model(ModelSpec("hf", repo), revision=None, store=store, downloader=FakeHub(trees={COMMIT_A: hf_model_dir}),
                progress=False)
    return repo


def test_install_of_a_fetched_hub_model_runs_it_offline(
    mac: Context, tmp_path: Path, home: Path, hf_model_dir: Path, fake_launchctl: FakeTool
) -> None:
    config = _write_config(tmp_path, model=f"hf:{_fetched(tmp_path, mac, hf_model_dir)}")
    assert main(["service", "install", "--config", str(config)], context=mac) == 0
    assert _plist(home)["EnvironmentVariables"]["HF_HUB_OFFLINE"] == "1"


def test_install_refuses_a_config_revision_that_differs_from_the_pin(
    mac: Context, tmp_path: Path, home: Path, hf_model_dir: Path, fake_launchctl: FakeTool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = _fetched(tmp_path, mac, hf_model_dir)
    config = _write_config(tmp_path, model=f"hf:{repo}", extra=f"  revision: {COMMIT_B}\n")
    assert main(["service", "install", "--config", str(config)], context=mac) == ModelLoadError.exit_status
    assert f"differs from the fetched pin {COMMIT_A}" in capsys.readouterr().err
    assert not home.exists()


def test_a_failing_launchctl_is_reported_with_its_command_and_message(
    mac: Context, config: Path, fake_launchctl: FakeTool, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FAKE_LAUNCHCTL_FAIL", "bootstrap")
    assert main(["service", "install", "--config", str(config)], context=mac) == ServiceError.exit_status == 4
    err = capsys.readouterr().err
    assert err.startswith("cutout service install: `launchctl bootstrap") and "Input/output error" in err


def test_install_warns_that_a_hot_folder_on_the_desktop_needs_full_disk_access(
    mac: Context, tmp_path: Path, torchscript_model: Path, home: Path, python: Path, fake_launchctl: FakeTool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _write_config(tmp_path, model=str(torchscript_model), hot=home / "Desktop" / "Hot")
    assert main(["service", "install", "--config", str(config)], context=mac) == 0
    out = capsys.readouterr().out
    assert f"warning: folders.input {home / 'Desktop' / 'Hot'} is in Desktop" in out
    assert f"Full Disk Access > click + > press Cmd-Shift-G, paste {os.path.realpath(python)}" in out


# --- uninstall and status on macOS ----------------------------------------------------------------
def test_uninstall_boots_the_agent_out_and_removes_its_file(
    mac: Context, config: Path, home: Path, fake_launchctl: FakeTool, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["service", "install", "--config", str(config)], context=mac)
    fake_launchctl.log.unlink()
    assert main(["service", "uninstall"], context=mac) == 0
    assert not plist_path(label=LABEL, home=home).exists()
    assert fake_launchctl.changes() == [["bootout", TARGET]]
    assert f"run launchctl bootout {TARGET}" in capsys.readouterr().out


def test_uninstall_refuses_a_label_that_is_not_a_plain_name(
    mac: Context, fake_launchctl: FakeTool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["service", "uninstall", "--label", "../../evil"], context=mac) == 2
    assert "invalid service label" in capsys.readouterr().err and fake_launchctl.calls() == []


def test_status_shows_loaded_running_pid_and_last_exit_status(
    mac: Context, config: Path, fake_launchctl: FakeTool, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["service", "install", "--config", str(config)], context=mac)
    capsys.readouterr()
    assert main(["service", "status"], context=mac) == 0
    out = capsys.readouterr().out
    assert f"{LABEL} (launchd, gui/{UID})" in out
    for line in ("installed: yes", "loaded: yes", "state: running (pid 4242)", "last exit status: 1"):
        assert line in out


def test_status_of_an_agent_that_is_not_installed_exits_1(
    mac: Context, fake_launchctl: FakeTool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["service", "status"], context=mac) == 1
    assert "installed: no" in capsys.readouterr().out


# --- Linux ---------------------------------------------------------------------------------------
def test_install_on_linux_explains_launchd_is_macos_only_and_shows_the_systemd_unit(
    linux: Context, config: Path, home: Path, fake_systemctl: FakeTool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["service", "install", "--config", str(config)], context=linux) == 2  # refused: nothing done
    captured = capsys.readouterr()
    assert "launchd is macOS-only, so nothing was installed" in captured.err
    assert "cutout service install --systemd --config F" in captured.err
    assert "[Service]" in captured.out and f'"--config" "{config}"' in captured.out
    assert not home.exists() and fake_systemctl.calls() == []
    assert not (config.parent / "cutouts").exists()  # only shown: no folder made either


def test_install_systemd_on_linux_writes_the_user_unit_and_starts_it(
    linux: Context, config: Path, home: Path, fake_systemctl: FakeTool
) -> None:
    assert main(["service", "install", "--systemd", "--config", str(config)], context=linux) == 0
    unit = unit_path(label=LABEL, home=home).read_text()
    log_file = home / ".local" / "state" / LABEL / "log" / "cutout.log"
    assert f'"--log-file" "{log_file}"' in unit and 'Environment="HF_HUB_OFFLINE=1"' in unit
    assert [call[1] for call in fake_systemctl.calls()] == ["daemon-reload", "enable", "restart"]
    assert "/opt/homebrew" not in unit and ":/usr/local/bin:/usr/bin:/bin:" in unit  # Linux's PATH, not a Mac's


def test_a_failed_systemd_install_leaves_no_unit_file_and_uninstall_removes_one_without_a_bus(
    linux: Context, config: Path, home: Path, fake_systemctl: FakeTool, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No user bus (an ssh session without lingering): systemctl fails; the install leaves
    nothing behind, and an uninstall still removes a unit file it finds."""
    monkeypatch.setenv("FAKE_SYSTEMCTL_FAIL", "daemon-reload,disable")
    assert main(["service", "install", "--systemd", "--config", str(config)], context=linux) == 4
    assert not unit_path(label=LABEL, home=home).exists()
    monkeypatch.delenv("FAKE_SYSTEMCTL_FAIL")
    assert main(["service", "install", "--systemd", "--config", str(config)], context=linux) == 0
    monkeypatch.setenv("FAKE_SYSTEMCTL_FAIL", "daemon-reload,disable")
    assert main(["service", "uninstall"], context=linux) == 4  # said: systemctl could not stop it
    assert not unit_path(label=LABEL, home=home).exists() and "disable" in capsys.readouterr().err


def test_status_and_uninstall_on_linux_use_the_systemd_unit(
    linux: Context, config: Path, home: Path, fake_systemctl: FakeTool, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["service", "install", "--systemd", "--config", str(config)], context=linux)
    fake_systemctl.set_loaded(SYSTEMD_RUNNING)
    assert main(["service", "status"], context=linux) == 0
    assert "state: running (pid 4242)" in capsys.readouterr().out
    assert main(["service", "uninstall"], context=linux) == 0
    assert not unit_path(label=LABEL, home=home).exists()


# --- the daemon's log file -------------------------------------------------------------------------
def test_the_log_file_flag_overrides_logging_file(tmp_path: Path) -> None:
    args = build_parser().parse_args(["watch", "--log-file", str(tmp_path / "x.log")])
    assert settings_from(args).logging.file == tmp_path / "x.log"


def test_with_a_log_file_and_no_terminal_the_json_log_goes_only_to_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(["watch", "--log-file", str(tmp_path / "logs" / "cutout.log")])
    _configure_logging(args, settings_from(args))
    structlog.get_logger("test").info("job_done", path="a.jpg")
    handlers = logging.getLogger().handlers
    lines = (tmp_path / "logs" / "cutout.log").read_text().splitlines()
    assert json.loads(lines[-1])["event"] == "job_done"
    assert capsys.readouterr().out == ""
    assert len(handlers) == 1


def test_service_commands_parse_with_their_defaults() -> None:
    args = build_parser().parse_args(["service", "status"])
    assert isinstance(args, argparse.Namespace) and args.label == LABEL and not args.systemd


# --- the agent's command line, run for real ---------------------------------------------------------
@pytest.mark.slow
def test_the_agents_command_runs_the_daemon_with_a_rotated_json_log_and_a_quiet_stdout(
    tmp_path: Path, torchscript_model: Path, fake_launchctl: FakeTool, home: Path
) -> None:
    """What launchd would run (ProgramArguments, EnvironmentVariables, stdout to a file), for real."""
    from tests.conftest import subject_image, write_image

    mac = _context(tmp_path, home=home, python=Path(os.path.abspath(sys.executable)), system="Darwin")
    config = _write_config(tmp_path, model=str(torchscript_model),
                           extra="  device: cpu\nlogging:\n  max_bytes: 1500\n  backups: 2\n"
                                 "watch:\n  settle_seconds: 0.2\n")
    assert main(["service", "install", "--config", str(config)], context=mac) == 0
    agent = _plist(home)
    log_dir = Path(agent["StandardOutPath"]).parent
    env = {**os.environ, **agent["EnvironmentVariables"], "PATH": os.environ["PATH"]}
    with open(agent["StandardOutPath"], "ab") as stdout, open(agent["StandardErrorPath"], "ab") as stderr:
        daemon = subprocess.Popen(agent["ProgramArguments"], stdout=stdout, stderr=stderr, env=env,
                                  cwd=agent["WorkingDirectory"])
    try:
        for n in range(4):
            write_image(tmp_path / "hot" / f"{n}.jpg", subject_image(300, 400, (100, 80, 300, 220)))
        _wait(lambda: len(list((tmp_path / "cutouts").glob("*.png"))) == 4, daemon=daemon)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    logs = sorted(p.name for p in log_dir.iterdir())
    assert logs == ["cutout.log", "cutout.log.1", "cutout.log.2", "stderr.log", "stdout.log"]
    events = [json.loads(line)["event"] for name in logs[:3] for line in (log_dir / name).read_text().splitlines()]
    assert "job" in events and all((log_dir / name).stat().st_size <= 1500 + 2000 for name in logs[:3])
    assert (log_dir / "stdout.log").read_text() == ""


def _wait(condition: Callable[[], bool], *, daemon: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert daemon.poll() is None, f"daemon exited with {daemon.returncode}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
