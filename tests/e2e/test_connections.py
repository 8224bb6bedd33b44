"""The daemon's HTTP server as a real process under hostile clients on loopback: idle sockets,
slowloris heads and bodies cut off, with a low open-files limit."""

from __future__ import annotations

import resource
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from harness import DaemonProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.e2e

VS = "vs_conn"
FAST_POLL = {"interval_seconds": 0.2, "min_interval_seconds": 0.1}
#: The open-files limit the daemon runs with: fewer than the sockets thrown at it.
NOFILE = 256
IDLE = 300
SLOWLORIS = 500


def _probe_timeout() -> float:
    """The liveness probe's timeout in the Kubernetes manifest: /healthz must answer within it."""
    manifest = Path(__file__).parents[2] / "deploy" / "kubernetes" / "standalone"
    for doc in yaml.safe_load_all((manifest / "deployment.yaml").read_text()):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if "livenessProbe" in container:
                return float(container["livenessProbe"]["timeoutSeconds"])
    raise AssertionError("no liveness probe in the standalone deployment")


PROBE_TIMEOUT = _probe_timeout()

SimFactory = Callable[..., SimulatorProcess]
DaemonFactory = Callable[..., DaemonProcess]


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Client sockets a test opens; all are closed after it."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setblocking(False)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed this connection (EOF or reset, perhaps after a 503)."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_idle_and_slowloris_sockets_do_not_starve_healthz(
    simulator_factory: SimFactory, daemon_factory: DaemonFactory, sockets: list[socket.socket]
) -> None:
    """With 256 open files, 300 idle sockets and 500 half-sent request heads leave ``/healthz``
    and ``/metrics`` answering within the probe's timeout and polling going on; the server closes
    every one of those sockets, and its log holds no traceback."""
    sim = simulator_factory("--scenario", "empty")
    sim.control(
        "POST",
        "batches",
        {
            "vector_store_id": VS,
            "batch_id": "vsfb_under_attack",
            "total_files": 10,
            "duration_seconds": 2,
        },
    )
    daemon = daemon_factory(
        {"api": {"base_url": sim.url}, "poll": FAST_POLL},
        env={"OPENAI_API_KEY": "sk-e2e-connections"},
        preexec_fn=_low_nofile,
    )
    for _ in range(IDLE):
        sockets.append(_connect(daemon.url))
    for index in range(SLOWLORIS):
        sock = _connect(daemon.url)
        sock.send(f"GET /healthz?{index} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".encode())
        sockets.append(sock)
    attack = len(sockets)

    # Each answer within the probe's timeout, while the sockets are open; on a new connection
    # each, as a probe makes them (a pooled one may have been let go to make room).
    for path in ("/healthz", "/metrics", "/healthz", "/readyz", "/healthz"):
        response = httpx.get(f"{daemon.url}{path}", timeout=PROBE_TIMEOUT)
        assert response.status_code == 200, (path, response.text)
    created = httpx.post(
        f"{daemon.url}/v1/watches",
        json={"vector_store_id": VS, "batch_id": "vsfb_under_attack"},
        timeout=PROBE_TIMEOUT,
    )
    assert created.status_code == 201
    daemon.wait_until(
        lambda: daemon.events("batch_completed"), timeout=60, what="the watch to finish"
    )

    # The server lets go of every attacking socket (evicted, or its head timed out).
    wait_for(
        lambda: all(_closed_by_server(s) for s in sockets[:attack]),
        timeout=60,
        what="the server to close every idle and slowloris socket",
    )
    assert daemon.proc.poll() is None
    text = daemon.log_path.read_text(errors="replace")
    assert "Traceback" not in text
    for entry in daemon.events("accept_failed"):
        assert "suppressed" in entry


def test_a_body_cut_off_is_one_short_log_line(
    simulator_factory: SimFactory, daemon_factory: DaemonFactory, sockets: list[socket.socket]
) -> None:
    """Clients that hang up in the middle of a POST body leave one short log line each and no
    traceback."""
    sim = simulator_factory("--scenario", "empty")
    daemon = daemon_factory({"api": {"base_url": sim.url}, "poll": FAST_POLL})
    head = (
        b"POST /v1/watches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 3000\r\n\r\n"
    )
    aborted = 20
    for _ in range(aborted):
        sock = _connect(daemon.url)
        sock.send(head + b'{"vector_store_id": "vs_')
        sock.close()
    daemon.wait_until(
        lambda: len(daemon.events("request_aborted")) == aborted, what="one line per abort"
    )
    assert daemon.request("GET", "/healthz").status_code == 200
    text = daemon.log_path.read_text(errors="replace")
    assert "Traceback" not in text
    lines: list[dict[str, Any]] = daemon.events("request_aborted")
    assert all(len(str(line)) < 300 for line in lines)


def test_a_body_shorter_than_declared_is_answered_408(
    simulator_factory: SimFactory, daemon_factory: DaemonFactory
) -> None:
    """A POST that declares more body than it sends is answered 408 once the body deadline has
    passed, and the connection is closed; nothing is registered."""
    sim = simulator_factory("--scenario", "empty")
    daemon = daemon_factory({"api": {"base_url": sim.url}, "poll": FAST_POLL})
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(
            b"POST /v1/watches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"vector_store_id": '
        )
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes (the timeout bounds it)
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert daemon.request("GET", "/v1/watches").json() == {"watches": []}
