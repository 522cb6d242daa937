"""The dashboard on the real server (uvicorn on a thread, as the daemon runs it), over real sockets.

What the test client cannot show: `..` sent as it is (an HTTP client would resolve it first),
the daemon starting and stopping its companions, a port that is taken.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.request
from pathlib import Path

import pytest

from daemon.companions.alongside import alongside
from daemon.companions.dashboard.auth import TOKEN_COOKIE
from daemon.companions.telemetry import read_telemetry
from daemon.errors import ConfigError
from daemon.folders.outputs import Folders
from daemon.settings import Settings, load_settings
from daemon.store.session import SessionRecord, read_session
from daemon.store.sqlite import JobQueue
from daemon.testing import wait_until
from tests.test_dashboard import _done

TOKEN = "a-long-enough-test-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def studio(tmp_path: Path) -> tuple[Folders, Settings]:
    folders = Folders(input=tmp_path / "in", output=tmp_path / "out", quarantine=tmp_path / "q",
                      archive=tmp_path / "archive", state=tmp_path / "state")
    for folder in (folders.input, folders.output, folders.quarantine, folders.state):
        folder.mkdir()
    queue = JobQueue(folders.state / "queue.sqlite3")
    _done(queue, folders, "a.jpg")
    queue.close()
    (tmp_path / "secret.txt").write_text("not for the network")
    settings = load_settings(overrides={
        "folders.input": folders.input, "folders.output": folders.output, "folders.quarantine": folders.quarantine,
        "folders.state": folders.state, "dashboard.enabled": True, "dashboard.port": free_port(),
    })
    return folders, settings


def _get(port: int, path: str, *, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """A request with the path exactly as given (http.client does not resolve `..`)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def test_the_daemon_serves_the_dashboard_beside_its_work_and_stops_it(studio: tuple[Folders, Settings]) -> None:
    folders, settings = studio
    port = settings.dashboard.port
    with alongside(settings=settings, folders=folders, session=SessionRecord(folders.state), model="tiny", device="cpu"):
        wait_until(lambda: read_telemetry(folders.state) is not None, what="the first telemetry")
        status, page, headers = _get(port, "/")
        assert status == 200 and b'data-source="a.jpg"' in page and "content-security-policy" in headers
        assert _get(port, "/thumb/output/a.png?px=s")[0] == 200
        for raw in ("/file/output/../secret.txt", "/file/output/../../secret.txt", "/file/output/./../secret.txt",
                    "/file/input/%2e%2e/secret.txt", "/file/output/..%2f..%2fsecret.txt"):
            status, body, _ = _get(port, raw)
            assert status == 404 and b"not for the network" not in body, raw
        assert _get(port, "/", headers={"Host": "attacker.example"})[0] == 400
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'cutout_jobs_total{outcome="done",reason=""} 1.0' in metrics
    with pytest.raises(OSError):  # stopped with the daemon
        _get(port, "/")
    stopped, record = read_telemetry(folders.state), read_session(folders.state)
    assert stopped is not None and stopped.stopped_at is not None
    assert record is not None and record.stopped_at is not None  # a clean stop


def test_a_token_protected_server_sets_its_cookie_and_drops_the_token_from_the_url(
    studio: tuple[Folders, Settings]
) -> None:
    folders, settings = studio
    from dataclasses import replace

    settings = replace(settings, dashboard=replace(settings.dashboard, token=TOKEN))
    port = settings.dashboard.port
    with alongside(settings=settings, folders=folders, session=SessionRecord(folders.state), model="tiny", device="cpu"):
        assert _get(port, "/")[0] == 401
        status, _, headers = _get(port, f"/?token={TOKEN}")
        assert status == 303 and headers["location"] == "/" and TOKEN_COOKIE in headers["set-cookie"]
        assert _get(port, "/api/status", headers={"Cookie": f"{TOKEN_COOKIE}={TOKEN}"})[0] == 200
        body = _get(port, "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})[1]
        assert json.loads(body)["counts"]["done"] == 1


def test_a_taken_port_leaves_the_daemon_running_without_its_dashboard(studio: tuple[Folders, Settings]) -> None:
    from structlog.testing import capture_logs

    folders, settings = studio
    with socket.socket() as taken, capture_logs() as logs:
        taken.bind(("127.0.0.1", settings.dashboard.port))
        taken.listen()
        with alongside(settings=settings, folders=folders, session=SessionRecord(folders.state), model="tiny", device="cpu"):
            wait_until(lambda: read_telemetry(folders.state) is not None, what="the telemetry all the same")
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["dashboard_not_started"]
    from daemon.companions.dashboard.server import listen

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.dashboard.port))
        taken.listen()
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            listen("127.0.0.1", settings.dashboard.port)


@pytest.mark.slow  # a race, run for four seconds
def test_a_folder_swapped_for_a_link_during_requests_never_serves_a_file_outside_the_roots(
    studio: tuple[Folders, Settings], tmp_path: Path
) -> None:
    """Someone who can write in the hot folder swaps a folder for a link to a private folder
    as fast as they can, between the dashboard's check and its open. What comes back is the
    hot folder's file or a 404, never the private one."""
    import os
    import threading
    import time

    folders, settings = studio
    shoot, aside = folders.input / "shoot", folders.input / "shoot-aside"
    shoot.mkdir()
    (shoot / "a.jpg").write_bytes(b"the hot folder's photo")
    private = tmp_path / "private"
    private.mkdir()
    (private / "a.jpg").write_bytes(b"-----BEGIN PRIVATE KEY-----")
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            os.rename(shoot, aside)
            os.symlink(private, shoot)
            time.sleep(0)
            os.unlink(shoot)
            os.rename(aside, shoot)

    answers: dict[int, int] = {}
    with alongside(settings=settings, folders=folders, session=SessionRecord(folders.state), model="tiny", device="cpu"):
        wait_until(lambda: _get(settings.dashboard.port, "/api/status")[0] == 200, what="the dashboard")
        swapper = threading.Thread(target=swap, daemon=True)
        swapper.start()
        try:
            deadline = time.monotonic() + 4.0
            for count in range(2000):  # bounded in count and in time
                if time.monotonic() > deadline:
                    break
                for url in ("/file/input/shoot/a.jpg", "/thumb/input/shoot/a.jpg"):
                    status, body, _ = _get(settings.dashboard.port, url)
                    assert b"PRIVATE KEY" not in body, (count, url)
                    answers[status] = answers.get(status, 0) + 1
        finally:
            stop.set()
            swapper.join(5)
    assert answers.get(200, 0) > 0 and set(answers) <= {200, 404}, answers
