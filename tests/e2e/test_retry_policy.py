"""The daemon's automatic retry, as a whole process: a batch ending with failed files of its
policy's codes is sent again as one new batch, watched and linked, even when the daemon is
killed with SIGKILL while the retry is under way."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import DaemonProcess, SimulatorProcess

VS = "vs_retry_policy"
BATCH = "vsfb_retry_me"
TOKEN = "retry-policy-token"


def _progress(path: Path, batch_id: str) -> dict[str, Any]:
    """The watch's progress as the state file holds it on disk."""
    db = sqlite3.connect(path)
    try:
        [row] = db.execute("SELECT progress FROM watches WHERE batch_id = ?", (batch_id,))
        return dict(json.loads(row[0]))
    finally:
        db.close()


def _created(sim: SimulatorProcess) -> list[dict[str, Any]]:
    """The batches the API made on request (every retry batch, wherever it came from)."""
    batches = sim.control("GET", "batches")["data"]
    return [b for b in batches if b["id"].startswith("vsfb_created")]


def test_kill_9_during_an_automatic_retry_leaves_exactly_one_retry_batch(
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    """Killed while its retry request is held (recorded, not yet made), then killed again after
    the API made the batch but before the daemon heard of it, the daemon restarts, asks again
    with the same Idempotency-Key, and ends with exactly one retry batch, watched and linked
    (retry_of / retried_as) and counted in batch_watcher_retries_total."""
    sim = simulator_factory("--scenario", "empty", "--created-batch-seconds", "1")
    spec = {"vector_store_id": VS, "batch_id": BATCH, "total_files": 30, "failed_files": 6}
    sim.control("POST", "batches", {**spec, "duration_seconds": 0.3})
    config: dict[str, Any] = {
        "api": {"base_url": sim.url, "max_requests_per_minute": 6000, "timeout_seconds": 60.0},
        "poll": {"interval_seconds": 0.2, "min_interval_seconds": 0.1, "stall_after_seconds": 0},
        "watch": [
            {
                "vector_store_id": VS,
                "batch_id": BATCH,
                "retry": {"codes": ["server_error"], "max_attempts": 1},
            }
        ],
    }
    state = tmp_path / "state.sqlite3"

    def start() -> DaemonProcess:
        return daemon_factory(config, env={"BATCH_WATCHER_CONTROL_TOKEN": TOKEN})

    # 1. The first retry request is held by the server: the attempt is on disk already.
    sim.inject({"kind": "slow", "endpoint": "create_batch", "times": 1, "delay_seconds": 30})
    daemon = start()
    daemon.wait_until(lambda: sim.stats()["faults"].get("slow", 0) >= 1, what="a held retry")
    daemon.kill9()
    assert _progress(state, BATCH)["retry_sending"] == 1
    assert _created(sim) == []

    # 2. The API makes the batch but its reply is late, and the daemon dies before it comes.
    sim.inject({"kind": "late_reply", "endpoint": "create_batch", "delay_seconds": 30})
    daemon = start()
    daemon.wait_until(lambda: _created(sim), what="the retry batch made")
    daemon.kill9()
    [made] = _created(sim)
    sim.control("DELETE", "faults")

    # 3. The restart finds that batch again by its key instead of making another.
    daemon = start()

    def ended() -> list[dict[str, Any]] | None:
        watches = daemon.request("GET", "/v1/watches", token=TOKEN).json()["watches"]
        done = [w for w in watches if "result" in w]
        return watches if len(done) == 2 and len(watches) == 2 else None

    watches = {w["batch_id"]: w for w in daemon.wait_until(ended, what="both batches ended")}
    server_errors = [
        f["id"]
        for f in sim.control("GET", f"batches/{BATCH}")["failed_files"]
        if f["code"] == "server_error"
    ]
    assert server_errors
    assert [b["id"] for b in _created(sim)] == [made["id"]]
    original = watches[BATCH]["result"]
    retry = watches[made["id"]]
    assert original["retried_as"] == [made["id"]]
    assert retry["retry_of"] == BATCH
    assert retry["result"]["retry_of"] == BATCH
    assert retry["result"]["file_counts"]["total"] == len(server_errors)
    assert retry["result"]["status"] == "completed"
    assert daemon.metric("batch_watcher_retries_total", code="server_error") == len(server_errors)
    [event] = daemon.events("batch_retried")
    assert event["retried_as"] == [made["id"]]
