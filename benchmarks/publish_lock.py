"""How long the job store's lock is held to publish a cut-out, and what fencing costs.

    python -m benchmarks.publish_lock                 # 200 jobs, 2 MB outputs, SQLite and PostgreSQL
    python -m benchmarks.publish_lock --jobs 50       # a quick look

`finish()` renames the staged output into place and flushes its folder inside the store's
transaction, after checking the claim: a worker whose claim was taken meanwhile can never
publish over the newer claimer's file (fencing). The price is that the transaction (on
PostgreSQL: the job's row lock and a pooled connection) stays open for the rename and the
folder's fsync. This prints, per job, the transaction with the publish inside it, the same
transaction with nothing to publish, and the publish alone, for each store, so the cost of
the guarantee is a number, not a guess. The outputs are staged exactly as the daemon stages
them (daemon.folders.outputs.staged_outputs) in a folder of this machine's disk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from daemon.folders.outputs import Folders, staged_outputs
from daemon.store.jobs import Fingerprint
from daemon.store.sql import SqlJobStore
from daemon.store.sqlite import JobQueue
from tests.pgserver import TempPostgres, fresh_store_url, postgres_bindir

FP = Fingerprint(1, 1)


def _timed(store: SqlJobStore, folders: Folders, index: int, data: bytes, *, publish: bool) -> tuple[float, float]:
    """(seconds in finish(), seconds in the publish inside it) for one job."""
    rel = PurePosixPath(f"job-{index:05d}.jpg")
    store.offer(rel, FP)
    job = store.claim()
    assert job is not None
    inside = [0.0]
    with staged_outputs(folders, [(job.output, data)]) as rename:
        def timed_rename() -> object:
            start = time.perf_counter()
            result = rename() if publish else None
            inside[0] = time.perf_counter() - start
            return result

        start = time.perf_counter()
        assert store.finish(job, content_hash="h", fingerprint=FP, publish=timed_rename)
        return time.perf_counter() - start, inside[0]


def measure(name: str, open_store: Callable[[], SqlJobStore], *, jobs: int, size: int, root: Path) -> None:
    data = os.urandom(size)
    for publish in (True, False):
        folders = Folders(input=root / "in", output=root / f"out-{name}-{publish}", quarantine=root / "q",
                          archive=root / "a", state=root / "state")
        folders.output.mkdir(parents=True)
        store = open_store()
        times = [_timed(store, folders, index, data, publish=publish) for index in range(jobs)]
        store.close()
        held = sorted(t for t, _ in times)
        inner = statistics.median(p for _, p in times)
        what = "rename + fsync inside" if publish else "nothing to publish  "
        print(f"{name:<11} {what}: transaction median {1e3 * statistics.median(held):6.2f} ms, "
              f"p95 {1e3 * held[int(0.95 * len(held)) - 1]:6.2f} ms; the publish alone {1e3 * inner:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--size-mb", type=float, default=2.0)
    args = parser.parse_args()
    size = int(args.size_mb * 1e6)
    print(f"{args.jobs} jobs, {args.size_mb:g} MB outputs, staged and published on {tempfile.gettempdir()}'s disk")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        measure("SQLite", lambda: JobQueue(root / f"q-{time.monotonic_ns()}.sqlite3"), jobs=args.jobs, size=size,
                root=root)
        bindir = postgres_bindir()
        if bindir is None:
            print("PostgreSQL: no server binaries here, skipped")
            return
        server = TempPostgres(bindir=bindir, port=54391).start()
        try:
            from daemon.store.postgres import PostgresStore, migrate

            def pg() -> SqlJobStore:
                url = fresh_store_url(server.url)
                migrate(url)
                return PostgresStore(url, worker="bench")

            measure("PostgreSQL", pg, jobs=args.jobs, size=size, root=root)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
