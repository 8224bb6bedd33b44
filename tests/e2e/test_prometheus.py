"""deploy/ against a real Prometheus: it scrapes the daemon (watching the simulator), loads the
shipped alert and recording rules, and runs every dashboard and rule expression."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from harness import DaemonProcess, SimulatorProcess, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from deploy_promql import ALERTS, RECORDING, iter_promql_expressions, load_rule_groups
from deploy_tools import find_tool, run

pytestmark = pytest.mark.e2e

VS = "vs_prom"
BATCH = "openai_vector_store_file_batch"
RATE_INTERVAL = "1m"

# What each batch is there for: one of each situation an alert or a panel is about.
COMPLETED = "vsfb_p_completed"  # completed, after 503s and a 429 on its retrieves
CODES = "vsfb_p_codes"  # completed with 60 % failed files, three codes
FAILED = "vsfb_p_failed"  # ends failed, with failed files
CANCELLED = "vsfb_p_cancelled"  # ends cancelled
STALL = "vsfb_p_stall"  # makes no progress: stalled
DEADLINE = "vsfb_p_deadline"  # its watch's deadline passes: timed_out
VANISH = "vsfb_p_vanish"  # seen in progress, then 404: not_found
LATE = "vsfb_p_late"  # in progress, expected to finish after its deadline

#: Every expression under deploy/, by name: True when the scenario must give it data, False when
#: it must give none (an alert that must not fire here), None when either is right.
EXPECTED: dict[str, bool | None] = {
    "Watcher up [A]": True,
    "API auth failing [A]": True,
    "Last successful poll [A]": True,
    "Active watches [A]": True,
    "Rate limit remaining [A]": True,
    "Version [A]": True,
    "Scrape up and auth failing [A]": True,
    "Scrape up and auth failing [B]": True,
    "Last successful poll age [A]": True,
    "Watcher process [A]": True,
    "Watcher process [B]": True,
    "Batches by status [A]": True,
    "Watches by state [A]": True,
    "Watched batches [A]": True,
    "Progress per batch [A]": True,
    "Files by status [A]": True,
    "Files by status [B]": True,
    "ETA and time to deadline [A]": True,
    "ETA and time to deadline [B]": True,
    "Seconds since last poll [A]": True,
    "Batch duration [A]": True,
    "Stalled batches [A]": True,
    "Finished batches per hour [A]": True,
    "Failed files by error code [A]": True,
    "Failed-file ratio per batch [A]": True,
    "Files failing per second by code [A]": True,
    "API requests [A]": True,
    "API latency [A]": True,
    "API latency [B]": True,
    "API latency [C]": True,
    "Rate limited and failed requests [A]": True,
    "Rate limited and failed requests [B]": True,
    "Vector stores by status [A]": True,
    "Files per vector store by status [A]": True,
    "Time until a vector store expires [A]": True,
    "Vector store usage [A]": True,
    "Failed files per vector store [A]": True,
    # Fleet mode only: this daemon keeps its state in SQLite.
    "Watches per replica [A]": False,
    "Watches per replica [B]": False,
    "Replicas and takeovers [A]": False,
    "Replicas and takeovers [B]": False,
    "BatchWatcherDown": False,
    "BatchWatcherTargetMissing": False,
    "BatchWatcherAPIUnreachable": False,
    "BatchWatcherAPIUnauthorized": False,
    # One 429 among the scenario's requests may or may not be more than 10 % of them.
    "BatchWatcherAPIRateLimited": None,
    "BatchWatcherTooManyWatches": False,
    "BatchWatcherWatchesUnowned": False,  # fleet mode only
    "BatchWatcherPollingStale": False,
    "BatchWatcherBatchFailed": True,
    "BatchWatcherBatchCancelled": True,
    "BatchWatcherBatchNotFound": True,
    "BatchWatcherFailedFilesHigh": True,
    "BatchWatcherBatchOverdue": True,
    "BatchWatcherBatchWillMissDeadline": True,
    "BatchWatcherBatchStalled": True,
    # The store expires a day after its last batch, with the stalled batch's files in progress.
    "BatchWatcherStoreExpiringWithFilesInProgress": True,
    "BatchWatcherStoreExpired": False,
    # Whether the first scrape already saw the store's final failed count depends on timing.
    "BatchWatcherStoreFailedFilesRising": None,
    "batch:openai_vector_store_file_batch_completed_files:ratio": True,
    "batch:openai_vector_store_file_batch_failed_files:ratio": True,
}

#: The alerts the scenario must fire, and for which batches exactly.
FIRING: dict[str, set[str]] = {
    "BatchWatcherBatchFailed": {FAILED},
    "BatchWatcherBatchCancelled": {CANCELLED},
    "BatchWatcherBatchNotFound": {VANISH},
    "BatchWatcherBatchOverdue": {DEADLINE},
    "BatchWatcherBatchStalled": {STALL},
    "BatchWatcherFailedFilesHigh": {CODES, FAILED},
    "BatchWatcherBatchWillMissDeadline": {LATE},
}


def binary(name: str) -> str:
    """The Prometheus binary ``name``: skip without it, but fail in CI, which installs it."""
    path = find_tool(name)
    if path is not None:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is required in CI (apt-get install prometheus) for the deploy e2e")
    pytest.skip(f"{name} is not installed (apt-get install prometheus), so deploy/ is not run")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rules_without_for(directory: Path) -> Path:
    """A copy of alerts.yaml with every ``for:`` set to 0s: the shipped ones (1m to 30m) are
    longer than this test runs, and the expressions, not the durations, are under test (the
    durations are covered by promtool's unit tests in alerts_test.yaml)."""
    groups = load_rule_groups(ALERTS)
    for group in groups:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    path = directory / "alerts.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


class Prometheus:
    """A Prometheus server on loopback, and its HTTP API."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body.get("status") == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one element) of ``expr`` now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    """Start Prometheus scraping the daemon at a ``host:port``, every second; stopped after."""
    prometheus = binary("prometheus")
    promtool = binary("promtool")
    started: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> Prometheus:
        alerts = rules_without_for(tmp_path)
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(alerts), str(RECORDING)],
                    "scrape_configs": [
                        {"job_name": "batch-watcher", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        checked = run(promtool, "check", "config", str(config))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        log = tmp_path / "prometheus.log"
        # Prometheus takes a port number, not a socket: the free port it is given may be taken
        # by someone else before it binds, so a clash is retried with another one.
        for _ in range(3):
            port = free_port()
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [
                        prometheus,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                )
            started.append(proc)
            url = f"http://127.0.0.1:{port}"

            def outcome(proc: subprocess.Popen[bytes] = proc, url: str = url) -> str | None:
                if proc.poll() is not None:
                    return "clash" if "address already in use" in log.read_text() else "exited"
                return "ready" if httpx.get(f"{url}/-/ready", timeout=2).is_success else None

            result = wait_for(outcome, timeout=30, what="Prometheus ready")
            if result == "clash":
                continue
            assert result == "ready", log.read_text()
            return Prometheus(url, proc, log)
        pytest.fail(f"Prometheus found no free port: {log.read_text()}")

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def ids(batch_id: str) -> dict[str, str]:
    return {"vector_store_id": VS, "batch_id": batch_id}


def add_batches(sim: SimulatorProcess) -> None:
    codes = [
        {"code": "unsupported_file", "message": "The file type is not supported."},
        {"code": "invalid_file", "message": "The file could not be parsed."},
        {"code": "parsing_timeout", "message": "Parsing took too long."},
    ]
    specs: list[dict[str, Any]] = [
        {
            "batch_id": COMPLETED,
            "total_files": 20,
            "duration_seconds": 1,
            "faults": [
                {"kind": "server_error", "endpoint": "retrieve", "status": 503, "times": 2},
                {
                    "kind": "rate_limit",
                    "endpoint": "retrieve",
                    "retry_after_seconds": 1,
                    "times": 1,
                },
            ],
        },
        {
            "batch_id": CODES,
            "total_files": 100,
            "duration_seconds": 1.5,
            "failed_files": 60,
            "errors": codes,
        },
        {
            "batch_id": FAILED,
            "total_files": 30,
            "duration_seconds": 1.5,
            "final_status": "failed",
            "failed_files": 20,
        },
        {
            "batch_id": CANCELLED,
            "total_files": 40,
            "duration_seconds": 1.5,
            "final_status": "cancelled",
            "cancelled_files": 25,
        },
        {
            "batch_id": STALL,
            "total_files": 50,
            "duration_seconds": 50,
            "stall_after_files": 0,
            "stall_seconds": 600,
        },
        {"batch_id": DEADLINE, "total_files": 50, "duration_seconds": 600},
        {"batch_id": VANISH, "total_files": 50, "duration_seconds": 600},
        {"batch_id": LATE, "total_files": 200, "duration_seconds": 200},
    ]
    for spec in specs:
        sim.control("POST", "batches", {"vector_store_id": VS, **spec})


def test_every_dashboard_and_rule_expression_runs_against_the_daemon(
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
    prometheus_factory: Callable[[str], Prometheus],
) -> None:
    """Prometheus scraping the daemon loads the rules healthy, runs every dashboard and rule
    expression (data where the scenario gives it), and fires each batch alert for its batch."""
    binary("prometheus")  # skip before starting anything when it is missing
    sim = simulator_factory("--scenario", "empty", "--rate-limit", "100000/60")
    sim.control("POST", "stores", {"vector_store_id": VS, "name": "prom", "expires_after_days": 1})
    add_batches(sim)
    watches: list[dict[str, Any]] = [ids(b) for b in (COMPLETED, CODES, FAILED, CANCELLED, VANISH)]
    watches += [
        {**ids(STALL), "stall_after_seconds": 1.5, "labels": {"team": "search"}},
        {**ids(DEADLINE), "deadline_seconds": 2},
        {**ids(LATE), "deadline_seconds": 120},
    ]
    daemon = daemon_factory(
        {
            # Each failed file is named with a request of its own: a budget for them too.
            "api": {"base_url": sim.url, "max_requests_per_minute": 100000},
            "poll": {"interval_seconds": 0.3, "min_interval_seconds": 0.1},
            "watch": watches,
            "store": [{"vector_store_id": VS}],
        }
    )
    prom = prometheus_factory(daemon.url.removeprefix("http://"))
    daemon.wait_until(
        lambda: daemon.metric(f"{BATCH}_last_poll_timestamp_seconds", **ids(VANISH)),
        what="the batch to vanish seen once",
    )
    sim.control("POST", f"batches/{VANISH}/vanish")

    def firing() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for alert in prom.api("alerts")["alerts"]:
            if alert["state"] == "firing" and "batch_id" in alert["labels"]:
                found.setdefault(alert["labels"]["alertname"], set()).add(
                    alert["labels"]["batch_id"]
                )
        return found

    def expected_alerts_fire() -> bool:
        now = firing()
        return all(now.get(name, set()) >= batches for name, batches in FIRING.items())

    wait_for(expected_alerts_fire, timeout=40, what=f"the batch alerts to fire: {FIRING}")
    # A few scrapes after the last change, so every rate() has points on both sides.
    wait_for(
        lambda: prom.query('count_over_time(up{job="batch-watcher"}[1m]) >= 6'),
        timeout=20,
        what="six scrapes",
    )
    assert prom.query('up{job="batch-watcher"}')[0]["value"][1] == "1"

    expressions = list(iter_promql_expressions(rate_interval=RATE_INTERVAL))
    assert sorted(e.name for e in expressions) == sorted(EXPECTED), "classify new expressions"
    wrong = []
    for e in expressions:
        result = prom.query(e.expr)  # asserts status success: the expression parses and runs
        want = EXPECTED[e.name]
        if want is not None and bool(result) != want:
            wrong.append(f"{e.kind} {e.name!r}: {'no data' if want else result}")
    assert not wrong, "\n".join(wrong)

    groups = prom.api("rules")["groups"]
    loaded = [r for g in groups for r in g["rules"]]
    shipped = [r for p in (ALERTS, RECORDING) for g in load_rule_groups(p) for r in g["rules"]]
    assert len(loaded) == len(shipped)
    unhealthy = [
        (r["name"], r["health"], r.get("lastError")) for r in loaded if r["health"] != "ok"
    ]
    assert not unhealthy

    now = firing()
    for name, batches in FIRING.items():
        assert now[name] == batches, name
    assert now.keys() <= FIRING.keys() | {"BatchWatcherAPIRateLimited"}
    # The info series carries the watch's labels into a join, as docs/metrics.md shows.
    joined = prom.query(
        f"({BATCH}_stalled == 1) * on (job, instance, vector_store_id, batch_id) "
        f'group_left (team) {BATCH}_info{{team="search"}}'
    )
    assert [r["metric"]["batch_id"] for r in joined] == [STALL]
    # The recording rules say what the counts say: 40 of 100 completed, 60 failed.
    for record, share in (("completed", 0.4), ("failed", 0.6)):
        [ratio] = prom.query(f'batch:{BATCH}_{record}_files:ratio{{batch_id="{CODES}"}}')
        assert float(ratio["value"][1]) == pytest.approx(share)
    # Truth and Prometheus agree on a finished batch's files.
    truth = sim.truth()[CODES]["file_counts"]
    shown = {
        r["metric"]["status"]: int(float(r["value"][1]))
        for r in prom.query(f'{BATCH}_files{{batch_id="{CODES}"}}')
    }
    assert shown == {k: v for k, v in truth.items() if k != "total"}
