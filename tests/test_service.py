"""The service layer: rendering, choosing the manager, and driving fake launchctl/systemctl on PATH.

The fakes (tests/service_fakes.py) are real executables written into tmp_path/bin and put
first on PATH: they record their argv and fail on demand.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from daemon.cli.context import MUST_ACT_ENV
from daemon.errors import ConfigError, QueueDamaged, ServiceError
from daemon.service import (
    AgentSpec,
    AgentStatus,
    Host,
    default_log_dir,
    default_spec,
    manager_for,
    privacy_grant_target,
)
from daemon.service import launchd
from daemon.service.launchd import LaunchdManager, plist_path, render_plist
from daemon.service.systemd import SystemdManager, render_unit, unit_path
from tests.service_fakes import (  # noqa: F401  (fake_* are fixtures)
    LABEL,
    NEVER_EXITED_PRINT,
    RUNNING_PRINT,
    STOPPED_PRINT,
    SYSTEMD_FAILED,
    SYSTEMD_RUNNING,
    TARGET,
    UID,
    FakeTool,
    fake_bin,
    fake_launchctl,
    fake_systemctl,
)

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLE_HOME = Path("/Users/you")
EXAMPLE_SPEC = default_spec(
    config=EXAMPLE_HOME / "cutout" / "config.yaml",
    offline=True,
    home=EXAMPLE_HOME,
    python=EXAMPLE_HOME / "cutout" / ".venv" / "bin" / "python",
)
"""launchd/cutout.plist is this: `service install` for user "you" with the project in ~/cutout."""


def _launchd(home: Path) -> LaunchdManager:
    return LaunchdManager(home=home, uid=UID)


def _systemd(home: Path) -> SystemdManager:
    return SystemdManager(home=home, requested=True)


def _host(system: str, *, home: Path) -> Host:
    return Host(system=system, machine="arm64", home=home, uid=UID, python=Path("/p"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def spec(tmp_path: Path, home: Path) -> AgentSpec:
    log_dir = home / "Library" / "Logs" / LABEL
    return AgentSpec(
        label=LABEL,
        python=tmp_path / "venv" / "bin" / "python",
        config=tmp_path / "hot folder" / "config.yaml",
        log_dir=log_dir,
        working_dir=log_dir,
        path_env="/venv/bin:/usr/bin:/bin",
        hf_home=home / ".cache" / "huggingface",
        offline=False,
        log_file=log_dir / "cutout.log",
    )


def _parse(spec: AgentSpec) -> dict[str, Any]:
    parsed = plistlib.loads(render_plist(spec), fmt=plistlib.FMT_XML)
    assert isinstance(parsed, dict)
    return parsed


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --- rendering the plist ------------------------------------------------------------------


def test_rendered_plist_is_xml_with_every_key_and_the_right_types(
    spec: AgentSpec,
) -> None:
    data = render_plist(spec)
    parsed = plistlib.loads(
        data, fmt=plistlib.FMT_XML
    )  # strict XML parse, not auto-detect
    assert data.startswith(b"<?xml")
    expected_types = {
        "Label": str,
        "ProgramArguments": list,
        "RunAtLoad": bool,
        "KeepAlive": dict,
        "ThrottleInterval": int,
        "ExitTimeOut": int,
        "ProcessType": str,
        "LowPriorityIO": bool,
        "WorkingDirectory": str,
        "StandardOutPath": str,
        "StandardErrorPath": str,
        "EnvironmentVariables": dict,
    }
    assert {key: type(parsed[key]) for key in expected_types} == expected_types
    assert parsed["Label"] == LABEL and parsed["RunAtLoad"] is True
    assert parsed["ProcessType"] in {"Standard", "Interactive"}
    assert parsed["ExitTimeOut"] >= 60 and parsed["ThrottleInterval"] == 10


def test_rendered_plist_runs_the_absolute_interpreter_on_the_absolute_config(
    spec: AgentSpec,
) -> None:
    arguments = _parse(spec)["ProgramArguments"]
    assert arguments == [
        str(spec.python),
        "-m",
        "daemon",
        "watch",
        "--config",
        str(spec.config),
        "--log-file",
        str(spec.log_file),
    ]
    assert all(Path(arguments[i]).is_absolute() for i in (0, 5, 7))


def test_keepalive_restarts_after_failure_or_crash_but_not_after_clean_exit(
    spec: AgentSpec,
) -> None:
    assert _parse(spec)["KeepAlive"] == {"SuccessfulExit": False, "Crashed": True}


def test_the_agent_exits_0_when_a_person_must_act_so_launchd_leaves_it_down(
    spec: AgentSpec,
) -> None:
    # KeepAlive restarts after any non-zero status: "stay down" must look like a clean stop.
    assert _parse(spec)["EnvironmentVariables"][MUST_ACT_ENV] == "0"


def test_rendered_plist_logs_environment_and_directory_come_from_the_spec(
    spec: AgentSpec,
) -> None:
    parsed = _parse(spec)
    assert parsed["StandardOutPath"] == f"{spec.log_dir}/stdout.log"
    assert parsed["StandardErrorPath"] == f"{spec.log_dir}/stderr.log"
    assert parsed["WorkingDirectory"] == str(spec.working_dir)
    assert parsed["EnvironmentVariables"] == {
        "PATH": spec.path_env,
        "HF_HOME": str(spec.hf_home),
        "PYTHONUNBUFFERED": "1",
        MUST_ACT_ENV: "0",
    }


def test_offline_spec_adds_hf_hub_offline(spec: AgentSpec) -> None:
    assert (
        _parse(replace(spec, offline=True))["EnvironmentVariables"]["HF_HUB_OFFLINE"]
        == "1"
    )


def test_markup_and_placeholder_like_text_in_a_path_is_kept_literally(spec: AgentSpec) -> None:
    odd = replace(spec, config=Path("/Users/me/@LABEL@ & <shots>/config.yaml"))
    assert (
        _parse(odd)["ProgramArguments"][5] == "/Users/me/@LABEL@ & <shots>/config.yaml"
    )


@pytest.mark.parametrize(
    "field", ["python", "config", "log_dir", "working_dir", "hf_home", "log_file"]
)
def test_render_refuses_relative_paths(spec: AgentSpec, field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field} must be an absolute path"):
        render_plist(replace(spec, **{field: Path("relative/thing")}))  # type: ignore[arg-type]


@pytest.mark.parametrize("label", ["", "com/cutout", "../evil", "com.cutout\nx"])
def test_render_refuses_labels_unfit_for_a_file_name_and_service_target(
    spec: AgentSpec, label: str
) -> None:
    with pytest.raises(ConfigError, match="invalid service label"):
        render_plist(replace(spec, label=label))


def test_render_refuses_a_newline_in_a_path(spec: AgentSpec) -> None:
    with pytest.raises(ConfigError, match="control character"):
        render_plist(replace(spec, config=Path("/a\nb/config.yaml")))


# --- the example agent in launchd/ ---------------------------------------------------------


def test_the_committed_example_agent_is_what_install_writes_for_the_example_user() -> None:
    committed = REPOSITORY / "launchd" / "cutout.plist"
    regenerate = (
        "launchd/cutout.plist drifted from the rendered agent; regenerate it: python -c "
        "'from tests.test_service import write_example_agent; write_example_agent()'"
    )
    assert committed.read_bytes() == render_plist(EXAMPLE_SPEC), regenerate


def write_example_agent() -> None:
    """Rewrite launchd/cutout.plist after a deliberate change to the agent (see the test above)."""
    (REPOSITORY / "launchd" / "cutout.plist").write_bytes(render_plist(EXAMPLE_SPEC))


def test_default_spec_keeps_the_venv_python_unresolved_and_makes_config_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setattr(sys, "executable", str(venv_python))
    monkeypatch.chdir(tmp_path)
    made = default_spec(
        config=Path("config.yaml"), offline=False, home=Path("/Users/me")
    )
    assert made.python == venv_python
    assert privacy_grant_target(made) == Path(os.path.realpath(sys.executable))
    assert made.config == Path(os.getcwd()) / "config.yaml"
    assert made.log_dir == Path("/Users/me/Library/Logs") / LABEL
    assert made.log_file == made.log_dir / "cutout.log"
    assert made.path_env.split(os.pathsep)[0] == str(venv_python.parent)


# --- launchd install / uninstall / status --------------------------------------------------


def test_install_writes_the_plist_then_enables_bootstraps_and_kickstarts(
    spec: AgentSpec, home: Path, fake_launchctl: FakeTool
) -> None:
    change = _launchd(home).install(spec=spec)
    plist = plist_path(label=LABEL, home=home)
    assert plist.read_bytes() == render_plist(spec)
    assert fake_launchctl.calls() == [
        ["print", TARGET],
        ["enable", TARGET],
        ["bootstrap", f"gui/{UID}", str(plist)],
        ["kickstart", TARGET],
    ]
    assert change.commands == (
        f"launchctl enable {TARGET}",
        f"launchctl bootstrap gui/{UID} {plist}",
        f"launchctl kickstart {TARGET}",
    )


def test_install_creates_the_log_dir_and_a_readable_plist_without_temp_files(
    spec: AgentSpec, home: Path, fake_launchctl: FakeTool
) -> None:
    _launchd(home).install(spec=spec)
    plist = plist_path(label=LABEL, home=home)
    assert spec.log_dir.is_dir()
    assert stat.S_IMODE(plist.stat().st_mode) == 0o644
    assert list(plist.parent.iterdir()) == [plist]


def test_reinstall_boots_out_the_loaded_agent_first_and_rewrites_the_same_bytes(
    spec: AgentSpec, home: Path, fake_launchctl: FakeTool
) -> None:
    _launchd(home).install(spec=spec)
    first = plist_path(label=LABEL, home=home).read_bytes()
    fake_launchctl.log.unlink()
    change = _launchd(home).install(spec=spec)
    plist = plist_path(label=LABEL, home=home)
    assert plist.read_bytes() == first
    assert fake_launchctl.changes() == [
        ["bootout", TARGET],
        ["enable", TARGET],
        ["bootstrap", f"gui/{UID}", str(plist)],
        ["kickstart", TARGET],
    ]
    assert change.commands[0] == f"launchctl bootout {TARGET}"


def test_failing_launchctl_raises_service_error_with_command_code_and_stderr(
    spec: AgentSpec,
    home: Path,
    fake_launchctl: FakeTool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_LAUNCHCTL_FAIL", "bootstrap")
    plist = plist_path(label=LABEL, home=home)
    with pytest.raises(ServiceError) as caught:
        _launchd(home).install(spec=spec)
    message = str(caught.value)
    assert f"launchctl bootstrap gui/{UID} {plist}" in message
    assert (
        "exit code 5" in message
        and "Bootstrap failed: 5: Input/output error" in message
    )


def test_a_job_that_will_not_boot_out_stops_the_reinstall_with_the_reason(
    spec: AgentSpec,
    home: Path,
    fake_launchctl: FakeTool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(launchd, "_BOOTOUT_PAUSE_S", 0.0)  # the retry pause, not the behaviour
    fake_launchctl.set_loaded(RUNNING_PRINT)
    monkeypatch.setenv("FAKE_LAUNCHCTL_FAIL", "bootout")
    with pytest.raises(ServiceError, match="still loaded.*Bootout failed: 5"):
        _launchd(home).install(spec=spec)
    assert [
        "bootstrap",
        f"gui/{UID}",
        str(plist_path(label=LABEL, home=home)),
    ] not in fake_launchctl.calls()


def test_missing_launchctl_says_launchd_is_macos_only(
    spec: AgentSpec, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(
        ServiceError,
        match="launchctl not found on PATH: launchd services are macOS-only",
    ):
        _launchd(home).install(spec=spec)
    assert not home.exists()  # nothing half-installed on a machine without launchd


def test_dry_run_install_writes_nothing_runs_nothing_and_shows_plist_and_commands(
    spec: AgentSpec, home: Path, tmp_path: Path, fake_launchctl: FakeTool
) -> None:
    before = _files_under(tmp_path)
    change = _launchd(home).install(spec=spec, dry_run=True)
    plist = plist_path(label=LABEL, home=home)
    assert _files_under(tmp_path) == before and not spec.log_dir.exists()
    assert fake_launchctl.calls() == []
    assert change.dry_run and change.path == plist
    assert change.content == render_plist(spec).decode()
    assert change.commands == (
        f"launchctl bootout {TARGET}  # only if already loaded",
        f"launchctl enable {TARGET}",
        f"launchctl bootstrap gui/{UID} {plist}",
        f"launchctl kickstart {TARGET}",
    )
    assert change.lines()[0] == f"would write {plist}"


def test_dry_run_install_works_where_launchctl_is_missing(
    spec: AgentSpec, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    change = _launchd(home).install(spec=spec, dry_run=True)
    assert change.content is not None and not home.exists()


def test_uninstall_boots_out_the_loaded_agent_and_removes_the_plist(
    spec: AgentSpec, home: Path, fake_launchctl: FakeTool
) -> None:
    _launchd(home).install(spec=spec)
    fake_launchctl.log.unlink()
    change = _launchd(home).uninstall(label=LABEL)
    assert not plist_path(label=LABEL, home=home).exists()
    assert fake_launchctl.changes() == [["bootout", TARGET]]
    assert (
        change.commands == (f"launchctl bootout {TARGET}",) and change.content is None
    )


def test_uninstall_of_an_agent_that_is_not_loaded_still_removes_the_plist(
    spec: AgentSpec, home: Path, fake_launchctl: FakeTool
) -> None:
    plist = plist_path(label=LABEL, home=home)
    plist.parent.mkdir(parents=True)
    plist.write_bytes(render_plist(spec))
    change = _launchd(home).uninstall(label=LABEL)
    assert not plist.exists()
    assert fake_launchctl.changes() == [] and change.commands == ()


def test_dry_run_uninstall_keeps_the_plist_and_runs_nothing(
    spec: AgentSpec, home: Path, fake_launchctl: FakeTool
) -> None:
    _launchd(home).install(spec=spec)
    fake_launchctl.log.unlink()
    change = _launchd(home).uninstall(label=LABEL, dry_run=True)
    assert plist_path(label=LABEL, home=home).exists()
    assert fake_launchctl.calls() == []
    assert change.lines() == [
        f"would remove {plist_path(label=LABEL, home=home)}",
        f"would run launchctl bootout {TARGET}  # only if loaded",
    ]


def test_status_reads_state_pid_and_last_exit_from_launchctl_print(
    home: Path, fake_launchctl: FakeTool
) -> None:
    fake_launchctl.set_loaded(RUNNING_PRINT)
    got = _launchd(home).status(label=LABEL)
    # The nested "state = waiting" / "pid = 99" of the event trigger must not win.
    assert got == AgentStatus(
        installed=False, loaded=True, state="running", pid=4242, last_exit_status=1
    )
    assert fake_launchctl.calls() == [["print", TARGET]]


def test_status_of_a_stopped_agent_has_no_pid_and_the_numeric_exit_code(
    spec: AgentSpec, home: Path, fake_launchctl: FakeTool
) -> None:
    _launchd(home).install(spec=spec)
    fake_launchctl.set_loaded(STOPPED_PRINT)
    got = _launchd(home).status(label=LABEL)
    assert got == AgentStatus(
        installed=True, loaded=True, state="not running", pid=None, last_exit_status=78
    )


def test_status_of_a_job_that_never_exited_has_no_exit_status(
    home: Path, fake_launchctl: FakeTool
) -> None:
    fake_launchctl.set_loaded(NEVER_EXITED_PRINT)
    assert (
        _launchd(home).status(label=LABEL).last_exit_status
        is None
    )


def test_status_when_print_fails_is_not_loaded(
    home: Path, fake_launchctl: FakeTool
) -> None:
    got = _launchd(home).status(label=LABEL)
    assert got == AgentStatus(
        installed=False, loaded=False, state=None, pid=None, last_exit_status=None
    )


# --- systemd ---------------------------------------------------------------------------------


def _unit_lines(spec: AgentSpec) -> list[str]:
    return render_unit(spec).splitlines()


def test_systemd_unit_runs_the_absolute_python_and_restarts_only_on_failure(
    spec: AgentSpec,
) -> None:
    lines = _unit_lines(spec)
    assert (
        f'ExecStart="{spec.python}" "-m" "daemon" "watch" "--config" "{spec.config}"'
        f' "--log-file" "{spec.log_file}"' in lines
    )
    for expected in (
        "Restart=on-failure",
        "RestartSec=10",
        f"RestartPreventExitStatus={QueueDamaged.exit_status}",
        "TimeoutStopSec=60",
        "KillSignal=SIGTERM",
        "WantedBy=default.target",
        f"WorkingDirectory={spec.working_dir}",
    ):
        assert expected in lines
    assert [line.split("=", 1)[0] for line in lines if line.startswith("[")] == [
        "[Unit]",
        "[Service]",
        "[Install]",
    ]


def test_systemd_unit_sets_the_environment_and_hf_hub_offline_only_when_offline(
    spec: AgentSpec,
) -> None:
    online = [line for line in _unit_lines(spec) if line.startswith("Environment=")]
    assert online == [
        f'Environment="PATH={spec.path_env}"',
        f'Environment="HF_HOME={spec.hf_home}"',
        'Environment="PYTHONUNBUFFERED=1"',
    ]
    assert 'Environment="HF_HUB_OFFLINE=1"' in _unit_lines(replace(spec, offline=True))


def test_systemd_unit_escapes_specifiers_variables_and_quotes(spec: AgentSpec) -> None:
    odd = replace(spec, config=Path('/home/me/100% "raw" $HOME/config.yaml'))
    exec_start = next(
        line for line in _unit_lines(odd) if line.startswith("ExecStart=")
    )
    assert '"/home/me/100%% \\"raw\\" $$HOME/config.yaml"' in exec_start


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze"
)
def test_systemd_accepts_the_rendered_unit_with_odd_characters(
    spec: AgentSpec, tmp_path: Path
) -> None:
    odd = replace(
        spec,
        python=Path(sys.executable),
        config=Path('/srv/100% "raw" $HOME/config.yaml'),
    )
    unit = tmp_path / f"{LABEL}.service"
    unit.write_text(render_unit(odd))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert (
        unit.name not in verified.stdout + verified.stderr
    )  # no warning about our file


def test_systemd_unit_path_is_a_user_unit(home: Path) -> None:
    assert (
        unit_path(label=LABEL, home=home)
        == home / ".config/systemd/user" / f"{LABEL}.service"
    )


def test_install_systemd_writes_the_unit_then_reloads_enables_and_restarts(
    spec: AgentSpec, home: Path, fake_systemctl: FakeTool
) -> None:
    change = _systemd(home).install(spec=spec)
    unit = unit_path(label=LABEL, home=home)
    assert unit.read_text() == render_unit(spec)
    assert fake_systemctl.calls() == [
        ["--user", "daemon-reload"],
        ["--user", "enable", f"{LABEL}.service"],
        ["--user", "restart", f"{LABEL}.service"],
    ]
    assert change.commands[1] == f"systemctl --user enable {LABEL}.service"
    assert spec.working_dir.is_dir()


def test_dry_run_install_systemd_writes_nothing_and_runs_nothing(
    spec: AgentSpec, home: Path, fake_systemctl: FakeTool
) -> None:
    change = _systemd(home).install(spec=spec, dry_run=True)
    assert not home.exists() and fake_systemctl.calls() == []
    assert change.content == render_unit(spec) and len(change.commands) == 3


def test_failing_systemctl_raises_service_error_with_command_and_stderr(
    spec: AgentSpec,
    home: Path,
    fake_systemctl: FakeTool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_SYSTEMCTL_FAIL", "restart")
    with pytest.raises(
        ServiceError, match=rf"systemctl --user restart {LABEL}\.service.*bad setting"
    ):
        _systemd(home).install(spec=spec)


def test_uninstall_systemd_disables_removes_the_unit_and_reloads(
    spec: AgentSpec, home: Path, fake_systemctl: FakeTool
) -> None:
    _systemd(home).install(spec=spec)
    fake_systemctl.log.unlink()
    _systemd(home).uninstall(label=LABEL)
    assert not unit_path(label=LABEL, home=home).exists()
    assert fake_systemctl.calls() == [
        ["--user", "disable", "--now", f"{LABEL}.service"],
        ["--user", "daemon-reload"],
    ]


def test_dry_run_uninstall_systemd_keeps_the_unit_and_runs_nothing(
    spec: AgentSpec, home: Path, fake_systemctl: FakeTool
) -> None:
    _systemd(home).install(spec=spec)
    fake_systemctl.log.unlink()
    change = _systemd(home).uninstall(label=LABEL, dry_run=True)
    assert (
        unit_path(label=LABEL, home=home).exists()
        and fake_systemctl.calls() == []
    )
    assert change.commands == (
        f"systemctl --user disable --now {LABEL}.service",
        "systemctl --user daemon-reload",
    )


def test_missing_systemctl_says_systemd_needs_linux(
    spec: AgentSpec, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ServiceError, match="systemctl not found on PATH"):
        _systemd(home).install(spec=spec)
    assert not home.exists()


def test_systemd_status_reads_load_state_pid_and_exit_status_from_show(
    spec: AgentSpec, home: Path, fake_systemctl: FakeTool
) -> None:
    _systemd(home).install(spec=spec)
    fake_systemctl.set_loaded(SYSTEMD_RUNNING)
    running = _systemd(home).status(label=LABEL)
    assert running == AgentStatus(
        installed=True, loaded=True, state="running", pid=4242, last_exit_status=None
    )
    fake_systemctl.set_loaded(SYSTEMD_FAILED)
    failed = _systemd(home).status(label=LABEL)
    assert (failed.state, failed.pid, failed.last_exit_status) == ("failed", None, 78)
    assert fake_systemctl.calls()[-1][:3] == ["--user", "show", f"{LABEL}.service"]


def test_systemd_status_of_a_unit_systemd_does_not_know_is_not_loaded(
    home: Path, fake_systemctl: FakeTool
) -> None:
    got = _systemd(home).status(label=LABEL)
    assert got == AgentStatus(
        installed=False, loaded=False, state="dead", pid=None, last_exit_status=0
    )


def test_default_log_dir_is_library_logs_on_macos_and_xdg_state_elsewhere(
    home: Path,
) -> None:
    assert default_log_dir(host=_host("Darwin", home=home), label=LABEL) == (
        home / "Library" / "Logs" / LABEL
    )
    assert default_log_dir(host=_host("Linux", home=home), label=LABEL) == (
        home / ".local" / "state" / LABEL / "log"
    )


# --- choosing the manager ------------------------------------------------------------------


def test_macos_gets_launchd_in_the_users_login_session(home: Path) -> None:
    manager = manager_for(host=_host("Darwin", home=home))
    assert manager == LaunchdManager(home=home, uid=UID)
    assert (manager.name, manager.domain) == ("launchd", f"launchd, gui/{UID}")
    assert manager.unit_path(label=LABEL) == plist_path(label=LABEL, home=home)
    assert manager.may_install and manager.macos_privacy


def test_systemd_is_used_when_asked_for_even_on_macos(home: Path) -> None:
    manager = manager_for(host=_host("Darwin", home=home), systemd=True)
    assert manager == SystemdManager(home=home, requested=True)
    assert (manager.name, manager.domain) == ("systemd", "systemd --user")
    assert manager.may_install and not manager.macos_privacy


def test_linux_gets_systemd_but_installs_it_only_when_asked_for(home: Path) -> None:
    unasked = manager_for(host=_host("Linux", home=home))
    assert unasked == SystemdManager(home=home, requested=False) and not unasked.may_install
    assert manager_for(host=_host("Linux", home=home), systemd=True).may_install


def test_each_manager_renders_the_file_its_install_writes(
    spec: AgentSpec, home: Path
) -> None:
    for system in ("Darwin", "Linux"):
        manager = manager_for(host=_host(system, home=home), systemd=system == "Linux")
        change = manager.install(spec=spec, dry_run=True)
        assert change.content == manager.render(spec=spec)
        assert change.path == manager.unit_path(label=LABEL)
    assert _launchd(home).render(spec=spec).encode() == render_plist(spec)
