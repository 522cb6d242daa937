"""One job's end, as the worker states it: the one typed record the log and the telemetry both read.

The worker builds a `JobRecord` once per job and hands the same object to the `job` log event and
to whoever measures (daemon.companions.telemetry): a figure never depends on how the log spells
a field.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """One job's end as the worker states it: the `job` log event's fields and the telemetry's input."""

    path: str
    outcome: str
    attempt: int
    timings: dict[str, float]
    queue_wait: float
    total: float
    reason: str | None = None
    doubt: float | None = None
    """How likely the cut-out is wrong, 0..1 (done jobs only; daemon.pipeline.doubt)."""
    doubt_parts: dict[str, float] | None = None
