"""Fleet mode with real processes and a real PostgreSQL restart: a server of the test's own is
restarted (``pg_ctl restart -m fast``), then stopped and, a while later, started again, while
two replicas watch batches on the simulator."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from harness import DaemonProcess, SimulatorProcess, WebhookReceiver, announced, wait_for
from private_postgres import PrivateServer, private_postgres

pytestmark = pytest.mark.e2e
__all__ = ["private_postgres"]  # the fixture, used by name

VS = "vs_pgrestart"
LEASE = 8.0


def _ready(replica: DaemonProcess) -> bool:
    return replica.request("GET", "/readyz").status_code == 200


def test_replicas_survive_a_postgresql_restart_and_a_stop(
    private_postgres: PrivateServer,
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """Through a fast restart of PostgreSQL, and a stop of a few seconds then a start, the
    replicas keep running and keep polling what they own, say they are not ready while the
    server is down, reconnect once it is back; no watch is lost, and every batch's end is
    delivered, a repeat only under the same delivery id."""
    server = private_postgres
    sim = simulator_factory("--scenario", "empty")
    batches = [f"vsfb_pg{n:02d}" for n in range(40)]
    for n, batch_id in enumerate(batches):
        # Ends spread over the restart, the stop and after.
        spec = {"total_files": 10, "duration_seconds": 25 + n % 25, "failed_files": n % 2}
        sim.control("POST", "batches", {"vector_store_id": VS, "batch_id": batch_id, **spec})

    def requests() -> int:
        return int(sim.stats()["requests"])

    with WebhookReceiver() as hook:
        config: dict[str, Any] = {
            "api": {"base_url": sim.url, "max_requests_per_minute": 1200},
            "poll": {"interval_seconds": 1.0, "min_interval_seconds": 0.5, "adaptive": False},
            "state": {"url": server.url, "lease_seconds": LEASE},
            "notify": {"webhook_url": hook.url},
            "watch": [{"vector_store_id": VS, "batch_id": b} for b in batches],
        }
        replicas = [
            daemon_factory(config, env={"BATCH_WATCHER_REPLICA_ID": f"r{i}"}, name=f"r{i}")
            for i in (1, 2)
        ]

        def owned() -> Counter[str | None]:
            with psycopg.connect(server.url, autocommit=True) as conn:
                rows = conn.execute("SELECT owner, count(*) FROM watches GROUP BY owner")
                return Counter({r[0]: int(r[1]) for r in rows.fetchall()})

        def shared() -> bool:
            held = owned()
            return held.total() == len(batches) and held[None] == 0 and len(held) == 2

        wait_for(shared, timeout=30, what="the watches shared by both replicas")
        for r in replicas:
            r.wait_until(lambda r=r: _ready(r), timeout=15, what="ready")

        # A fast restart: the pools' connections die, and new ones are made.
        server.restart()
        for r in replicas:
            r.wait_until(lambda r=r: _ready(r), timeout=30, what="ready after the restart")
        before = requests()
        wait_for(lambda: requests() >= before + 20, timeout=15, what="polling after a restart")

        # Down for a while (within the lease): polling goes on, readiness says no.
        server.stop()
        down = requests()
        for r in replicas:
            r.wait_until(lambda r=r: not _ready(r), timeout=15, what="not ready while down")
            body = r.request("GET", "/readyz").json()
            assert any("database" in p or "state store" in p for p in body["problems"]), body
        wait_for(lambda: requests() >= down + 20, timeout=LEASE / 2, what="polling while down")
        assert all(r.proc.poll() is None for r in replicas)
        server.start()
        for r in replicas:
            r.wait_until(lambda r=r: _ready(r), timeout=30, what="ready once it is back")

        def all_delivered() -> bool:
            return {d.json["batch_id"] for d in hook.received()} == set(batches)

        replicas[0].wait_until(all_delivered, timeout=120, what="every end delivered")
        assert all(r.proc.poll() is None for r in replicas), "a replica died"

    ids: dict[str, set[str]] = defaultdict(set)
    for delivery in hook.received():
        ids[delivery.json["batch_id"]].add(delivery.headers["webhook-id"])
    assert all(len(i) == 1 for i in ids.values()), "a repeat under a new delivery id"
    ends = Counter(b for r in replicas for b in announced(r.logs()))
    assert set(ends) == set(batches)
    assert max(ends.values()) == 1, [b for b, n in ends.items() if n > 1]
    with psycopg.connect(server.url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*), count(result) FROM watches").fetchone()
    assert row == (len(batches), len(batches)), "a watch lost, or its end not written"
