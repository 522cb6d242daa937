"""The daemon's measurements: the worker's job records, published into the session record."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from daemon.companions.telemetry import BUCKETS, Histogram, Telemetry, TelemetryPublisher, read_telemetry
from daemon.logs import configure_logging
from daemon.settings import LoggingSettings
from daemon.store.session import SESSION_FILE, SessionRecord, read_session
from daemon.testing import FakeClock
from daemon.work.record import JobRecord


def _record(path: str, outcome: str = "done", **fields: object) -> JobRecord:
    values: dict[str, object] = {"attempt": 1, "timings": {}, "queue_wait": 0.0, "total": 0.0, **fields}
    return JobRecord(path=path, outcome=outcome, **values)  # type: ignore[arg-type]


def test_the_figures_come_from_the_workers_records_whatever_the_log_level() -> None:
    telemetry = Telemetry(model="m", device="cpu")
    telemetry.observe(_record("a.jpg", timings={"inference": 0.4, "save": 0.01}, queue_wait=0.1, total=0.5))
    telemetry.observe(_record("b.jpg", "quarantined", reason="undecodable"))
    snap = telemetry.snapshot()
    assert snap.outcomes == {"done": 1, "quarantined": 1} and snap.stages["inference"].count == 1
    assert snap.timing("a.jpg") is not None and snap.timing("b.jpg").reason == "undecodable"  # type: ignore[union-attr]
    assert snap.last_success is not None and snap.job_seconds.total == 0.5


def test_renaming_a_log_key_cannot_change_a_metric(tmp_path: Path) -> None:
    """The worker hands one record to the log and to the telemetry: a log processor that renames
    or drops every field (or a log level that hides the event) leaves the figures as they were."""
    from pathlib import PurePosixPath

    import numpy as np

    from daemon.folders.outputs import Folders
    from daemon.pipeline.constants import PipelineParams
    from daemon.settings import QueueSettings
    from daemon.store.jobs import Fingerprint
    from daemon.store.sqlite import JobQueue
    from daemon.testing import BrightModel
    from daemon.work.worker import Worker
    from tests.conftest import subject_image, write_image

    def rename_everything(logger: object, method: str, event: dict[str, object]) -> dict[str, object]:
        return {f"renamed_{key}": value for key, value in event.items() if key != "event"} | {"event": event["event"]}

    stream = io.StringIO()
    configure_logging(LoggingSettings(level="error", format="json"), stream=stream)
    structlog.configure(processors=[rename_everything, *structlog.get_config()["processors"]])
    folders = Folders(input=tmp_path / "in", output=tmp_path / "out", quarantine=tmp_path / "q",
                      archive=tmp_path / "a", state=tmp_path / "state")
    for folder in (folders.input, folders.output, folders.quarantine, folders.state):
        folder.mkdir()
    queue = JobQueue(folders.state / "queue.sqlite3")
    for name, rgb in (("good.jpg", subject_image(60, 80, (20, 15, 60, 45))), ("dark.png", np.full((60, 80, 3), 20, np.uint8))):
        write_image(folders.input / name, rgb)
        queue.offer(PurePosixPath(name), Fingerprint.of(folders.input / name))
    telemetry = Telemetry(model="m", device="cpu")
    worker = Worker(model=BrightModel(), params=PipelineParams(target_size=64), folders=folders, queue=queue,
                    queue_settings=QueueSettings(), policy="keep", in_flight=2, cpu_threads=1,
                    on_record=telemetry.observe)
    try:
        for _ in range(200):
            worker.run_once(idle_wait=0.02)
            if queue.counts()["done"] + queue.counts()["failed"] == 2:
                break
    finally:
        worker.close()
        queue.close()
        structlog.reset_defaults()
    snap = telemetry.snapshot()
    assert snap.outcomes == {"done": 1, "quarantined": 1} and snap.timing("dark.png").reason == "no_foreground"  # type: ignore[union-attr]
    assert snap.stages["inference"].count == 1 and stream.getvalue() == ""  # the log said nothing at level error
    assert snap.doubt.count == 1  # the done job's doubt, from the record too


def test_histograms_are_prometheus_buckets() -> None:
    histogram = Histogram()
    for seconds in (0.005, 0.3, 0.3, 1000.0):
        histogram.observe(seconds)
    cumulative = dict(histogram.cumulative())
    assert cumulative["0.01"] == 1 and cumulative["0.5"] == 3 and cumulative[str(BUCKETS[-1])] == 3
    assert cumulative["+Inf"] == histogram.count == 4


def test_the_publisher_writes_when_something_changed_or_a_heartbeat_is_due(tmp_path: Path) -> None:
    clock, monotonic = FakeClock(), FakeClock()
    telemetry = Telemetry(model="hf:x@abc", device="mps", clock=clock)
    session = SessionRecord(tmp_path)
    session.begin(now=clock())
    publisher = TelemetryPublisher(telemetry, session=session, monotonic=monotonic)
    publisher.tick()
    first = (tmp_path / SESSION_FILE).stat().st_mtime_ns
    monotonic.advance(2)
    publisher.tick()
    assert (tmp_path / SESSION_FILE).stat().st_mtime_ns == first  # nothing new
    telemetry.observe(_record("a.jpg", timings={"load": 0.1}, total=1.0))
    clock.advance(5)
    publisher.tick()
    snap = read_telemetry(tmp_path)
    assert snap is not None and snap.model == "hf:x@abc" and snap.outcomes == {"done": 1} and snap.updated == clock()
    publisher.stopped()
    stopped, record = read_telemetry(tmp_path), read_session(tmp_path)
    assert stopped is not None and stopped.stopped_at == clock()
    assert record is not None and record.stopped_at == clock()  # the session's clean stop, in the same write
    (tmp_path / SESSION_FILE).write_text("{broken")
    assert read_telemetry(tmp_path) is None


def test_the_doubt_histogram_survives_the_session_record_and_an_older_record_has_an_empty_one() -> None:
    from daemon.companions.telemetry import DOUBT_BUCKETS, Snapshot

    telemetry = Telemetry(model="m", device="cpu")
    telemetry.observe(_record("a.jpg", doubt=0.42))
    data = telemetry.snapshot().to_dict()
    again = Snapshot.from_dict(data)
    assert again.doubt.bounds == DOUBT_BUCKETS and again.doubt.count == 1 and again.doubt.total == pytest.approx(0.42)
    older = {key: value for key, value in data.items() if key != "doubt"}  # written before the score existed
    assert Snapshot.from_dict(older).doubt.count == 0
