"""Who may read what the daemon writes, and a clear refusal when its own state is not writable.

- The state folder (queue, lock, model pin) is created 0700 and the log file 0600: they name
  every photo and folder of the studio.
- Cutouts and `.error.json` files are for people: they follow the user's umask, like any
  other program's files.
- A queue or lock file this user cannot write (made by `sudo cutout ...`, chmod, an immutable
  flag) stops the start with exit 2, the file, its owner and mode, and the command that fixes
  it; never a traceback.

Tests run as root here, and root ignores file modes: for root a file is made unwritable with
the immutable flag (`chattr +i`), for anyone else with `chmod 0444`. "Owned by another user"
is real too when the tests run as root: the command then runs as `nobody` (setpriv).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from daemon.cli.main import main
from daemon.errors import ConfigError
from daemon.logs import configure_logging
from daemon.settings import LoggingSettings
from daemon.store.sqlite import JobQueue
from daemon.store.statedir import LOCK_FILE, QUEUE_FILE, acquire_lock, daemon_pid

ROOT = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- a file this process really cannot write -------------------------------------------------------
LockDown = Callable[[Path], str]


@pytest.fixture
def lock_down() -> Iterator[LockDown]:
    """`lock_down(path)` makes `path` unwritable for this process and returns the fix the
    refusal must give; everything is undone afterwards (an immutable file blocks cleanup)."""
    undo: list[Callable[[], object]] = []

    def make_unwritable(path: Path) -> str:
        if os.geteuid() != 0:
            path.chmod(0o444)
            undo.append(lambda: path.chmod(0o644))
            return f"chmod u+rw '{path}'"
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False).returncode:
            pytest.skip("root, and no immutable flag here: nothing makes a file unwritable for root")
        undo.append(lambda: subprocess.run([chattr, "-i", str(path)], check=True))
        return f"chattr -i '{path}'"

    yield make_unwritable
    for step in reversed(undo):
        step()


@pytest.fixture
def hot_setup(tmp_path: Path) -> dict[str, Path]:
    folders = {name: tmp_path / name for name in ("in", "out", "state")}
    for path in folders.values():
        path.mkdir()
    return folders


def _watch(folders: dict[str, Path], model: Path) -> list[str]:
    return ["watch", "--input", str(folders["in"]), "--output", str(folders["out"]),
            "--state", str(folders["state"]), "--model", str(model), "--device", "cpu"]


def test_an_unwritable_lock_file_stops_watch_with_exit_2_and_the_fix(
    hot_setup: dict[str, Path], torchscript_model: Path, lock_down: LockDown, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = hot_setup["state"] / LOCK_FILE
    lock.write_text("")
    fix = lock_down(lock)
    assert main(_watch(hot_setup, torchscript_model)) == 2
    err = capsys.readouterr().err
    assert f"folders.state: {lock}" in err and f"fix it with: {fix}" in err


def test_an_unwritable_queue_stops_watch_with_exit_2_and_the_fix(
    hot_setup: dict[str, Path], torchscript_model: Path, lock_down: LockDown, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = hot_setup["state"] / QUEUE_FILE
    JobQueue(queue).close()
    fix = lock_down(queue)
    assert main(_watch(hot_setup, torchscript_model)) == 2
    err = capsys.readouterr().err
    assert f"folders.state: {queue}" in err and f"fix it with: {fix}" in err


def test_the_queue_itself_refuses_a_database_it_cannot_write(tmp_path: Path, lock_down: LockDown) -> None:
    # SQLite would open it read-only and fail at the first write, deep inside a job.
    path = tmp_path / QUEUE_FILE
    JobQueue(path).close()
    fix = lock_down(path)
    with pytest.raises(ConfigError) as caught:
        JobQueue(path)
    assert str(path) in str(caught.value) and f"fix it with: {fix}" in str(caught.value)


def test_the_lock_itself_refuses_a_lock_file_it_cannot_write(tmp_path: Path, lock_down: LockDown) -> None:
    (tmp_path / LOCK_FILE).write_text("")
    fix = lock_down(tmp_path / LOCK_FILE)
    assert daemon_pid(tmp_path) is None  # reading it is still fine
    with pytest.raises(ConfigError, match="folders.state: cannot open") as caught:
        acquire_lock(tmp_path)
    assert f"fix it with: {fix}" in str(caught.value)


# --- the real case: files left behind by `sudo cutout watch` -------------------------------------------
NOBODY = 65534


def _as_nobody() -> list[str] | None:
    """The command prefix that runs this interpreter as `nobody`, when the tests run as root
    and `nobody` can start it with the package importable; else None."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return None
    prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable]
    probe = subprocess.run([*prefix, "-c", "import daemon.cli.main"], capture_output=True, cwd="/", check=False,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    return prefix if probe.returncode == 0 else None


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another user can reach (pytest's own temp folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="cutout-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_a_lock_file_left_by_root_stops_another_users_daemon_with_exit_2_and_the_chown(
    shared_dir: Path, torchscript_model: Path
) -> None:
    as_nobody = _as_nobody()
    if as_nobody is None:
        pytest.skip("needs root, setpriv, and an interpreter that the user nobody can run")
    nobody = NOBODY
    folders = {name: shared_dir / name for name in ("in", "out", "quarantine", "state", "hf")}
    for path in folders.values():
        path.mkdir()
        os.chown(path, nobody, nobody)
    model = shared_dir / "tiny.torchscript"
    shutil.copyfile(torchscript_model, model)
    model.chmod(0o644)
    lock = folders["state"] / LOCK_FILE
    lock.write_text("")  # root's, mode 0644: readable by nobody, not writable
    lock.chmod(0o644)
    env = {**os.environ, "HOME": str(shared_dir), "HF_HOME": str(folders["hf"]), "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [*as_nobody, "-m", "daemon", *_watch(folders, model)],
        capture_output=True, text=True, cwd=shared_dir, env=env, timeout=60, check=False,
    )
    assert completed.returncode == 2, completed.stderr
    assert f"{lock} belongs to root (mode 0644)" in completed.stderr
    assert f"sudo chown {_user(nobody)} '{lock}'" in completed.stderr
    assert "Traceback" not in completed.stderr


def _user(uid: int) -> str:
    import pwd

    return pwd.getpwuid(uid).pw_name


# --- modes of what is created ----------------------------------------------------------------------------
def test_the_state_folder_is_created_private(hot_setup: dict[str, Path], tmp_path: Path) -> None:
    from daemon.folders.outputs import Folders, validate_folders
    from daemon.settings import FolderSettings

    settings = FolderSettings(input=hot_setup["in"], output=hot_setup["out"], state=tmp_path / "new" / "state")
    validate_folders(settings.resolve(default_state=tmp_path / "unused"), policy="keep")
    assert _mode(tmp_path / "new" / "state") == 0o700


def test_the_lock_and_the_queue_create_their_folder_private(tmp_path: Path) -> None:
    acquire_lock(tmp_path / "by-lock").close()
    JobQueue(tmp_path / "by-queue" / QUEUE_FILE).close()
    assert _mode(tmp_path / "by-lock") == 0o700 and _mode(tmp_path / "by-queue") == 0o700


def test_an_existing_state_folder_keeps_the_mode_its_owner_chose(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state").chmod(0o750)
    acquire_lock(tmp_path / "state").close()
    assert _mode(tmp_path / "state") == 0o750


@pytest.fixture
def _close_log_files() -> Iterator[None]:
    before = set(logging.getLogger().handlers)
    yield
    for handler in set(logging.getLogger().handlers) - before:
        handler.close()


@pytest.mark.usefixtures("_close_log_files")
def test_the_log_file_and_every_rotated_one_are_private(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "cutout.log"
    configure_logging(LoggingSettings(file=log_file, max_bytes=300, backups=2), console=False)
    for index in range(20):
        structlog.get_logger("test").info("job_done", path=f"shoot/IMG_{index:04}.jpg")
    rotated = sorted(p.name for p in log_file.parent.iterdir())
    assert rotated == ["cutout.log", "cutout.log.1", "cutout.log.2"]
    assert {_mode(log_file.parent / name) for name in rotated} == {0o600}


@pytest.mark.usefixtures("_close_log_files")
def test_a_log_file_left_readable_by_others_is_made_private(tmp_path: Path) -> None:
    log_file = tmp_path / "cutout.log"
    log_file.write_text("")
    log_file.chmod(0o644)
    configure_logging(LoggingSettings(file=log_file), console=False)
    assert _mode(log_file) == 0o600


# --- files for people follow the umask ------------------------------------------------------------------
_QUARANTINE_ONE = """
import os, sys
from pathlib import Path, PurePosixPath
os.umask(int(sys.argv[2], 8))  # before anything is imported, as a shell's umask would be
from daemon.folders.outputs import ErrorReport, Folders, move_to_quarantine
root = Path(sys.argv[1])
folders = Folders(input=root / "in", output=root / "out", quarantine=root / "q", archive=root / "a", state=root / "s")
report = ErrorReport(file="bad.jpg", reason="undecodable", message="x", attempts=1, first_seen=0.0, last_attempt=0.0)
move_to_quarantine(folders, PurePosixPath("bad.jpg"), PurePosixPath("bad.jpg"), report)
"""


@pytest.mark.slow
@pytest.mark.parametrize(("umask", "expected"), [("027", 0o640), ("002", 0o664)])
def test_cutouts_and_error_files_follow_the_umask(
    tmp_path: Path, torchscript_model: Path, umask: str, expected: int
) -> None:
    from tests.conftest import subject_image, write_image

    write_image(tmp_path / "photos" / "a.jpg", subject_image(120, 160, (40, 30, 120, 90)))
    process = f"umask {umask} && exec \"$0\" -m daemon process \"$1\" \"$2\" --model \"$3\" --device cpu"
    subprocess.run(
        ["sh", "-c", process, sys.executable, str(tmp_path / "photos"), str(tmp_path / "out"), str(torchscript_model)],
        check=True, capture_output=True, cwd=ROOT, timeout=120,
    )
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.jpg").write_bytes(b"not an image")
    subprocess.run([sys.executable, "-c", _QUARANTINE_ONE, str(tmp_path), umask], check=True, cwd=ROOT, timeout=60)
    assert _mode(tmp_path / "out" / "a.png") == expected
    assert _mode(tmp_path / "q" / "bad.jpg.error.json") == expected
