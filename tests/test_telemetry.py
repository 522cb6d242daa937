"""The daemon's measurements: read from its `job` log events, published to telemetry.json."""

from __future__ import annotations

import io
import json
from pathlib import Path

import structlog

from daemon.logs import configure_logging
from daemon.settings import LoggingSettings
from daemon.telemetry import BUCKETS, TELEMETRY_FILE, Histogram, JobTap, Telemetry, TelemetryPublisher, read_telemetry
from daemon.testing import FakeClock


def test_the_tap_reads_job_events_even_when_the_log_level_hides_them() -> None:
    stream = io.StringIO()
    configure_logging(LoggingSettings(level="warning", format="json"), stream=stream)
    telemetry = Telemetry(model="m", device="cpu")
    tap = JobTap(telemetry)
    tap.install()
    try:
        log = structlog.get_logger("cutout.worker")
        log.info("job", path="a.jpg", outcome="done", timings={"inference": 0.4, "save": 0.01}, queue_wait=0.1, total=0.5)
        log.warning("job", path="b.jpg", outcome="quarantined", reason="undecodable", timings={}, queue_wait=0, total=0)
        log.info("file_queued", path="c.jpg")
    finally:
        tap.remove()
    assert tap not in structlog.get_config()["processors"]
    snap = telemetry.snapshot()
    assert snap.outcomes == {"done": 1, "quarantined": 1} and snap.stages["inference"].count == 1
    assert snap.timing("a.jpg") is not None and snap.timing("b.jpg").reason == "undecodable"  # type: ignore[union-attr]
    assert snap.last_success is not None and snap.job_seconds.total == 0.5
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["path"] for line in lines] == ["b.jpg"]  # the log itself is unchanged: warning and up


def test_a_malformed_job_event_is_skipped_not_raised() -> None:
    telemetry = Telemetry(model="m", device="cpu")
    telemetry.observe({"event": "job", "outcome": "done"})  # no path
    telemetry.observe({"event": "job", "path": "x", "outcome": "done", "timings": "nonsense"})
    assert telemetry.snapshot().outcomes == {}


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
    publisher = TelemetryPublisher(telemetry, state=tmp_path, monotonic=monotonic)
    publisher.tick()
    first = (tmp_path / TELEMETRY_FILE).stat().st_mtime_ns
    monotonic.advance(2)
    publisher.tick()
    assert (tmp_path / TELEMETRY_FILE).stat().st_mtime_ns == first  # nothing new
    telemetry.observe({"event": "job", "path": "a.jpg", "outcome": "done", "timings": {"load": 0.1}, "total": 1})
    clock.advance(5)
    publisher.tick()
    snap = read_telemetry(tmp_path)
    assert snap is not None and snap.model == "hf:x@abc" and snap.outcomes == {"done": 1} and snap.updated == clock()
    publisher.stopped()
    stopped = read_telemetry(tmp_path)
    assert stopped is not None and stopped.stopped_at == clock()
    (tmp_path / TELEMETRY_FILE).write_text("{broken")
    assert read_telemetry(tmp_path) is None
