"""Several daemons on one PostgreSQL store: does throughput grow with the machines?

    python -m benchmarks.fleet                       # N = 1, 2, 4 daemons, 200 ms model, 120 images
    python -m benchmarks.fleet --workers 1,2 --images 40 --model-cost-ms 100    # a quick look

Each daemon is a real `cutout watch` process with the sleeping stand-in model (the cost of
a GPU forward, no CPU), its own state folder, and the shared hot folder and store, as the
machines of a fleet have. For each N it prints the throughput, its ratio to N times the
one-daemon rate, and the database work per job (statements, from pg_stat_statements, and
transactions). A claim microbenchmark then measures claim latency with 1 to 8 claimers
hammering the store at once, no model in the way. On one computer the daemons share its
cores: small photos keep the CPU stages far below the model's cost, so the model, not
the CPU, is what N multiplies.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import psycopg
import torch
import yaml

from benchmarks.endtoend import DaemonUnderTest
from benchmarks.images import encode, photo_like
from benchmarks.standin import build_standin
from daemon.store.jobs import Fingerprint
from daemon.store.postgres import PostgresStore, migrate
from tests.pgserver import TempPostgres, fresh_store_url, postgres_bindir

STATS = "shared_preload_libraries=pg_stat_statements"
PHOTO_SIZE = (480, 320)
TARGET_SIZE = 320
"""Small photos and a small model square: what N multiplies here is the model's cost and the
store's work, not the CPU stages, which the daemons of one computer share (2 cores here)."""


def small_photo() -> Any:
    return cv2.resize(photo_like(2, seed=3), PHOTO_SIZE, interpolation=cv2.INTER_AREA)


class FleetDaemon(DaemonUnderTest):
    """A `cutout watch` on the shared folders and store, with a state folder of its own."""

    def configure(self, *, shared: Path, url: str) -> None:
        config = yaml.safe_load(self.config.read_text())
        config["folders"].update(input=str(shared / "in"), output=str(shared / "out"),
                                 quarantine=str(shared / "quarantine"))
        config["queue"] = {"store": "postgresql", "url": url}
        config["pipeline"] = {"target_size": TARGET_SIZE}
        self.config.write_text(yaml.safe_dump(config))


def run_fleet(*, count: int, server: TempPostgres, model: Path, images: int, work: Path) -> dict[str, Any]:
    url = fresh_store_url(server.url)
    migrate(url)
    shared = work / f"fleet-{count}"
    shutil.rmtree(shared, ignore_errors=True)
    (shared / "in").mkdir(parents=True)
    daemons = [FleetDaemon(root=work / f"fleet-{count}-m{n}", model=str(model), device="cpu", settle_seconds=0.3)
               for n in range(count)]
    for daemon in daemons:
        daemon.configure(shared=shared, url=url)
        daemon.start()
    try:
        return _measure(daemons, url=url, shared=shared, images=images)
    finally:
        for daemon in daemons:
            daemon.stop()


def _measure(daemons: list[FleetDaemon], *, url: str, shared: Path, images: int) -> dict[str, Any]:
    staging = shared / "staging"
    staging.mkdir()
    photo = encode(small_photo(), "jpg")
    for index in range(images):
        (staging / f"{index:04d}.jpg").write_bytes(photo)
    before = _database_work(url)
    started = time.monotonic()
    for path in sorted(staging.iterdir()):
        path.rename(shared / "in" / path.name)
    # Watched in the output folder, not the store: polling the store would count in its work.
    while len(list((shared / "out").glob("*.png"))) < images:
        if not all(daemon.alive() for daemon in daemons):
            raise RuntimeError("a daemon died:\n" + "\n".join(d.tail() for d in daemons))
        time.sleep(0.05)
    seconds = time.monotonic() - started
    while _done(url) < images:  # each cut-out is published just before its job's commit
        time.sleep(0.05)
    after = _database_work(url)
    per_daemon = [len([e for e in d.events("job") if e.get("outcome") == "done"]) for d in daemons]
    return {
        "daemons": len(daemons), "images": images, "seconds": round(seconds, 2), "rate": round(images / seconds, 3),
        "done_per_daemon": per_daemon,
        "statements_per_job": round((after["statements"] - before["statements"]) / images, 1),
        "transactions_per_job": round((after["transactions"] - before["transactions"]) / images, 1),
        "statements_by_query": _per_job(before["by_query"], after["by_query"], images=images),
    }


def _per_job(before: dict[str, int], after: dict[str, int], *, images: int) -> dict[str, float]:
    """Each statement's calls per job, the most called first: where the database work goes."""
    calls = {query: (n - before.get(query, 0)) / images for query, n in after.items()}
    return {query: round(n, 2) for query, n in sorted(calls.items(), key=lambda item: -item[1]) if n >= 0.05}


def _done(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT COUNT(*) FROM cutout_jobs WHERE state = 'done'").fetchone()
    return int(row[0]) if row else 0


def _database_work(url: str) -> dict[str, Any]:
    """Statements (in all, and by query) and transactions of the whole database so far (every
    daemon's, and ours). BEGIN and COMMIT count as statements: pg_stat_statements tracks them."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public")
        rows = conn.execute("SELECT s.query, SUM(s.calls) FROM public.pg_stat_statements s JOIN pg_database d"
                            " ON d.oid = s.dbid WHERE d.datname = current_database() GROUP BY s.query").fetchall()
        commits = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database"
                               " WHERE datname = current_database()").fetchone()
    assert commits is not None
    by_query = {" ".join(str(query).split())[:110]: int(calls) for query, calls in rows}
    return {"statements": sum(by_query.values()), "transactions": int(commits[0]), "by_query": by_query}


# --- Claim latency, no model in the way ----------------------------------------------------------
def claim_latency(*, server: TempPostgres, claimers: int, jobs: int) -> dict[str, Any]:
    url = fresh_store_url(server.url)
    migrate(url)
    stores = [PostgresStore(url, worker=f"bench-{n}", pool_size=2) for n in range(claimers)]
    for index in range(jobs):
        stores[0].offer(PurePosixPath(f"{index:05d}.jpg"), Fingerprint(1, index))
    timings: list[float] = []
    lock = threading.Lock()

    def claim_all(store: PostgresStore) -> None:
        while True:
            started = time.perf_counter()
            job = store.claim()
            elapsed = time.perf_counter() - started
            if job is None:
                return
            with lock:
                timings.append(elapsed)
            store.finish(job, content_hash="h", fingerprint=Fingerprint(1, 1), publish=lambda: None)

    threads = [threading.Thread(target=claim_all, args=(store,)) for store in stores]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    for store in stores:
        store.close()
    ordered = sorted(timings)
    return {"claimers": claimers, "jobs": jobs, "claims_per_second": round(jobs / seconds),
            "median_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 2)}


# --- The command -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4", help="fleet sizes to run, comma-separated")
    parser.add_argument("--images", type=int, default=120, help="photos dropped per fleet size")
    parser.add_argument("--model-cost-ms", type=float, default=200.0, help="the stand-in's sleep per forward")
    parser.add_argument("--claim-jobs", type=int, default=2000, help="jobs of the claim microbenchmark")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    bindir = postgres_bindir()
    if bindir is None:
        print("no PostgreSQL server binaries (initdb, pg_ctl): nothing to measure", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="cutout-fleet-"))
    model = build_standin(work / "standin.torchscript", cost_ms=args.model_cost_ms, kind="sleep",
                          device=torch.device("cpu"))
    server = TempPostgres(bindir=bindir, port=54337, options=f"-c {STATS}").start()
    try:
        results = _run_all(args, server=server, model=model, work=work)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    _print(results, model_cost_ms=args.model_cost_ms)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _run_all(args: argparse.Namespace, *, server: TempPostgres, model: Path, work: Path) -> dict[str, Any]:
    fleets = [run_fleet(count=int(n), server=server, model=model, images=args.images, work=work)
              for n in args.workers.split(",")]
    single = next((f["rate"] for f in fleets if f["daemons"] == 1), None)
    for fleet in fleets:
        fleet["ratio_to_n_times_one"] = round(fleet["rate"] / (single * fleet["daemons"]), 3) if single else None
    claims = [claim_latency(server=server, claimers=n, jobs=args.claim_jobs) for n in (1, 2, 4, 8)]
    return {"command": " ".join(["python -m benchmarks.fleet", *sys.argv[1:]]),
            "model_cost_ms": args.model_cost_ms, "fleets": fleets, "claims": claims}


def _print(results: dict[str, Any], *, model_cost_ms: float) -> None:
    print(f"stand-in model: {model_cost_ms:.0f} ms per forward (a sleep: no CPU)")
    print(f"{'daemons':>8} {'images':>7} {'seconds':>8} {'images/s':>9} {'vs N x one':>11} "
          f"{'stmts/job':>10} {'xacts/job':>10}  done per daemon")
    for f in results["fleets"]:
        ratio = "-" if f["ratio_to_n_times_one"] is None else f"{f['ratio_to_n_times_one']:.2f}"
        print(f"{f['daemons']:>8} {f['images']:>7} {f['seconds']:>8} {f['rate']:>9} {ratio:>11} "
              f"{f['statements_per_job']:>10} {f['transactions_per_job']:>10}  {f['done_per_daemon']}")
    for f in results["fleets"]:
        print(f"\nwhere the statements go, {f['daemons']} daemon(s): calls per job")
        for query, calls in list(f["statements_by_query"].items())[:14]:
            print(f"{calls:>8}  {query}")
    print(f"\n{'claimers':>8} {'claims/s':>9} {'median ms':>10} {'p95 ms':>8}")
    for c in results["claims"]:
        print(f"{c['claimers']:>8} {c['claims_per_second']:>9} {c['median_ms']:>10} {c['p95_ms']:>8}")


if __name__ == "__main__":
    sys.exit(main())
