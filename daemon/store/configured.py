"""Which job store a config uses, opened: the one place that knows both backends.

`queue.store: sqlite` is the queue file in the state folder; `postgresql` the shared
database at `queue.url` (daemon.store.postgres, imported only then: a single machine does not
need psycopg installed).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from daemon.errors import ConfigError
from daemon.settings import QueueSettings
from daemon.store.jobs import JobStore
from daemon.store.statedir import QUEUE_FILE, open_existing_queue, open_job_queue


def worker_id(state: Path) -> str:
    """This daemon in a fleet, the same across its restarts: the machine and its state folder."""
    return f"{socket.gethostname()}:{state}"


def open_store(
    queue: QueueSettings, *, state: Path, clock: Callable[[], float] = time.time, existing: bool = False
) -> JobStore:
    """The configured store. `existing`: for commands that only read or steer it (status, retry),
    a missing or damaged SQLite queue is refused instead of created."""
    if queue.store == "postgresql":
        assert queue.url is not None  # settings.validate
        with _psycopg_needed():
            from daemon.store.postgres import PostgresStore
        return PostgresStore(queue.url, worker=worker_id(state), lease_seconds=queue.lease_seconds)
    path = state / QUEUE_FILE
    return open_existing_queue(path, clock=clock) if existing else open_job_queue(path, clock=clock)


def init_store(queue: QueueSettings, *, state: Path, change_model: bool = False) -> str:
    """`cutout queue init`: create or upgrade the store's tables; what was done, in words.
    `change_model`: a fleet forgets its model, so the next daemon to start sets it."""
    if queue.store == "postgresql":
        assert queue.url is not None
        with _psycopg_needed():
            from daemon.store.postgres import migrate, redacted
        done = migrate(queue.url, forget_model=change_model)
        said = f"{redacted(queue.url)}: schema version {done.after}"
        if done.recreated:
            said += f" (repaired: {', '.join(done.recreated)} made again; the jobs they held are forgotten)"
        else:
            said += " (already current)" if done.before == done.after else f" (was {done.before})"
        if done.forgot_model:
            said += f"; the fleet's model ({done.forgot_model}) is forgotten: the next daemon to start sets it"
        return said
    open_job_queue(state / QUEUE_FILE).close()
    return f"{state / QUEUE_FILE}: ready"


@contextmanager
def _psycopg_needed() -> Iterator[None]:
    try:
        yield
    except ImportError as exc:
        raise ConfigError(f"queue.store: postgresql needs psycopg: pip install -e '.[fleet]' ({exc})") from exc
