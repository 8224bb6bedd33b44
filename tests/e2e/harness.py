"""Real processes for end-to-end tests: the simulator and the daemon, each its own process.

    sim = start_simulator(["--scenario", "demo"])
    daemon = start_daemon(tmp_path, {"api": {"base_url": sim.url}, "watch": [...]})
    daemon.wait_until(lambda: daemon.metric(...) == 1.0)

Both are stopped by :meth:`stop` (the fixtures in ``conftest.py`` do it for you).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")

PYTHON = sys.executable
START_TIMEOUT = 20.0


_client: httpx.Client | None = None


def http() -> httpx.Client:
    """The HTTP client every helper shares: making a new one costs about 80 ms (its TLS
    context), which a test that asks the daemon a thousand things would pay each time."""
    global _client
    if _client is None:
        _client = httpx.Client(timeout=10)
        atexit.register(_client.close)
    return _client


def wait_for(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or predicate}: {last_error}"
    )


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCH_WATCHER_", "OPENAI_"))}
    env.update(extra or {})
    return env


@dataclass
class SimulatorProcess:
    """``python -m watcher.simulator`` in its own process; ``url`` ends in ``/v1``."""

    proc: subprocess.Popen[str]
    url: str

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = http().request(method, f"{self.root}/_sim/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None

    def truth(self) -> dict[str, dict[str, Any]]:
        """Every batch's true state, by batch id."""
        return {b["id"]: b for b in self.control("GET", "batches")["data"]}

    def stats(self) -> dict[str, Any]:
        return self.control("GET", "stats")  # type: ignore[no-any-return]

    def inject(self, fault: Mapping[str, Any], batch_id: str | None = None) -> Any:
        body = dict(fault) if batch_id is None else {**fault, "batch_id": batch_id}
        return self.control("POST", "faults", body)

    def set_api_key(self, key: str | None) -> None:
        self.control("POST", "api-key", {"api_key": key})

    def stop(self) -> None:
        _stop(self.proc)


def start_simulator(
    args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> SimulatorProcess:
    proc = subprocess.Popen(
        [PYTHON, "-m", "watcher.simulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(env),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening "):
        _stop(proc)
        raise RuntimeError(
            f"the simulator did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    return SimulatorProcess(proc, line.removeprefix("listening "))


@dataclass
class DaemonProcess:
    """``batch-watcher run`` in its own process, logging JSON lines to ``log_path``."""

    proc: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    url: str = ""
    token: str | None = None
    _offset: int = field(default=0, repr=False)

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far (lines that are not JSON are skipped)."""
        entries = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name]

    def request(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        timeout = kwargs.pop("timeout", 10)
        return http().request(
            method, f"{self.url}{path}", headers=headers, timeout=timeout, **kwargs
        )

    def metrics_text(self) -> str:
        response = self.request("GET", "/metrics")
        response.raise_for_status()
        return response.text

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of ``/metrics`` as (name, labels, value)."""
        return [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(self.metrics_text())
            for s in family.samples
        ]

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of the one sample with this name whose labels include ``labels``."""
        for sample_name, sample_labels, value in self.samples():
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return None

    def wait_until(self, predicate: Callable[[], T], timeout: float = 60.0, what: str = "") -> T:
        def check() -> T:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the daemon exited with {self.proc.returncode}: {self.tail()}"
                )
            return predicate()

        return wait_for(check, timeout=timeout, what=what)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        _stop(self.proc)


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(dict(config)), encoding="utf-8")
    return path


def start_daemon(
    workdir: Path,
    config: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    wait_ready: bool = True,
    name: str = "daemon",
    preexec_fn: Callable[[], object] | None = None,
) -> DaemonProcess:
    """Start ``batch-watcher run`` with ``config`` (a dict written as TOML). Unless the config
    says otherwise, it listens on a free loopback port and keeps its state in ``workdir``.
    ``preexec_fn`` runs in the child before it starts (to lower its resource limits, say)."""
    config = dict(config)
    config.setdefault("server", {})
    config["server"] = {"listen": "127.0.0.1:0", **config["server"]}
    config.setdefault("state", {})
    config["state"] = {"path": str(workdir / "state.sqlite3"), **config["state"]}
    config_path = write_config(workdir / f"{name}.toml", config)
    log_path = workdir / f"{name}.log"
    log_file = log_path.open("ab")
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "watcher",
            "run",
            "--config",
            str(config_path),
            "--log-format",
            "json",
            *args,
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=_env(env),
        cwd=workdir,
        preexec_fn=preexec_fn,
    )
    log_file.close()
    daemon = DaemonProcess(
        proc, config_path, log_path, token=(env or {}).get("BATCH_WATCHER_CONTROL_TOKEN")
    )

    def started() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"the daemon exited with {proc.returncode}: {daemon.tail()}")
        for entry in reversed(daemon.logs()):
            # A restart appends to the same log: only this process's line says where it listens.
            if entry.get("event") == "daemon_started" and entry.get("pid") == proc.pid:
                return str(entry["listen"])
        return None

    listen = wait_for(started, timeout=START_TIMEOUT, what="daemon_started")
    daemon.url = f"http://{listen}"
    if wait_ready:
        wait_for(lambda: daemon.request("GET", "/healthz").status_code == 200, what="/healthz")
    return daemon


def run_command(
    args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``batch-watcher ARGS`` to completion."""
    return subprocess.run(
        [PYTHON, "-m", "watcher", *args],
        capture_output=True,
        text=True,
        env=_env(env),
        timeout=timeout,
        check=False,
    )


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@dataclass
class Delivery:
    """One POST the webhook receiver got."""

    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """An HTTP server on loopback, in a thread, that records every POST and answers 200.

    Use as a context manager; ``url`` is where to point ``notify.webhook_url``.
    """

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                declared = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(declared)
                if len(body) < declared:
                    # The sender died mid-request (a kill -9 in a restart test): a real receiver
                    # never sees that as a delivery, and neither does this one.
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.deliveries.append(Delivery(dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def received(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


#: The events that announce a finished batch, one per way a watch can end.
FINISHED_EVENTS = frozenset(
    {"batch_completed", "batch_failed", "batch_cancelled", "batch_timed_out", "batch_not_found"}
)


def announced(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The batch ids of every finished-batch announcement in ``logs``, in order."""
    return [str(e["batch_id"]) for e in logs if e.get("event") in FINISHED_EVENTS]


def iter_json_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)
