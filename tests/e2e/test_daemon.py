"""``batch-watcher run`` as a real process against the simulator process: metrics against the
simulator's truth, the control API, restarts after ``kill -9``, signals, configuration errors,
the webhook, and ``batch-watcher demo``."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import (
    PYTHON,
    DaemonProcess,
    SimulatorProcess,
    iter_json_lines,
    run_command,
    wait_for,
    write_config,
)
from standardwebhooks import Webhook

pytestmark = pytest.mark.e2e

VS = "vs_e2e"
TOKEN = "e2e-control-token-4711"
FAST_POLL = {"interval_seconds": 0.2, "min_interval_seconds": 0.1}
BATCH = "openai_vector_store_file_batch"

SimFactory = Callable[..., SimulatorProcess]
DaemonFactory = Callable[..., DaemonProcess]


def add_batch(sim: SimulatorProcess, batch_id: str, **spec: Any) -> str:
    """Add one batch to the simulator; it starts now."""
    sim.control("POST", "batches", {"vector_store_id": VS, "batch_id": batch_id, **spec})
    return batch_id


def ids(batch_id: str) -> dict[str, str]:
    return {"vector_store_id": VS, "batch_id": batch_id}


def batch_events(daemon: DaemonProcess, batch_id: str) -> list[dict[str, Any]]:
    """Every ``batch_<status>`` line this daemon logged for the batch."""
    return [
        e
        for e in daemon.logs()
        if str(e.get("event", "")).startswith("batch_")
        and e.get("batch_id") == batch_id
        and "failed_files_by_code" in e
    ]


# -- metrics against the truth -------------------------------------------------------------------


def test_metrics_match_the_simulators_truth(
    simulator_factory: SimFactory, daemon_factory: DaemonFactory
) -> None:
    """Once every batch has ended, each one's files by status, expected files, status and failed
    files by code on /metrics are what the simulator says they are."""
    sim = simulator_factory("--scenario", "empty")
    errors = [
        {"code": "unsupported_file", "message": "The file type is not supported."},
        {"code": "parsing_timeout", "message": "Parsing took too long."},
        {"code": "server_error", "message": "The server had an error."},
    ]
    batches = [
        add_batch(sim, "vsfb_clean", total_files=20, duration_seconds=1.5),
        # 150 failed files: two pages of ?filter=failed.
        add_batch(
            sim,
            "vsfb_codes",
            total_files=300,
            duration_seconds=2.5,
            failed_files=150,
            errors=errors,
        ),
        add_batch(
            sim,
            "vsfb_failed",
            total_files=30,
            duration_seconds=2,
            final_status="failed",
            failed_files=20,
        ),
        add_batch(
            sim,
            "vsfb_cancelled",
            total_files=40,
            duration_seconds=2,
            final_status="cancelled",
            cancelled_files=25,
        ),
        add_batch(
            sim,
            "vsfb_flaky",
            total_files=30,
            duration_seconds=1.5,
            failed_files=2,
            faults=[
                {"kind": "server_error", "endpoint": "retrieve", "status": 503, "times": 2},
                {
                    "kind": "rate_limit",
                    "endpoint": "retrieve",
                    "retry_after_seconds": 1,
                    "times": 1,
                },
                {"kind": "truncated_json", "endpoint": "retrieve", "times": 1},
            ],
        ),
    ]
    daemon = daemon_factory(
        {
            "api": {"base_url": sim.url},
            "poll": FAST_POLL,
            "watch": [ids(b) for b in batches],
        }
    )

    def all_ended() -> bool:
        # The finished timestamp, not the status: the status shows the API's ending as soon as
        # it is seen, while the failed files may still be being listed.
        samples = daemon.samples()
        ended = {s[1]["batch_id"] for s in samples if s[0] == f"{BATCH}_finished_timestamp_seconds"}
        return ended == set(batches)

    daemon.wait_until(all_ended, timeout=30, what="every batch ended")
    truth = sim.truth()
    samples = daemon.samples()

    def value(name: str, **labels: str) -> float | None:
        found = [
            v
            for n, ls, v in samples
            if n == name and all(ls.get(k) == x for k, x in labels.items())
        ]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None

    for batch_id in batches:
        real = truth[batch_id]
        assert real["status"] in ("completed", "failed", "cancelled")
        for status, count in real["file_counts"].items():
            if status == "total":
                assert value(f"{BATCH}_files_expected", **ids(batch_id)) == count
            else:
                assert value(f"{BATCH}_files", status=status, **ids(batch_id)) == count
        for status in ("in_progress", "completed", "failed", "cancelled", "timed_out", "not_found"):
            want = 1.0 if status == real["status"] else 0.0
            assert value(f"{BATCH}_status", status=status, **ids(batch_id)) == want
        by_code = Counter(f["code"] for f in real["failed_files"])
        shown = {
            ls["code"]: v
            for n, ls, v in samples
            if n == f"{BATCH}_failed_files" and ls["batch_id"] == batch_id
        }
        assert shown == by_code, batch_id
    assert sum(Counter(f["code"] for f in truth["vsfb_codes"]["failed_files"]).values()) == 150
    assert value("batch_watcher_watches", state="completed") == 3
    assert value("batch_watcher_watches", state="failed") == 1
    assert value("batch_watcher_watches", state="cancelled") == 1
    assert value("batch_watcher_batches_finished_total", status="completed") == 3
    total_failed = sum(len(truth[b]["failed_files"]) for b in batches)
    assert sum(v for n, _, v in samples if n == "batch_watcher_files_failed_total") == total_failed
    # The flaky batch's faults are counted as what they were.
    assert (value("batch_watcher_api_requests_total", endpoint="retrieve", code="503") or 0) >= 2
    assert (value("batch_watcher_api_requests_total", endpoint="retrieve", code="429") or 0) >= 1
    assert (value("batch_watcher_api_requests_total", endpoint="list_files", code="200") or 0) >= 2


# -- the control API and restarts ---------------------------------------------------------------


def test_control_api_token_and_restart_after_kill_9(
    simulator_factory: SimFactory, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """Watches registered through the token-guarded API survive ``kill -9``: the restarted
    daemon has every one, and a batch that had finished is not announced a second time."""
    sim = simulator_factory("--scenario", "empty")
    quick = add_batch(sim, "vsfb_quick", total_files=10, duration_seconds=0.3, failed_files=2)
    # Long enough to be still running when the quick one has been announced, however busy the
    # machine (4 s was not, beside stress-ng --cpu 2).
    slow = add_batch(sim, "vsfb_slow", total_files=50, duration_seconds=15)
    config = {"api": {"base_url": sim.url}, "poll": FAST_POLL}
    env = {"BATCH_WATCHER_CONTROL_TOKEN": TOKEN}
    first = daemon_factory(config, env=env, name="first")

    assert first.request("GET", "/v1/watches").status_code == 401
    assert first.request("GET", "/v1/watches", token="not-the-token").status_code == 401
    body = {**ids(quick), "labels": {"team": "search"}}
    assert first.request("POST", "/v1/watches", json=body).status_code == 401
    assert first.request("POST", "/v1/watches", json=body, token=TOKEN).status_code == 201
    assert first.request("POST", "/v1/watches", json=body, token=TOKEN).status_code == 200
    created = first.request("POST", "/v1/watches", json=ids(slow), token=TOKEN)
    assert created.status_code == 201

    first.wait_until(lambda: batch_events(first, quick), what="the quick batch finished")
    assert not batch_events(first, slow)
    first.kill9()
    assert first.proc.returncode == -signal.SIGKILL

    second = daemon_factory(config, env=env, name="second")
    listed = second.request("GET", "/v1/watches", token=TOKEN).json()["watches"]
    by_id = {w["batch_id"]: w for w in listed}
    assert sorted(by_id) == [quick, slow]
    assert by_id[quick]["state"] == "completed"
    assert by_id[quick]["labels"] == {"team": "search"}
    by_code = Counter(f["code"] for f in sim.truth()[quick]["failed_files"])
    assert sum(by_code.values()) == 2
    assert by_id[quick]["result"]["failed_files_by_code"] == by_code
    resumed = {e["batch_id"]: e["resumed"] for e in second.events("watch_started")}
    assert resumed == {quick: True, slow: True}

    second.wait_until(lambda: batch_events(second, slow), what="the slow batch finished")
    assert second.metric(f"{BATCH}_status", status="completed", **ids(quick)) == 1.0
    for code, count in by_code.items():
        assert second.metric(f"{BATCH}_failed_files", code=code, **ids(quick)) == count
    assert [e["event"] for e in batch_events(first, quick) + batch_events(second, quick)] == [
        "batch_completed"
    ]
    assert [e["event"] for e in batch_events(first, slow) + batch_events(second, slow)] == [
        "batch_completed"
    ]
    assert not [e for e in second.events("file_failed") if e["batch_id"] == quick]

    assert second.terminate() == 0
    assert second.events("daemon_stopped")
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    try:
        rows = dict(db.execute("SELECT batch_id, json_extract(result, '$.status') FROM watches"))
    finally:
        db.close()
    assert rows == {quick: "completed", slow: "completed"}


def test_without_a_token_the_api_is_open_on_loopback(
    simulator_factory: SimFactory, daemon_factory: DaemonFactory
) -> None:
    """With no control token the daemon on loopback answers the control API without one."""
    sim = simulator_factory("--scenario", "empty")
    slow = add_batch(sim, "vsfb_open", total_files=10, duration_seconds=60)
    daemon = daemon_factory({"api": {"base_url": sim.url}, "poll": FAST_POLL})
    assert daemon.request("POST", "/v1/watches", json=ids(slow)).status_code == 201
    one = daemon.request("GET", f"/v1/watches/{VS}/{slow}")
    assert one.status_code == 200
    assert one.json()["state"] == "watching"
    assert daemon.request("DELETE", f"/v1/watches/{VS}/{slow}").status_code == 204
    assert daemon.request("GET", "/v1/watches").json() == {"watches": []}


# -- signals -------------------------------------------------------------------------------------


def test_sigterm_exits_0_and_a_second_signal_exits_at_once(
    simulator_factory: SimFactory, daemon_factory: DaemonFactory
) -> None:
    """SIGTERM ends the daemon with status 0; a second SIGTERM during the graceful shutdown ends
    it at once, with 128 + the signal's number."""
    sim = simulator_factory("--scenario", "empty")
    add_batch(sim, "vsfb_long", total_files=10, duration_seconds=600)
    config = {"api": {"base_url": sim.url}, "poll": FAST_POLL, "watch": [ids("vsfb_long")]}

    calm = daemon_factory(config, name="calm")
    assert calm.terminate() == 0
    assert [e["signal"] for e in calm.events("shutdown_requested")] == ["SIGTERM"]
    assert calm.events("daemon_stopped")
    assert not calm.events("shutdown_forced")

    hurried = daemon_factory(config, name="hurried")
    host, port = hurried.url.removeprefix("http://").rsplit(":", 1)
    # A request whose body never comes keeps the graceful shutdown waiting on it.
    with socket.create_connection((host, int(port)), timeout=10) as held:
        held.sendall(
            b"POST /v1/watches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        hurried.signal(signal.SIGTERM)
        hurried.wait_until(lambda: hurried.events("shutdown_requested"), what="shutdown began")
        hurried.proc.send_signal(signal.SIGTERM)
        assert hurried.proc.wait(10) == 128 + signal.SIGTERM
    assert [e["signal"] for e in hurried.events("shutdown_forced")] == ["SIGTERM"]
    assert not hurried.events("daemon_stopped")


# -- configuration -------------------------------------------------------------------------------


def test_check_config_masks_every_secret(tmp_path: Path) -> None:
    """``check-config`` prints the effective configuration with each secret's source, never its
    value."""
    secrets = {
        "OPENAI_API_KEY": "sk-live-abcdef1234567890",
        "BATCH_WATCHER_CONTROL_TOKEN": "ctl-token-9876543210",
        "HOOK_SECRET": "whsec-5555566666",
    }
    path = write_config(
        tmp_path / "config.toml",
        {
            "api": {"base_url": "http://127.0.0.1:9/v1"},
            "notify": {
                "webhook_url": "http://127.0.0.1:9/hook",
                "webhook_secret_env": "HOOK_SECRET",
            },
            "watch": [{**ids("vsfb_1"), "labels": {"team": "search"}}],
        },
    )
    done = run_command(
        ["check-config", "--config", str(path)],
        env={**secrets, "BATCH_WATCHER_POLL_INTERVAL_SECONDS": "7"},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for value in secrets.values():
        assert value not in out + done.stderr
    assert "# api key: present (environment variable OPENAI_API_KEY), value ********" in out
    assert (
        "# control token: present (environment variable BATCH_WATCHER_CONTROL_TOKEN), "
        "value ********" in out
    )
    assert "# webhook secret: present (environment variable HOOK_SECRET), value ********" in out
    assert "interval_seconds = 7.0" in out
    assert 'batch_id = "vsfb_1"' in out

    missing = run_command(["check-config", "--config", str(path)], env={})
    assert missing.returncode == 0
    assert "# api key: missing (environment variable OPENAI_API_KEY)" in missing.stdout


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_a_bad_configuration_exits_2_listing_every_key(tmp_path: Path, command: str) -> None:
    """A configuration with several problems exits 2, and stderr names every bad key."""
    path = write_config(
        tmp_path / "bad.toml",
        {
            "api": {"base_url": "ftp://example.com", "max_concurrency": 0},
            "poll": {"interval_seconds": -1},
            "state": {"max_watches": 0},
            "colour": {"x": 1},
            "watch": [{"vector_store_id": "vs_1", "labels": {"__x": "y"}}],
        },
    )
    done = run_command(
        [command, "--config", str(path)],
        env={"BATCH_WATCHER_SERVER_LISTEN": "nowhere", "BATCH_WATCHER_POLL_TYPO": "1"},
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    for start in (
        "batch-watcher: api.base_url: 'ftp://example.com' ",
        "batch-watcher: api.max_concurrency: 0 is not in 1..1024",
        "batch-watcher: poll.interval_seconds: -1 is not > 0",
        "batch-watcher: state.max_watches: 0 is not >= 1",
        "batch-watcher: colour: unknown key",
        "batch-watcher: watch[0].batch_id: missing",
        "batch-watcher: watch[0].labels: label name '__x'",
        "batch-watcher: server.listen: 'nowhere' ",
        "batch-watcher: BATCH_WATCHER_POLL_TYPO: unknown variable",
    ):
        assert any(line.startswith(start) for line in lines), (start, lines)
    assert "(from BATCH_WATCHER_SERVER_LISTEN)" in done.stderr
    assert not (tmp_path / "batch-watcher.sqlite3").exists()


# -- the webhook ---------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on loopback that keeps every POST; it can hold its first answer."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.release_first = threading.Event()
        self.first_arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((dict(self.headers.items()), body))
                if len(receiver.posts) == 1:
                    receiver.first_arrived.set()
                    receiver.release_first.wait(30)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks/batch"

    def stop(self) -> None:
        self.release_first.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_webhook_posts_each_finished_batch_once_signed(
    simulator_factory: SimFactory, daemon_factory: DaemonFactory, receiver: Receiver
) -> None:
    """The webhook gets one POST per finished batch, signed as Standard Webhooks says, with the
    JSON ``watch --output json`` prints, even when a batch finishes while another delivery is in
    flight."""
    secret = "whsec-e2e-0123456789"
    sim = simulator_factory("--scenario", "empty")
    first = add_batch(sim, "vsfb_hook_a", total_files=10, duration_seconds=0.5)
    later = [
        add_batch(sim, "vsfb_hook_b", total_files=120, duration_seconds=2, failed_files=110),
        add_batch(
            sim,
            "vsfb_hook_c",
            total_files=20,
            duration_seconds=2.5,
            final_status="failed",
            failed_files=5,
        ),
    ]
    batches = [first, *later]
    daemon = daemon_factory(
        {
            # 110 failed files are named one request each: a budget that does not hold the
            # first delivery past its timeout while they are.
            "api": {"base_url": sim.url, "max_requests_per_minute": 6000},
            "poll": FAST_POLL,
            "notify": {"webhook_url": receiver.url, "webhook_secret_env": "HOOK_SECRET"},
            "watch": [ids(b) for b in batches],
        },
        env={"HOOK_SECRET": secret},
    )
    # Hold the first delivery until the other batches have finished, so that they are announced
    # while it is in flight.
    assert receiver.first_arrived.wait(20)
    daemon.wait_until(
        lambda: all(batch_events(daemon, b) for b in later), what="the later batches ended"
    )
    receiver.release_first.set()
    wait_for(lambda: len(receiver.posts) >= len(batches), timeout=20, what="every delivery")
    daemon.wait_until(
        lambda: len(daemon.events("webhook_delivered")) == len(batches), what="deliveries logged"
    )
    assert daemon.terminate() == 0
    assert len(receiver.posts) == len(batches)

    by_batch: dict[str, dict[str, Any]] = {}
    for headers, body in receiver.posts:
        assert headers["Content-Type"] == "application/json"
        # What a receiver does: the Standard Webhooks library checks id, timestamp and body.
        payload = Webhook(secret.encode()).verify(body, headers)
        assert headers["webhook-id"].startswith("bw_")
        by_batch[payload["batch_id"]] = payload
    assert sorted(by_batch) == sorted(batches)

    # The one-shot command's JSON for the same (now finished) batches.
    done = run_command(
        ["watch", *(f"{VS}/{b}" for b in batches), "--output", "json", "--base-url", sim.url],
        env={"OPENAI_API_KEY": "sk-unused-by-the-simulator"},
        timeout=60,
    )
    assert done.returncode == 1, done.stderr  # failed files and a failed batch
    oneshot = {line["batch_id"]: line for line in iter_json_lines(done.stdout)}
    assert sorted(oneshot) == sorted(batches)
    moments = {"elapsed_seconds", "finished_at"}
    for batch_id in batches:
        hook = by_batch[batch_id]
        assert set(hook) == set(oneshot[batch_id])
        assert {k: v for k, v in hook.items() if k not in moments} == {
            k: v for k, v in oneshot[batch_id].items() if k not in moments
        }
    assert len(by_batch["vsfb_hook_b"]["failed_files"]) == 110
    assert by_batch["vsfb_hook_c"]["status"] == "failed"


# -- the demo ------------------------------------------------------------------------------------


def test_demo_serves_its_status_page(tmp_path: Path) -> None:
    """``batch-watcher demo`` starts its simulator and daemon, serves the status page with the
    demo batches, and exits 0 on SIGTERM."""
    log_path = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_WATCHER_")}
    argv = [
        PYTHON,
        "-m",
        "watcher",
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        str(tmp_path),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:

        def listening() -> str | None:
            assert proc.poll() is None, log_path.read_text()
            for line in log_path.read_text().splitlines():
                if line.startswith("{") and json.loads(line).get("event") == "daemon_started":
                    return str(json.loads(line)["listen"])
            return None

        url = "http://" + wait_for(listening, timeout=20, what="the demo's daemon")

        def page_lists_every_batch() -> str | None:
            response = httpx.get(url + "/", timeout=5)
            names = ("clean", "failures", "failed", "cancelled", "slow", "flaky")
            if response.status_code == 200 and all(
                f"vsfb_demo_{n}" in response.text for n in names
            ):
                return response.text
            return None

        html = wait_for(page_lists_every_batch, timeout=20, what="the status page")
        assert "<h1>batch-watcher" in html
        assert httpx.get(url + "/readyz", timeout=5).status_code == 200
        assert 'vector_store_id="vs_demo"' in httpx.get(url + "/metrics", timeout=5).text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert (tmp_path / "demo-state.sqlite3").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_restart_over_the_watch_limit_is_a_config_error(
    simulator_factory: SimFactory, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """When the stored watches plus a newly configured one exceed ``state.max_watches``, the
    restart exits 2 naming the key instead of crashing."""
    sim = simulator_factory("--scenario", "empty")
    for name in ("vsfb_w1", "vsfb_w2", "vsfb_w3"):
        add_batch(sim, name, total_files=10, duration_seconds=600)
    config: dict[str, Any] = {
        "api": {"base_url": sim.url},
        "poll": FAST_POLL,
        "state": {"max_watches": 2},
        "watch": [ids("vsfb_w1")],
    }
    daemon = daemon_factory(config)
    assert daemon.request("POST", "/v1/watches", json=ids("vsfb_w2")).status_code == 201
    assert daemon.terminate() == 0

    config["watch"] = [ids("vsfb_w1"), ids("vsfb_w3")]
    config["server"] = {"listen": "127.0.0.1:0"}
    config["state"]["path"] = str(tmp_path / "state.sqlite3")
    path = write_config(tmp_path / "more.toml", config)
    done = run_command(["run", "--config", str(path), "--log-format", "json"], timeout=30)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    [problem] = [line for line in done.stderr.splitlines() if line.startswith("batch-watcher: ")]
    assert problem.startswith("batch-watcher: state.max_watches: 2 ")
    assert "vsfb_w3" in problem

    config["state"]["max_watches"] = 1
    config["watch"] = []
    write_config(path, config)
    lowered = run_command(["run", "--config", str(path), "--log-format", "json"], timeout=30)
    assert lowered.returncode == 2, lowered.stderr
    expected = "batch-watcher: state.max_watches: 1 is less than the 2 unfinished watches in the"
    assert expected in lowered.stderr
