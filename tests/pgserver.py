"""A throwaway PostgreSQL server for the tests and benchmarks, from the installed binaries.

Test-only (it runs `runuser` and `chown` as root): never in the wheel. pytest-postgresql does
the same job; this one is kept because it is 90 lines, runs the server as the `postgres`
user when the tests run as root (as CI does), shares one server and one database among all
tests with a schema each (a millisecond to make, where a database takes a fifth of a second),
restarts the server on the same data for the fleet's outage tests, and serves the benchmarks.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

POSTGRES_URL_ENV = "CUTOUT_TEST_POSTGRES_URL"
"""A server to use instead of starting one: `.ci/run` starts one and exports its URL here."""


def postgres_bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres are (`pg_config --bindir`, else on PATH), or None."""
    found = shutil.which("pg_config")
    if found:
        folder = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if folder and (Path(folder) / "initdb").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class TempPostgres:
    """A PostgreSQL server in a temp folder, listening only on a unix socket there.

    `initdb` refuses to run as root, so as root the server runs as the `postgres` user
    (the folder is handed to it). `database()` makes a fresh, empty database per caller.
    """

    def __init__(self, *, bindir: Path, port: int = 54329, options: str = "") -> None:
        self.bindir, self.port, self.options = bindir, port, options
        self.root = Path(tempfile.mkdtemp(prefix="cutout-pg-"))
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.root}&port={self.port}"

    def start(self) -> TempPostgres:
        self._run("initdb", "-D", str(self.root / "data"), "-U", "postgres", "-A", "trust", "--no-sync")
        self._serve()
        return self

    def restart(self, *, pause: float = 0.0) -> None:
        """Down for `pause` seconds, then up again on the same data: every connection is cut."""
        self._halt()
        time.sleep(pause)
        self._serve()

    def stop(self) -> None:
        self._halt()
        shutil.rmtree(self.root, ignore_errors=True)

    def _serve(self) -> None:
        options = f"-k {self.root} -p {self.port} -c listen_addresses= -c fsync=off -c max_connections=200 {self.options}"
        self._run("pg_ctl", "-D", str(self.root / "data"), "-o", options, "-w", "-l", str(self.root / "log"), "start")

    def _halt(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bindir / tool), *args], check=True, capture_output=True)


def fresh_store_url(server_url: str) -> str:
    """An empty place for one job store on the server at `server_url`: its URL.

    A schema of its own in one shared database, chosen with libpq's `options` (search_path):
    creating a schema takes a millisecond, a database a fifth of a second."""
    import psycopg

    shared = _with_database(server_url, SHARED_DATABASE)
    with psycopg.connect(server_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (SHARED_DATABASE,)).fetchone() is None:
            try:
                conn.execute(f'CREATE DATABASE "{SHARED_DATABASE}"')
            except psycopg.errors.DuplicateDatabase:
                pass  # another test process made it first
    schema = f"store_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(shared, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{shared}{'&' if '?' in shared else '?'}options=-csearch_path%3D{schema}"


SHARED_DATABASE = f"cutout_tests_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
"""One database per test process: PostgreSQL's advisory locks (the watcher's role, migrations)
belong to a database, not a schema, so workers of one server (`.ci/run` starts one for all)
never contend for each other's locks."""


def _with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead (the path part of a libpq URL)."""
    head, _, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")
