"""What every job store must do: one suite, run unchanged on SQLite and on PostgreSQL.

States, attempts, claims, re-drops, output names, crash recovery and fencing. A store
backend is done when it passes all of it (huey's storage tests are the model).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from daemon.errors import QueueDamaged, QueueError
from daemon.store.jobs import Fingerprint, JobStore, Recovery
from daemon.store.sqlite import JobQueue
from daemon.testing import FakeClock
from tests.conftest import fill_disk, open_store, small_tmpfs

P = PurePosixPath
FP = Fingerprint(100, 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def queue(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[JobStore]:
    store = open_store(request, tmp_path, clock, worker="test-worker")
    yield store
    store.close()


def test_a_new_file_becomes_a_pending_job_and_claiming_counts_the_attempt(queue: JobStore) -> None:
    assert queue.offer(P("a/b.jpg"), FP) == "queued"
    job = queue.claim()
    assert job is not None and job.source == P("a/b.jpg") and job.output == P("a/b.png")
    assert job.state == "running" and job.attempts == 1
    assert queue.claim() is None


def test_a_done_job_keeps_its_cut_outs_doubt_and_its_parts(queue: JobStore) -> None:
    for name in ("a.jpg", "b.jpg"):
        queue.offer(P(name), FP)
    a, b = queue.claim(), queue.claim()
    assert a is not None and b is not None
    assert queue.finish(a, content_hash="h", fingerprint=FP, publish=lambda: None, doubt=0.734,
                        doubt_parts={"fog": 0.7, "area": 0.1})
    assert queue.finish(b, content_hash="h", fingerprint=FP, publish=lambda: None)
    done_a, done_b = queue.get(P("a.jpg")), queue.get(P("b.jpg"))
    assert done_a is not None and done_a.doubt == pytest.approx(0.734) and done_a.doubt_parts == {"fog": 0.7, "area": 0.1}
    assert done_b is not None and done_b.doubt is None and done_b.doubt_parts is None  # none measured: none stored
    assert sorted(str(job.doubt) for job in queue.jobs(state="done", limit=10)) == ["0.734", "None"]
    assert [job.source for job in queue.doubtful(above=0.5)] == [P("a.jpg")]
    assert queue.doubtful(above=0.8) == []
    assert queue.offer(P("a.jpg"), Fingerprint(FP.size + 1, FP.mtime_ns)) == "requeued"  # new content
    again = queue.get(P("a.jpg"))
    assert again is not None and again.doubt is None and again.doubt_parts is None  # not the old cut-out's


def _in_review(queue: JobStore, name: str = "a.jpg", *, doubt: float = 0.8) -> Any:
    queue.offer(P(name), FP)
    job = queue.claim()
    assert job is not None
    assert queue.finish(job, content_hash="h", fingerprint=FP, publish=lambda: None, doubt=doubt,
                        doubt_parts={"fog": doubt}, review=True)
    held = queue.get(P(name))
    assert held is not None and held.state == "review"
    return held


def test_a_doubtful_cut_out_waits_in_review_holding_its_name_until_approved(queue: JobStore) -> None:
    held = _in_review(queue)
    assert queue.counts()["review"] == 1 and not queue.has_work()
    assert [job.source for job in queue.jobs(state="review", limit=5)] == [P("a.jpg")]
    assert [job.source for job in queue.doubtful(above=0.5)] == [P("a.jpg")]
    assert queue.offer(P("a.png"), FP) == "queued"  # its name is still claimed: the newcomer gets another
    newcomer = queue.get(P("a.png"))
    assert newcomer is not None and newcomer.output == P("a.png.png")
    assert queue.offer(P("a.jpg"), FP) == "unchanged"  # the same file seen again: nothing to redo
    published: list[str] = []
    assert queue.approve(held, publish=lambda: published.append("moved"))
    assert published == ["moved"]
    done = queue.get(P("a.jpg"))
    assert done is not None and done.state == "done" and done.doubt == pytest.approx(0.8)
    assert not queue.approve(held, publish=lambda: published.append("again"))  # approved once only
    assert published == ["moved"]


def test_an_approve_whose_publish_fails_leaves_the_job_waiting(queue: JobStore) -> None:
    held = _in_review(queue)

    def broken() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        queue.approve(held, publish=broken)
    still = queue.get(P("a.jpg"))
    assert still is not None and still.state == "review"


def test_a_rejected_cut_out_fails_its_job_and_frees_its_name(queue: JobStore) -> None:
    held = _in_review(queue)
    assert not queue.mark_failed(held, reason="rejected", message="no", quarantine=P("a.jpg"))  # not running
    assert queue.mark_failed(held, reason="rejected", message="hair cut off", quarantine=P("a.jpg"), was="review")
    failed = queue.get(P("a.jpg"))
    assert failed is not None and failed.state == "failed" and failed.reason == "rejected"
    assert not queue.approve(held, publish=lambda: None)  # rejected: nothing to approve
    queue.offer(P("a.png"), FP)
    newcomer = queue.get(P("a.png"))
    assert newcomer is not None and newcomer.output == P("a.png")  # the name was released


def test_a_cut_out_in_review_redone_goes_back_to_pending_keeping_its_name(queue: JobStore) -> None:
    held = _in_review(queue)
    assert queue.redo(held)
    again = queue.get(P("a.jpg"))
    assert again is not None and again.state == "pending" and again.output == P("a.png") and again.doubt is None
    assert not queue.redo(held)  # no longer in review
    assert not queue.approve(held, publish=lambda: None)  # a redone one cannot be approved from its old claim
    job = queue.claim()
    assert job is not None and job.token > held.token


def test_a_job_in_review_whose_file_changes_is_queued_again(queue: JobStore) -> None:
    _in_review(queue)
    assert queue.offer(P("a.jpg"), Fingerprint(FP.size + 1, FP.mtime_ns)) == "requeued"
    again = queue.get(P("a.jpg"))
    assert again is not None and again.state == "pending"


def test_a_job_claimed_but_in_no_stage_when_the_process_died_goes_back_uncharged(queue: JobStore) -> None:
    queue.offer(P("a.jpg"), FP)
    queue.claim()
    assert queue.recover(crashed=True) == Recovery(released=1, suspects=0, blamed=0, killed=0)
    job = queue.claim()
    assert job is not None and job.attempts == 1 and job.crashes == 0 and not job.suspect


def test_the_only_job_inside_a_stage_when_the_process_crashed_is_charged_with_the_crash(queue: JobStore) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        queue.offer(P(name), FP)
    a, _, _ = queue.claim(), queue.claim(), queue.claim()
    assert a is not None
    queue.mark_stage(a, "inference")
    assert queue.recover(crashed=True) == Recovery(released=2, suspects=1, blamed=1, killed=0)
    again = queue.get(P("a.jpg"))
    assert again is not None and (again.crashes, again.kills) == (1, 0) and again.suspect and again.stage is None


def test_the_only_job_inside_a_stage_when_the_process_was_killed_counts_a_kill_not_a_crash(queue: JobStore) -> None:
    queue.offer(P("a.jpg"), FP)
    a = queue.claim()
    assert a is not None
    queue.mark_stage(a, "decode")
    assert queue.recover(crashed=False) == Recovery(released=0, suspects=1, blamed=0, killed=1)
    again = queue.get(P("a.jpg"))
    assert again is not None and (again.crashes, again.kills) == (0, 1) and again.suspect


def test_several_jobs_inside_stages_become_suspects_that_run_first_and_alone(queue: JobStore) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        queue.offer(P(name), FP)
    jobs = [queue.claim() for _ in range(3)]
    for job, stage in zip(jobs, ("decode", "inference", "finish"), strict=True):
        assert job is not None
        queue.mark_stage(job, stage)
    assert queue.recover(crashed=True) == Recovery(released=0, suspects=3, blamed=0, killed=0)
    assert all(job is not None and job.crashes == 0 for job in map(queue.get, (P("a.jpg"), P("b.jpg"))))
    assert queue.claim(suspect_ok=False) is None  # other work in flight: the suspect waits, and so does the rest
    first = queue.claim()
    assert first is not None and first.suspect and first.source == P("a.jpg")


@pytest.mark.parametrize("crashed", [True, False])
def test_suspects_that_die_alone_take_turns_so_a_run_of_deaths_convicts_nobody_early(
    queue: JobStore, crashed: bool
) -> None:
    for name in ("a.jpg", "b.jpg"):
        queue.offer(P(name), FP)
    for job in (queue.claim(), queue.claim()):
        assert job is not None
        queue.mark_stage(job, "decode")
    queue.recover(crashed=crashed)
    order = []
    for _ in range(4):  # the process dies every time, whatever runs alone
        job = queue.claim()
        assert job is not None
        order.append(job.source.name)
        queue.mark_stage(job, "inference")
        queue.recover(crashed=crashed)
    assert order == ["a.jpg", "b.jpg", "a.jpg", "b.jpg"]
    jobs = [job for job in map(queue.get, (P("a.jpg"), P("b.jpg"))) if job]
    assert max(job.crashes if crashed else job.kills for job in jobs) == 2
    assert max(job.kills if crashed else job.crashes for job in jobs) == 0


def test_a_retry_waits_for_its_time_and_transient_errors_do_not_count_as_crashes(
    queue: JobStore, clock: FakeClock
) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.mark_retry(job, reason="disk_full", message="full", delay=10, counts=False)
    assert queue.claim() is None and queue.next_retry_in() == 10
    clock.now += 10
    again = queue.claim()
    assert again is not None and again.attempts == 2 and again.unfinished_starts == 1


def test_a_done_file_offered_again_unchanged_is_not_requeued(queue: JobStore) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.finish(job, content_hash="abc", fingerprint=FP, publish=lambda: None)
    assert queue.offer(P("a.jpg"), FP) == "unchanged"


def test_a_redrop_with_the_same_content_is_not_reprocessed_but_new_content_is(queue: JobStore) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.finish(job, content_hash="abc", fingerprint=FP, publish=lambda: None)
    assert queue.offer(P("a.jpg"), Fingerprint(100, 2), content_hash=lambda: "abc") == "unchanged"
    assert queue.offer(P("a.jpg"), Fingerprint(120, 3), content_hash=lambda: "def") == "requeued"
    requeued = queue.claim()
    assert requeued is not None and requeued.attempts == 1 and requeued.output == P("a.png")


def test_a_pending_file_offered_again_stays_one_job(queue: JobStore) -> None:
    assert queue.offer(P("a.jpg"), FP) == "queued"
    assert queue.offer(P("a.jpg"), Fingerprint(200, 2)) == "busy"
    assert queue.counts()["pending"] == 1


def test_output_names_are_claimed_once_case_insensitively_in_arrival_order(queue: JobStore) -> None:
    for name in ("x.png", "X.jpg", "x.webp"):
        queue.offer(P(name), FP)
    outputs = [queue.claim() for _ in range(3)]
    assert [job.output.as_posix() for job in outputs if job] == ["x.png", "X.jpg.png", "x.webp.png"]


def test_files_offered_together_each_get_what_an_offer_alone_gives_them(queue: JobStore) -> None:
    for name in ("running.jpg", "done.jpg", "changed.jpg"):
        queue.offer(P(name), FP)
    running, done, changed = (queue.claim() for _ in range(3))
    assert running and done and changed
    for job in (done, changed):
        assert queue.finish(job, content_hash="h", fingerprint=FP, publish=lambda: None)
    outcomes = queue.offer_together([(P("x.png"), FP), (P("X.jpg"), FP), (P("running.jpg"), FP),
                                     (P("done.jpg"), FP), (P("changed.jpg"), Fingerprint(FP.size + 1, FP.mtime_ns))])
    # The last is done with another size: whether it changed is for its content hash to say, alone.
    assert outcomes == ["queued", "queued", "busy", "unchanged", None]
    new = [queue.claim() for _ in range(2)]
    assert [job.output.as_posix() for job in new if job] == ["x.png", "X.jpg.png"]  # in the order given


def test_files_offered_together_are_all_offered_or_none(queue: JobStore) -> None:
    unstorable = P("caf\udce9.jpg")  # a name no database takes (not UTF-8): this batch fails
    with pytest.raises(UnicodeEncodeError):
        queue.offer_together([(P("a.jpg"), FP), (unstorable, FP), (P("b.jpg"), FP)])
    assert queue.get(P("a.jpg")) is None and queue.claim() is None
    assert queue.offer_together([(P("a.jpg"), FP), (P("b.jpg"), FP)]) == ["queued", "queued"]


def test_a_released_job_does_not_count_its_start(queue: JobStore) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.release(job)
    again = queue.claim()
    assert again is not None and again.attempts == 1


def test_a_failed_job_redropped_is_queued_from_scratch(queue: JobStore) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.mark_failed(job, reason="no_foreground", message="none", quarantine=P("a.jpg"))
    assert queue.offer(P("a.jpg"), Fingerprint(5, 5)) == "requeued"
    again = queue.claim()
    assert again is not None and again.attempts == 1
    assert again.quarantine is None  # a new file at that path, not the quarantined one


def test_a_failed_file_seen_before_it_left_for_quarantine_is_not_queued_again_until_a_minute_passes(
    queue: JobStore, clock: FakeClock
) -> None:
    """The worker records the failure, then moves the file: a watcher that looks in between
    sees the very file that is leaving, not a new one (the flake of test_queue_damage)."""
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    assert queue.mark_failed(job, reason="undecodable", message="bad", quarantine=P("a.jpg"))
    assert queue.offer(P("a.jpg"), FP) == "busy"  # on its way out: looked at again later
    assert queue.offer(P("a.jpg"), Fingerprint(FP.size, FP.mtime_ns + 1)) == "requeued"  # new content: new work
    second = queue.claim()
    assert second is not None
    assert queue.mark_failed(second, reason="undecodable", message="bad", quarantine=P("a.jpg"))
    clock.advance(61)
    assert queue.offer(P("a.jpg"), Fingerprint(FP.size, FP.mtime_ns + 1)) == "requeued"  # put back by a person


def test_a_failed_job_releases_its_output_name(queue: JobStore) -> None:
    queue.offer(P("x.CR3"), FP)
    raw = queue.claim()
    assert raw is not None and raw.output == P("x.png")
    queue.mark_failed(raw, reason="unsupported", message="RAW", quarantine=P("x.CR3"))
    queue.offer(P("x.JPG"), FP)
    jpeg = queue.claim()
    assert jpeg is not None and jpeg.output == P("x.png")


def test_state_changes_only_apply_to_the_state_they_expect(queue: JobStore) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.finish(job, content_hash="h", fingerprint=FP, publish=lambda: None)
    queue.mark_retry(job, reason="io_error", message="late", delay=0, counts=True)  # after done: ignored
    queue.mark_failed(job, reason="model_error", message="late", quarantine=None)
    assert queue.counts()["done"] == 1
    assert queue.requeue(job) is False  # only failed jobs are sent back


def test_a_retried_job_gets_its_output_name_back_if_still_free(queue: JobStore) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None
    queue.mark_failed(job, reason="model_error", message="x", quarantine=P("a.jpg"))
    failed = queue.get(P("a.jpg"))
    assert failed is not None and queue.requeue(failed) is True
    again = queue.claim()
    assert again is not None and again.output == P("a.png") and again.quarantine == P("a.jpg")


# --- fencing ---------------------------------------------------------------------------------------
def test_each_claim_of_a_job_gets_a_larger_token_than_the_last(queue: JobStore) -> None:
    queue.offer(P("a.jpg"), FP)
    tokens = []
    for _ in range(3):
        job = queue.claim()
        assert job is not None
        tokens.append(job.token)
        queue.release(job)
    assert 0 < tokens[0] < tokens[1] < tokens[2]


def test_a_claim_that_was_taken_over_changes_nothing_and_publishes_nothing(queue: JobStore) -> None:
    queue.offer(P("a.jpg"), FP)
    stale = queue.claim()
    assert stale is not None
    queue.mark_stage(stale, "inference")
    queue.recover(crashed=False)  # its process was presumed dead; the job went back
    current = queue.claim()
    assert current is not None and current.token > stale.token
    published: list[str] = []
    assert not queue.heartbeat(stale)
    assert not queue.finish(stale, content_hash="old", fingerprint=FP, publish=lambda: published.append("stale"))
    assert not queue.mark_failed(stale, reason="model_error", message="late", quarantine=None)
    assert not queue.mark_retry(stale, reason="io_error", message="late", delay=0, counts=True)
    queue.release(stale)
    queue.mark_stage(stale, None)
    assert queue.heartbeat(current)
    assert queue.finish(current, content_hash="new", fingerprint=FP, publish=lambda: published.append("current"))
    done = queue.get(P("a.jpg"))
    assert published == ["current"] and done is not None and (done.state, done.content_hash) == ("done", "new")


def test_a_publish_that_fails_leaves_the_job_running_for_a_retry(queue: JobStore) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None

    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        queue.finish(job, content_hash="h", fingerprint=FP, publish=disk_full)
    still = queue.get(P("a.jpg"))
    assert still is not None and still.state == "running"
    assert queue.mark_retry(job, reason="disk_full", message="full", delay=0, counts=False)


# --- Names that recipes derive from the claimed one (routing.py) -----------------------------------
def _mask_for_shop(
    source: PurePosixPath, claimed: PurePosixPath, chosen: tuple[str, ...] | None = None
) -> list[PurePosixPath]:
    """What a route `shop/** -> [default, mask]` derives: the matte beside the cutout (and for any
    file a person chose the `mask` recipe for)."""
    if source.parts[0] != "shop" and chosen != ("mask",):
        return []
    return [claimed.with_name(claimed.name.removesuffix(".png") + "-mask.png")]


def test_a_derived_name_is_claimed_so_a_file_of_that_name_gets_another_output(queue: JobStore) -> None:
    queue.name_outputs(_mask_for_shop)
    queue.offer(P("shop/x.jpg"), FP)  # claims shop/x.png and shop/x-mask.png
    queue.offer(P("shop/x-mask.jpg"), FP)  # would be shop/x-mask.png: taken, so the next candidate
    outputs = {job.source.as_posix(): job.output.as_posix() for job in queue.jobs(state="pending")}
    assert outputs == {"shop/x.jpg": "shop/x.png", "shop/x-mask.jpg": "shop/x-mask.jpg.png"}


def test_a_file_whose_derived_name_is_held_moves_to_its_next_candidate(queue: JobStore) -> None:
    queue.name_outputs(_mask_for_shop)
    queue.offer(P("shop/x-mask.png"), FP)  # holds shop/x-mask.png (and shop/x-mask-mask.png)
    queue.offer(P("shop/x.jpg"), FP)  # x.png would derive x-mask.png: held, so x.jpg.png
    job = queue.get(P("shop/x.jpg"))
    assert job is not None and job.output == P("shop/x.jpg.png")


def test_a_failed_job_releases_its_derived_names(queue: JobStore) -> None:
    queue.name_outputs(_mask_for_shop)
    queue.offer(P("shop/x.jpg"), FP)
    job = queue.claim()
    assert job is not None and queue.mark_failed(job, reason="no_foreground", message="m", quarantine=None)
    queue.offer(P("shop/x-mask.jpg"), FP)
    again = queue.get(P("shop/x-mask.jpg"))
    assert again is not None and again.output == P("shop/x-mask.png")


def test_redo_sends_a_done_job_back_once_and_not_a_busy_one(queue: JobStore) -> None:
    queue.offer(P("a.jpg"), FP)
    job = queue.claim()
    assert job is not None and queue.finish(job, content_hash="h", fingerprint=FP, publish=lambda: None)
    done = queue.get(P("a.jpg"))
    assert done is not None and queue.redo(done)
    assert not queue.redo(done)  # pending now: nothing to redo
    again = queue.claim()
    assert again is not None and again.source == P("a.jpg") and again.output == P("a.png") and again.attempts == 1


def test_a_claim_takes_the_names_the_claimers_recipes_derive_whatever_the_offer_claimed(queue: JobStore) -> None:
    queue.offer(P("shop/x.jpg"), FP)  # offered before the mask recipe existed: holds shop/x.png alone
    queue.name_outputs(_mask_for_shop)  # the daemon that claims it writes the mask too
    job = queue.claim()
    assert job is not None and job.output == P("shop/x.png")
    queue.offer(P("shop/x-mask.jpg"), FP)
    other = queue.get(P("shop/x-mask.jpg"))
    assert other is not None and other.output == P("shop/x-mask.jpg.png")  # shop/x-mask.png is x.jpg's mask


def test_a_claim_moves_a_job_whose_derived_name_another_took_meanwhile(queue: JobStore) -> None:
    queue.offer(P("shop/x.jpg"), FP)  # claimed no mask name: offered under the old config
    queue.name_outputs(_mask_for_shop)
    queue.offer(P("shop/x-mask.png"), FP)  # takes shop/x-mask.png under the new one
    first = queue.claim()
    assert first is not None and first.source == P("shop/x.jpg") and first.output == P("shop/x.jpg.png")


# --- a store that is away: the error tree, never a foreign error --------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def impatient(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[tuple[JobStore, Any]]:
    """A store that waits 0.3 s for another session's lock, and that other session, holding
    the jobs' table (SQLite: the whole database) until the test lets go."""
    store: JobStore
    if request.param == "sqlite":
        store = JobQueue(tmp_path / "state" / "queue.sqlite3", clock=clock, busy_seconds=0.3)
        other = sqlite3.connect(tmp_path / "state" / "queue.sqlite3", isolation_level=None)
        lock, release = "BEGIN EXCLUSIVE", "ROLLBACK"
    else:
        import psycopg

        from daemon.store.postgres import PostgresStore

        url = request.getfixturevalue("postgres_url")
        store = PostgresStore(url, clock=clock, worker="test-worker", busy_seconds=0.3)
        other = psycopg.connect(url, autocommit=True)
        lock, release = "BEGIN; LOCK TABLE cutout_jobs IN ACCESS EXCLUSIVE MODE", "ROLLBACK"
    yield store, (other, lock, release)
    other.close()
    store.close()


def test_a_store_locked_past_its_busy_time_is_away_and_works_again_once_released(
    impatient: tuple[JobStore, Any],
) -> None:
    """A lock held too long is QueueError (the daemon waits it out, charging no file), never
    the database library's own error (which the worker would count against the file)."""
    store, (other, lock, release) = impatient
    store.offer(P("a.jpg"), FP)
    job = store.claim()
    assert job is not None
    for statement in lock.split("; "):
        other.execute(statement)
    with pytest.raises(QueueError) as caught:
        store.offer(P("b.jpg"), FP)
    assert not isinstance(caught.value, QueueDamaged)
    with pytest.raises(QueueError):
        store.finish(job, content_hash="h", fingerprint=FP, publish=lambda: None)
    other.execute(release)
    assert store.offer(P("b.jpg"), FP) == "queued"
    assert store.finish(job, content_hash="h", fingerprint=FP, publish=lambda: None)


def test_a_full_disk_under_the_sqlite_store_is_away_and_works_again_once_space_returns(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The kernel's own ENOSPC, on a small tmpfs (needs root, as CI runs): "database or disk is
    full" from sqlite3 becomes QueueError, and nothing of the store is lost."""
    with small_tmpfs(tmp_path / "state", size="256k") as mount:
        store = JobQueue(mount / "queue.sqlite3", clock=clock)
        try:
            store.offer(P("first.jpg"), FP)
            filler = fill_disk(mount)
            with pytest.raises(QueueError) as caught:
                for index in range(2000):  # the WAL's free pages first, then the disk
                    store.offer(P(f"many/{index:04d}-{'x' * 200}.jpg"), FP)
            assert not isinstance(caught.value, QueueDamaged) and "full" in str(caught.value)
            filler.unlink()
            assert store.offer(P("after.jpg"), FP) == "queued" and store.get(P("first.jpg")) is not None
        finally:
            store.close()
