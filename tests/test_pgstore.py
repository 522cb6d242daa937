"""What only the PostgreSQL store has: leases on the database clock, several workers, the schema.

A real server (`postgres_url`: a fresh database per test). What every store does is in
test_store_contract.py; here, two or more `PostgresStore`s stand for machines of a fleet.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import psycopg
import pytest

from daemon.errors import ConfigError, QueueError
from daemon.store.jobs import Fingerprint, Job
from daemon.store.postgres import MIGRATIONS, SWEEPS_PER_LEASE, Migrated, PostgresStore, migrate, redacted
from daemon.testing import FakeClock, wait_until

P = PurePosixPath
FP = Fingerprint(100, 1)
LEASE = 30.0


@pytest.fixture
def fleet(postgres_url: str, clock: FakeClock) -> Iterator[list[PostgresStore]]:
    stores = [PostgresStore(postgres_url, worker=f"machine-{n}", clock=clock, lease_seconds=LEASE) for n in range(2)]
    yield stores
    for store in stores:
        store.close()


def _claimed(store: PostgresStore) -> Job:
    job = store.claim()
    assert job is not None
    return job


def test_a_job_whose_lease_ran_out_is_claimed_elsewhere_and_its_old_claim_is_fenced(
    fleet: list[PostgresStore], clock: FakeClock
) -> None:
    a, b = fleet
    a.offer(P("x.jpg"), FP)
    frozen = _claimed(a)
    a.mark_stage(frozen, "inference")
    assert b.claim() is None  # leased to machine-0
    clock.advance(LEASE + 1)  # machine-0 froze (SIGSTOP, a network cut) past its lease
    taken = _claimed(b)
    assert taken.token > frozen.token and taken.attempts == 2 and (taken.kills, taken.crashes, taken.suspect) == (1, 0, True)
    published: list[str] = []
    assert not a.heartbeat(frozen)
    assert not a.finish(frozen, content_hash="late", fingerprint=FP, publish=lambda: published.append("late"))
    assert b.finish(taken, content_hash="h", fingerprint=FP, publish=lambda: published.append("b"))
    assert published == ["b"]


def test_a_lease_that_ran_out_between_stages_does_not_count_as_a_death(
    fleet: list[PostgresStore], clock: FakeClock
) -> None:
    a, b = fleet
    a.offer(P("x.jpg"), FP)
    _claimed(a)  # claimed, but not yet inside a stage
    clock.advance(LEASE + 1)
    taken = _claimed(b)
    assert (taken.attempts, taken.kills, taken.suspect) == (1, 0, False)


def test_heartbeats_keep_a_slow_job_leased(fleet: list[PostgresStore], clock: FakeClock) -> None:
    a, b = fleet
    a.offer(P("x.jpg"), FP)
    job = _claimed(a)
    for _ in range(4):  # a minute-long CPU inference, two leases long
        clock.advance(LEASE * 0.6)
        assert a.heartbeat(job)
    assert b.claim() is None


def test_lost_leases_are_looked_for_once_a_sixth_of_a_lease_so_one_is_back_within_that(
    fleet: list[PostgresStore], clock: FakeClock
) -> None:
    a, b = fleet
    a.offer(P("x.jpg"), FP)
    _claimed(a)
    clock.advance(LEASE - 1)
    assert b.claim() is None  # looked, and nothing had run out yet
    clock.advance(2)  # a's lease has run out: the next look, not every claim, finds it
    assert b.claim() is None
    clock.advance(LEASE / SWEEPS_PER_LEASE - 2)
    assert _claimed(b).source == P("x.jpg")


def test_workers_claiming_at_once_each_get_different_jobs(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url, worker=f"w{n}") for n in range(4)]
    for index in range(120):
        stores[0].offer(P(f"{index:03d}.jpg"), FP)
    claimed: list[list[int]] = [[] for _ in stores]

    def work(store: PostgresStore, mine: list[int]) -> None:
        while (job := store.claim()) is not None:
            mine.append(job.id)
            store.finish(job, content_hash="h", fingerprint=FP, publish=lambda: None)

    threads = [threading.Thread(target=work, args=pair) for pair in zip(stores, claimed, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = [job_id for mine in claimed for job_id in mine]
    assert len(every) == len(set(every)) == 120 and stores[0].counts()["done"] == 120
    for store in stores:
        store.close()


def test_machines_offering_colliding_names_at_once_get_different_output_names(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url, worker=f"w{n}") for n in range(3)]
    names = ["x.jpg", "x.webp", "x.tif"]
    threads = [threading.Thread(target=s.offer, args=(P(n), FP)) for s, n in zip(stores, names, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    outputs = {job.output.as_posix() for job in stores[0].jobs(state="pending", limit=10)}
    assert len(outputs) == 3 and "x.png" in outputs
    for store in stores:
        store.close()


def test_a_restarted_worker_takes_back_its_own_jobs_at_once_and_leaves_others_to_their_lease(
    postgres_url: str, clock: FakeClock
) -> None:
    first = PostgresStore(postgres_url, worker="mac-mini", clock=clock)
    other = PostgresStore(postgres_url, worker="gpu-box", clock=clock)
    for name in ("a.jpg", "b.jpg"):
        first.offer(P(name), FP)
    _claimed(first)
    _claimed(other)
    first.close()  # mac-mini was killed and starts again under the same worker id
    again = PostgresStore(postgres_url, worker="mac-mini", clock=clock)
    assert again.recover(crashed=False).released == 1
    assert again.counts() == {"pending": 1, "running": 1, "done": 0, "failed": 0, "review": 0}
    again.close()
    other.close()


# --- the schema --------------------------------------------------------------------------------------
def test_migrating_twice_changes_nothing_and_a_store_without_tables_is_refused(postgres_server: str) -> None:
    from tests.pgserver import fresh_store_url

    url = fresh_store_url(postgres_server)
    with pytest.raises(ConfigError, match=f"schema version 0, this cutout needs {len(MIGRATIONS)}: run `cutout queue init"):
        PostgresStore(url)
    assert migrate(url) == Migrated(0, len(MIGRATIONS), None, [])
    assert migrate(url) == Migrated(len(MIGRATIONS), len(MIGRATIONS), None, [])
    PostgresStore(url).close()


def test_a_store_newer_than_this_program_is_refused_with_both_versions(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE cutout_schema SET version = 99")
    with pytest.raises(ConfigError, match=f"schema version 99, newer than this cutout knows \\({len(MIGRATIONS)}\\)"):
        PostgresStore(postgres_url)
    with pytest.raises(ConfigError, match="newer"):
        migrate(postgres_url)


def test_an_unreachable_server_is_a_queue_error_that_never_shows_the_password(tmp_path: object) -> None:
    url = f"postgresql://cutout:s3cret@/cutout?host={tmp_path}&port=1"
    with pytest.raises(QueueError, match="is unreachable") as caught:
        PostgresStore(url, connect_timeout=0.5)
    assert "s3cret" not in str(caught.value) and "cutout:***@" in str(caught.value)


def test_urls_are_redacted_for_messages() -> None:
    assert redacted("postgresql://u:pw@db.studio/q") == "postgresql://u:***@db.studio/q"
    assert redacted("postgresql://u@db.studio/q") == "postgresql://u@db.studio/q"
    assert redacted("postgresql:///q?host=/tmp") == "postgresql:///q?host=/tmp"


def test_an_older_schema_is_upgraded_in_place_and_keeps_its_jobs(postgres_server: str) -> None:
    from tests.pgserver import fresh_store_url

    url = fresh_store_url(postgres_server)
    with psycopg.connect(url, autocommit=True) as conn:  # a store made by the first release
        conn.execute("CREATE TABLE cutout_schema (version integer NOT NULL)")
        conn.execute(MIGRATIONS[0])
        conn.execute("INSERT INTO cutout_schema VALUES (1)")
        conn.execute("INSERT INTO cutout_jobs (source, output, size, mtime_ns, state, first_seen, queued_at)"
                     " VALUES ('a.jpg', 'a.png', 1, 1, 'pending', 0, 0)")
    assert migrate(url) == Migrated(1, len(MIGRATIONS), None, [])
    store = PostgresStore(url)
    assert store.counts()["pending"] == 1 and store.fleet() == []
    job = store.claim()
    assert job is not None  # the first release's CHECK knew four states; the review step's is the fifth
    assert store.finish(job, content_hash="h", fingerprint=Fingerprint(1, 1), publish=lambda: None, review=True)
    assert store.counts()["review"] == 1
    store.close()


# --- the fleet ---------------------------------------------------------------------------------------
def test_one_daemon_leads_and_another_takes_over_when_its_connection_dies(fleet: list[PostgresStore]) -> None:
    a, b = fleet
    assert a.lead() and a.lead()  # it keeps the role
    assert not b.lead()
    with psycopg.connect(a.url, autocommit=True) as admin:  # the leader's machine drops off the network
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                      " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    # The terminated backend lets go of the lock as it exits, a moment later (termination is a
    # signal, not a wait): the other daemon's next tries take the role.
    wait_until(b.lead, what="the other daemon taking the role", timeout=10)
    assert not a.lead()  # it notices it lost the role and does not get it back while b holds it


def test_a_leader_that_stops_cleanly_hands_the_role_on_at_once(fleet: list[PostgresStore]) -> None:
    a, b = fleet
    assert a.lead()
    a.close()
    assert b.lead()


def test_a_machine_with_another_model_is_refused_by_the_fleet(fleet: list[PostgresStore]) -> None:
    a, b = fleet
    a.check_model("hf:ZhengPeng7/BiRefNet@" + "a" * 40)
    a.check_model("hf:ZhengPeng7/BiRefNet@" + "a" * 40)
    with pytest.raises(ConfigError, match="this fleet runs the model hf:ZhengPeng7/BiRefNet@aaaa.*--change-model"):
        b.check_model("hf:ZhengPeng7/BiRefNet@" + "b" * 40)


def test_queue_init_change_model_lets_the_next_daemon_set_the_fleets_model(
    fleet: list[PostgresStore], postgres_url: str
) -> None:
    a, b = fleet
    a.check_model("hf:ZhengPeng7/BiRefNet@" + "a" * 40)
    assert migrate(postgres_url, forget_model=True).forgot_model == "hf:ZhengPeng7/BiRefNet@" + "a" * 40
    b.check_model("birefnet@" + "b" * 40)  # the first to start after it: the fleet's model now
    with pytest.raises(ConfigError, match="this fleet runs the model birefnet@bbbb"):
        a.check_model("hf:ZhengPeng7/BiRefNet@" + "a" * 40)


def test_workers_report_themselves_for_status_and_leave_when_they_stop(
    fleet: list[PostgresStore], clock: FakeClock
) -> None:
    from daemon.store.jobs import WorkerInfo

    a, b = fleet
    for store, leader in ((a, True), (b, False)):
        store.report_worker(WorkerInfo(worker=store.worker, host="mac-mini", pid=42, device="mps", model="birefnet",
                                       started_at=1.0, seen_at=0.0, done=3, current="a.jpg", leader=leader))
    seen = a.fleet()
    assert [(w.worker, w.leader, w.done, w.seen_at) for w in seen] == [
        ("machine-0", True, 3, clock.now), ("machine-1", False, 3, clock.now)]
    b.leave(b.worker)
    assert [w.worker for w in a.fleet()] == ["machine-0"]


def test_tables_dropped_under_a_current_schema_record_are_refused_clearly_and_queue_init_makes_them_again(
    postgres_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon.cli.main import main
    from daemon.errors import StoreIncomplete
    from tests.pgserver import fresh_store_url

    url = fresh_store_url(postgres_server)
    migrate(url)
    store = PostgresStore(url, worker="mini")
    store.offer(P("kept.jpg"), Fingerprint(1, 1))
    store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE cutout_workers")
    with pytest.raises(StoreIncomplete, match="cutout_workers is missing") as caught:
        PostgresStore(url)
    assert caught.value.exit_status == 78 and "Run: cutout queue init --config F" in str(caught.value)
    config = tmp_path / "fleet.yaml"
    config.write_text(f"queue:\n  store: postgresql\n  url: '{url}'\nfolders:\n  state: {tmp_path / 'state'}\n")
    flags = ["--config", str(config)]
    assert main(["status", *flags]) == 78
    assert f"Run: cutout queue init --config {config}" in capsys.readouterr().err
    assert main(["queue", "init", *flags]) == 0
    assert "repaired: cutout_workers made again" in capsys.readouterr().out
    again = PostgresStore(url, worker="mini")
    assert again.get(P("kept.jpg")) is not None and again.fleet() == []  # the jobs kept; the table back
    again.close()


def test_a_table_dropped_under_a_running_store_is_store_incomplete_not_a_foreign_error(postgres_url: str) -> None:
    from daemon.errors import StoreIncomplete

    store = PostgresStore(postgres_url, worker="mini")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE cutout_jobs CASCADE")
    with pytest.raises(StoreIncomplete, match="cutout_jobs"):
        store.offer(P("a.jpg"), Fingerprint(1, 1))
    store.close()
    migrate(postgres_url)  # cutout_jobs and its names made again
    PostgresStore(postgres_url).close()


def test_the_repair_makes_the_same_schema_as_the_migrations(postgres_server: str) -> None:
    from daemon.store.postgres import _recreating
    from tests.pgserver import fresh_store_url

    def schema(url: str) -> set[tuple[str, ...]]:
        with psycopg.connect(url) as conn:
            columns = conn.execute(
                "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '')"
                " FROM information_schema.columns WHERE table_schema = current_schema()").fetchall()
            indexes = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
                                   ).fetchall()
        return {tuple(str(v).split(".")[-1] for v in row) for row in [*columns, *indexes]}

    migrated, repaired = fresh_store_url(postgres_server), fresh_store_url(postgres_server)
    migrate(migrated)
    with psycopg.connect(repaired, autocommit=True) as conn:
        for sql in MIGRATIONS:
            conn.execute(_recreating(sql))
            conn.execute(_recreating(sql))  # twice: it only makes what is missing
    assert {row for row in schema(migrated) if row[0] != "cutout_schema"} == schema(repaired)
