"""Shared fixtures: images made on the spot, the fast numpy model and fake clock of `daemon.testing`,
and the tiny real models."""

from __future__ import annotations

import atexit
import errno
import os
import shutil
import subprocess
import tempfile

# Before anything imports transformers / huggingface_hub: a private cache, and no network.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="cutout-test-hf-")
os.environ["HF_HUB_OFFLINE"] = "1"
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core (`-n auto`): each keeps torch's and OpenCV's pools to one thread, or
    # two workers' pools fight over two cores (measured: the fast set 38 s, 34 s with this).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import structlog

from daemon.logs import silence_decoder_warnings
from daemon.store.jobs import JobStore
from daemon.store.sqlite import JobQueue
from daemon.testing import BrightModel, FakeClock
from tests.pgserver import POSTGRES_URL_ENV, TempPostgres, fresh_store_url, postgres_bindir
from tests import harness, tiny_models

if os.environ.get("PYTEST_XDIST_WORKER"):
    cv2.setNumThreads(1)  # OpenCV's own pool (pthreads here) does not read OMP_NUM_THREADS

@pytest.fixture(autouse=True)
def plain_log_output() -> Iterator[None]:
    """structlog's defaults, but exceptions printed as plain tracebacks: its default renderer formats
    each logged exception with rich and pygments, about a third of a second each, and the tests read
    events through `capture_logs`, not their rendering. Reset after each test, also after one that
    configured logging for real (the command line's `main`)."""
    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
        structlog.processors.StackInfoRenderer(), structlog.dev.set_exc_info,
        structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
    ])
    yield
    structlog.reset_defaults()


DARK, BRIGHT = 20, 230
"""Background and subject grey levels: the tiny models call > 0.6 * 255 foreground."""


def subject_image(
    height: int, width: int, box: tuple[int, int, int, int], *, background: int = DARK
) -> npt.NDArray[np.uint8]:
    """An RGB image, dark but for a bright rectangle (left, top, right, bottom), with texture."""
    rgb = np.full((height, width, 3), background, np.uint8)
    left, top, right, bottom = box
    rgb[top:bottom, left:right] = BRIGHT
    rgb[top:bottom, left:right, 0] = BRIGHT + 10  # colour, so RGB order mistakes show
    return rgb


def foggy_image(height: int = 200, width: int = 200, *, seed: int = 3) -> npt.NDArray[np.uint8]:
    """An image the bright-pixel models are unsure about: a square of mid-bright, noisy pixels
    (about 0.62 against their 0.6 threshold) on dark, so its matte is a fog: a doubtful cut-out."""
    foggy = np.full((height, width, 3), 20, np.uint8)
    top, left, bottom, right = height // 5, width // 5, height - height // 5, width - width // 5
    noise = np.random.default_rng(seed).integers(-6, 7, (bottom - top, right - left, 1))
    foggy[top:bottom, left:right] = np.clip(158 + noise, 0, 255).astype(np.uint8)
    return foggy


def write_image(path: Path, rgb: npt.NDArray[np.uint8], **params: int) -> Path:
    """Write an RGB array with OpenCV (which wants BGR); format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = [item for pair in params.items() for item in (getattr(cv2, pair[0]), pair[1])]
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), flags)
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main()` points logging at the (captured) stream of its test; undo that afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _decoder_warnings_as_the_daemon_sets_them() -> None:
    """`cutout` silences Pillow's warnings once at start (`silence_decoder_warnings`); every
    test runs under the same filters (pytest's `error` still applies to everything else)."""
    silence_decoder_warnings()


@pytest.fixture
def bright_model() -> BrightModel:
    return BrightModel()


@pytest.fixture
def image_factory(tmp_path: Path) -> Callable[..., Path]:
    """`make("a/b.jpg", box=(...), size=(h, w))` writes a subject image under tmp_path/in."""

    def make(rel: str, *, size: tuple[int, int] = (300, 400), box: tuple[int, int, int, int] = (100, 80, 300, 220)) -> Path:
        return write_image(tmp_path / "in" / rel, subject_image(*size, box))

    return make


@contextmanager
def small_tmpfs(mount: Path, *, size: str = "64k", read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `mount` (made), unmounted afterwards: a real small (or
    read-only) disk, whose errors are the kernel's own. Needs root, as CI runs; skips elsewhere."""
    mount.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def fill_disk(disk: Path) -> Path:
    """Write a filler file on `disk` until the kernel says ENOSPC; the filler, to remove later."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def started() -> Iterator[list[harness.DaemonProcess]]:
    """Daemon processes a test starts: none outlives it."""
    daemons: list[harness.DaemonProcess] = []
    yield daemons
    for daemon in daemons:
        daemon.kill_if_running()


@pytest.fixture(scope="session")
def torchscript_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_torchscript_model(tmp_path_factory.mktemp("ts") / "tiny.torchscript")


@pytest.fixture(scope="session")
def hf_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_hf_model_dir(tmp_path_factory.mktemp("hf") / "tiny-birefnet")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server's URL: the one `.ci/run` started, or one started here from the
    installed binaries. Without binaries the tests that need it are skipped, never in CI."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        yield url
        return
    bindir = postgres_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests, but no PostgreSQL binaries (initdb, pg_ctl) were found")
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    server = TempPostgres(bindir=bindir).start()
    yield server.url
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh database with the current schema, for one test."""
    from daemon.store.postgres import migrate

    url = fresh_store_url(postgres_server)
    migrate(url)
    return url


# --- What the store is asked to do ------------------------------------------------------
@dataclass
class Work:
    transactions: int = 0
    statements: int = 0
    """As the server sees them: BEGIN and COMMIT included (PostgreSQL)."""


class _CountedConnection:
    def __init__(self, conn: Any, work: Work) -> None:
        self._conn, self._work = conn, work

    def execute(self, *args: Any) -> Any:
        self._work.statements += 1
        return self._conn.execute(*args)

    def executemany(self, *args: Any) -> Any:
        self._work.statements += 1  # one batch: psycopg pipelines it
        return self._conn.executemany(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def counted(store: JobStore, monkeypatch: pytest.MonkeyPatch, *, begin_and_commit: int = 0) -> Work:
    """Count `store`'s transactions and statements from now on."""
    work, db = Work(), getattr(store, "db")

    @contextmanager
    def counting(*, durable: bool = True, single: bool = False) -> Iterator[_CountedConnection]:
        with db(durable=durable, single=single) as conn:
            work.transactions += 1
            work.statements += 0 if single else begin_and_commit
            yield _CountedConnection(conn, work)

    monkeypatch.setattr(store, "db", counting)
    return work


def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, *, database_clock: bool = False, **postgres: Any
) -> JobStore:
    """The store a `params=["sqlite", "postgresql"]` fixture names: SQLite in `tmp_path`, or
    PostgreSQL on a fresh database (`postgres`: its settings), on the test's clock unless
    `database_clock` (PostgreSQL then reads its own, as a fleet runs)."""
    if request.param == "sqlite":
        return JobQueue(tmp_path / "state" / "queue.sqlite3", clock=clock)
    from daemon.store.postgres import PostgresStore

    return PostgresStore(request.getfixturevalue("postgres_url"), clock=None if database_clock else clock, **postgres)
