"""``kill -9`` at bad moments, then a restart: no watch lost, nothing announced twice, the
state store never damaged."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from figures import record
from harness import DaemonProcess, SimulatorProcess, WebhookReceiver, announced

VS = "vs_restarts"
BIG = "vsfb_big_list"  # 40 pages of failed files: long enough to be killed in the middle
RANDOM_KILLS = 5
TOKEN = "restart-test-token"


def _watch(batch_id: str) -> dict[str, str]:
    return {"vector_store_id": VS, "batch_id": batch_id}


def _template(prefix: str, count: int, seed: int, jitter: float) -> dict[str, Any]:
    return {
        "template": {
            "vector_store_id": VS,
            "batch_id": "template",
            "total_files": 30,
            "failed_files": 6,
            "duration_seconds": 3.0,
        },
        "count": count,
        "prefix": prefix,
        "start_jitter_seconds": jitter,
        "duration_jitter": 0.5,
        "seed": seed,
    }


def _stored(path: Path) -> dict[tuple[str, str], bool]:
    """Each watch in the state file (opened as the daemon would after a crash), and whether it
    has ended; the file must pass SQLite's integrity check and be in WAL mode."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = db.execute("SELECT vector_store_id, batch_id, result IS NOT NULL FROM watches")
        return {(vs, batch): bool(done) for vs, batch, done in rows}
    finally:
        db.close()


class Registrar:
    """Registers watches through the control API from a thread, as fast as it is answered,
    and remembers each one the daemon acknowledged (201 or 200)."""

    def __init__(self, daemon: DaemonProcess, batch_ids: list[str]) -> None:
        self.daemon = daemon
        self.pending = batch_ids
        self.acknowledged: list[str] = []
        self.interrupted = False  # the daemon died while answering a registration
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self.pending and not self._stop.is_set():
            batch_id = self.pending[0]
            try:
                response = self.daemon.request(
                    "POST", "/v1/watches", token=TOKEN, json=_watch(batch_id)
                )
            except httpx.HTTPError:
                self.interrupted = True
                return
            if response.status_code in (200, 201):
                self.acknowledged.append(self.pending.pop(0))

    def __enter__(self) -> Registrar:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def test_kill_9_at_random_points_loses_nothing_and_repeats_nothing(
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    """Killed mid-poll, mid-listing of failed files and at random points while watches are
    being written, the daemon restarts with every acknowledged watch, announces each finished
    batch at most once, delivers each webhook under one delivery id, and its SQLite file always
    passes an integrity check."""
    rng = random.Random(20240607)
    sim = simulator_factory("--scenario", "empty", "--seed", "11")
    configured = sim.control("POST", "batches", _template("vsfb_cfg_", 30, 1, 4.0))["ids"]
    big = {"vector_store_id": VS, "batch_id": BIG, "total_files": 6000, "failed_files": 4000}
    sim.control("POST", "batches", {**big, "duration_seconds": 0.5})
    # Registered as fast as answered (a few hundred a second), these must outlast the first of
    # the random kills below, or no kill catches a registration.
    later = sim.control("POST", "batches", _template("vsfb_api_", 600, 2, 10.0))["ids"]
    state_path = tmp_path / "state.sqlite3"
    kills = 0

    with WebhookReceiver() as hooks:
        config: dict[str, Any] = {
            "api": {
                "base_url": sim.url,
                "max_requests_per_minute": 3000,
                "max_concurrency": 4,
                "timeout_seconds": 10.0,
            },
            "poll": {
                "interval_seconds": 0.3,
                "min_interval_seconds": 0.1,
                "max_interval_seconds": 1.0,
                "stall_after_seconds": 0,
            },
            "notify": {"webhook_url": hooks.url, "max_attempts": 2},
            "watch": [_watch(b) for b in [*configured, BIG]],
        }

        def start() -> DaemonProcess:
            return daemon_factory(config, env={"BATCH_WATCHER_CONTROL_TOKEN": TOKEN})

        def faster() -> None:
            """Past the listing, no need to go slowly enough to be caught in one."""
            config["api"]["max_requests_per_minute"] = 12000

        def kill(daemon: DaemonProcess) -> dict[tuple[str, str], bool]:
            nonlocal kills
            daemon.kill9()
            kills += 1
            return _stored(state_path)

        # Configured watches come back from the configuration; registered ones (answered 201
        # or 200) from the state file alone, so they must be in it from the answer on.
        acknowledged: list[str] = [*configured, BIG]
        registered: set[tuple[str, str]] = set()

        def restarted() -> DaemonProcess:
            daemon = start()
            watched = daemon.request("GET", "/v1/watches", token=TOKEN).json()["watches"]
            missing = set(acknowledged) - {w["batch_id"] for w in watched}
            assert not missing, f"lost across a restart: {sorted(missing)}"
            return daemon

        # 1. Mid-listing: the big batch's failed files are being read, page by page.
        daemon = restarted()
        daemon.wait_until(
            lambda: sim.stats()["by_batch"].get(BIG, {}).get("list", 0) >= 3,
            what="the big list half read",
        )
        listed_at_kill = sim.stats()["by_batch"][BIG]["list"]
        stored = kill(daemon)
        assert listed_at_kill < 40
        assert stored.get((VS, BIG)) is not True  # not recorded as ended: it is listed again

        # 2. Mid-poll: a retrieve is held by the server when the daemon dies.
        daemon = restarted()
        sim.inject({"kind": "slow", "endpoint": "retrieve", "times": 1, "delay_seconds": 5})
        daemon.wait_until(lambda: sim.stats()["faults"].get("slow", 0) >= 1, what="a held poll")
        kill(daemon)

        # 3. At random points while watches are registered as fast as the daemon answers
        # (each one written durably before its answer) and others progress and finish.
        faster()
        pending = list(later)
        mid_write = 0
        for _ in range(RANDOM_KILLS):
            daemon = restarted()
            with Registrar(daemon, pending) as registrar:
                time.sleep(rng.uniform(0.2, 1.5))
                stored = kill(daemon)
            acknowledged += registrar.acknowledged
            registered |= {(VS, b) for b in registrar.acknowledged}
            mid_write += registrar.interrupted
            assert registered <= set(stored)

        # The last start registers what is left and sees everything to its end.
        daemon = restarted()
        with Registrar(daemon, pending) as registrar:
            # Each registration is written durably before its answer: on a busy machine that
            # took more than the default minute.
            daemon.wait_until(lambda: not pending, timeout=180, what="every watch registered")
        acknowledged += registrar.acknowledged
        watches = daemon.wait_until(
            lambda: (
                (w := daemon.request("GET", "/v1/watches", token=TOKEN).json()["watches"])
                and all("result" in x for x in w)
                and w
            ),
            timeout=90,
            what="every watch ended",
        )
        daemon.wait_until(
            lambda: len({d.json["batch_id"] for d in hooks.received()}) >= len(watches),
            what="every webhook delivered",
        )
        deliveries = hooks.received()

    truth = sim.truth()
    by_batch = {w["batch_id"]: w for w in watches}
    lost = sorted(set(acknowledged) - set(by_batch))
    for batch_id, watch in by_batch.items():
        result = watch["result"]
        assert result["status"] == truth[batch_id]["status"], batch_id
        assert result["file_counts"] == truth[batch_id]["file_counts"], batch_id
        assert result["failed_files_listed"] == len(truth[batch_id]["failed_files"]), batch_id
        assert result["failed_files_complete"] is True, batch_id
    logs = daemon.logs()
    ended = announced(logs)
    duplicates = len(ended) - len(set(ended))
    delivery_ids: dict[str, set[str]] = defaultdict(set)
    for delivery in deliveries:
        delivery_ids[delivery.json["batch_id"]].add(delivery.headers["webhook-id"])
    resumed = [e for e in logs if e.get("event") == "watch_started" and e.get("resumed")]
    record(
        tmp_path,
        "restarts",
        faults_injected=kills,
        requests=sim.stats()["requests"],
        batches_finished=len(by_batch),
        watches_lost=len(lost),
        duplicates=duplicates,
        watches_acknowledged=len(acknowledged),
        webhook_redeliveries=len(deliveries) - len(delivery_ids),
        kills_during_a_registration=mid_write,
    )
    assert lost == []
    assert duplicates == 0
    assert set(delivery_ids) == set(by_batch)
    assert all(len(ids) == 1 for ids in delivery_ids.values()), delivery_ids
    assert len(resumed) >= len(configured)
    assert kills == RANDOM_KILLS + 2
    assert mid_write >= 1  # at least one kill cut a registration's durable write short
    assert [e for e in logs if e.get("event") == "internal_error"] == []
