"""`GET /metrics`: the Prometheus text format, from the store and the daemon's telemetry.

    cutout_jobs_total{outcome, reason}          jobs that ended: done, review (waiting for a person),
                                                quarantined (by reason), vanished
    cutout_queue_jobs{state}                    the queue by state (pending, running, done, failed)
    cutout_images_in_flight                     jobs claimed and not ended (running)
    cutout_oldest_pending_seconds               how long the oldest pending job has waited
    cutout_stage_seconds{stage}                 per-stage time of finished jobs (histogram)
    cutout_model_forward_seconds                the model's forward pass (histogram)
    cutout_job_seconds                          claim to done, end to end (histogram)
    cutout_queue_wait_seconds                   queued to claimed (histogram)
    cutout_doubt                                the doubt score of finished cut-outs, 0..1 (histogram)
    cutout_last_success_timestamp_seconds       when the latest cutout was finished
    cutout_daemon_up, cutout_store_up           1 or 0
    cutout_daemon_resident_memory_bytes         the daemon's RSS (its peak on macOS)
    cutout_fleet_workers                        daemons sharing a PostgreSQL store
    cutout_info{model, device}                  always 1

The job counters are the store's own counts, so they match `cutout status` exactly; a
`cutout retry` takes a file out of the quarantined count (Prometheus reads the drop as a
counter reset, which `rate()` handles). The histograms are the running daemon's, since
it started. A collector that reads at scrape time keeps nothing in prometheus_client's
global registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from daemon.companions.dashboard.board import Overview
from daemon.companions.telemetry import DOUBT_BUCKETS, Histogram

MODEL_STAGE = "inference"


class CutoutCollector:
    """Yields every metric from one overview, read when Prometheus scrapes."""

    def __init__(self, overview: Callable[[], Overview]) -> None:
        self.overview = overview

    def collect(self) -> Iterator[Metric]:
        o = self.overview()
        yield from self._jobs(o)
        yield from self._gauges(o)
        yield from self._histograms(o)

    def _jobs(self, o: Overview) -> Iterator[Metric]:
        jobs = CounterMetricFamily("cutout_jobs", "Jobs that ended, by outcome and reason (the store's counts).",
                                   labels=["outcome", "reason"])
        jobs.add_metric(["done", ""], o.counts.get("done", 0))
        jobs.add_metric(["review", ""], o.counts.get("review", 0))
        for (reason, held), count in sorted(o.failed_by_reason.items()):
            outcome = "vanished" if reason == "vanished" else "quarantined" if held else "failed"
            jobs.add_metric([outcome, reason], count)
        yield jobs
        queue = GaugeMetricFamily("cutout_queue_jobs", "Jobs in the queue by state.", labels=["state"])
        for state, count in o.counts.items():
            queue.add_metric([state], count)
        yield queue

    def _gauges(self, o: Overview) -> Iterator[Metric]:
        store_up = o.store_problem is None
        yield GaugeMetricFamily("cutout_images_in_flight", "Jobs claimed and not yet ended.",
                                value=o.counts.get("running", 0))
        yield GaugeMetricFamily("cutout_oldest_pending_seconds", "Age of the oldest pending job (0: none).",
                                value=o.oldest_pending_age or 0.0)
        if o.last_success is not None:
            yield GaugeMetricFamily("cutout_last_success_timestamp_seconds", "When the latest cutout was finished.",
                                    value=o.last_success)
        yield GaugeMetricFamily("cutout_daemon_up", "1 while a daemon holds the state folder.",
                                value=1 if o.daemon.running else 0)
        yield GaugeMetricFamily("cutout_store_up", "1 while the job store can be read.", value=1 if store_up else 0)
        if o.daemon.rss_bytes is not None:
            yield GaugeMetricFamily("cutout_daemon_resident_memory_bytes", "The daemon's resident memory.",
                                    value=o.daemon.rss_bytes)
        yield GaugeMetricFamily("cutout_fleet_workers", "Daemons reporting to a shared store.", value=len(o.workers))
        if o.daemon.model or o.daemon.device:
            info = InfoMetricFamily("cutout", "The daemon's model and device.")
            info.add_metric([], {"model": o.daemon.model or "", "device": o.daemon.device or ""})
            yield info

    def _histograms(self, o: Overview) -> Iterator[Metric]:
        snap = o.telemetry if o.daemon.running else None
        stages = HistogramMetricFamily("cutout_stage_seconds", "Seconds per pipeline stage of finished jobs.",
                                       labels=["stage"])
        for name, histogram in sorted((snap.stages if snap else {}).items()):
            stages.add_metric([name], histogram.cumulative(), histogram.total)
        yield stages
        empty = Histogram()
        model = snap.stages.get(MODEL_STAGE, empty) if snap else empty
        yield _histogram("cutout_model_forward_seconds", "The model's forward pass per image.", model)
        yield _histogram("cutout_job_seconds", "Claim to done, per finished job.", snap.job_seconds if snap else empty)
        yield _histogram("cutout_queue_wait_seconds", "Queued to claimed, per finished job.",
                         snap.queue_wait_seconds if snap else empty)
        yield _histogram("cutout_doubt", "How likely each finished cut-out is wrong (0..1).",
                         snap.doubt if snap else Histogram(DOUBT_BUCKETS))


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], histogram.cumulative(), histogram.total)
    return family


def metrics_text(overview: Callable[[], Overview]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CutoutCollector(overview))
    return generate_latest(registry)
