"""Fleet mode with real processes: the database away for a while, through a proxy cut off and
restored, under two replicas polling at the budget."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from fleet_support import fleet_url
from fleet_support import owners as _owners
from harness import DaemonProcess, SimulatorProcess, WebhookReceiver, announced, wait_for
from postgres_fixtures import target
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e
__all__ = ["fleet_url"]  # the fixture, used by name

VS = "vs_fleet"


def test_the_database_away_for_a_while_kills_no_replica(
    fleet_url: str,
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """The database cut off (through a proxy) for less than a lease: the replicas keep polling
    and say they are not ready; for longer than a lease: they stop polling; once it is back
    they carry on, and every batch ends, delivered once, none lost."""
    lease = 6.0
    proxy = TcpProxy(*target())
    database = fleet_url.replace(f"{target()[0]}:{target()[1]}", f"127.0.0.1:{proxy.port}", 1)
    assert database != fleet_url
    sim = simulator_factory("--scenario", "empty")
    batches = [f"vsfb_{n:03d}" for n in range(60)]
    for n, batch_id in enumerate(batches):
        spec = {"total_files": 10, "duration_seconds": 20 + n % 10}
        sim.control("POST", "batches", {"vector_store_id": VS, "batch_id": batch_id, **spec})
    try:
        with WebhookReceiver() as hook:
            config: dict[str, Any] = {
                "api": {"base_url": sim.url, "max_requests_per_minute": 1200},
                # Every watch every second: the budget (20 a second) is always spent.
                "poll": {"interval_seconds": 1.0, "min_interval_seconds": 0.5, "adaptive": False},
                "state": {"url": database, "lease_seconds": lease},
                "notify": {"webhook_url": hook.url},
                "watch": [{"vector_store_id": VS, "batch_id": b} for b in batches],
            }
            replicas = [
                daemon_factory(config, env={"BATCH_WATCHER_REPLICA_ID": f"r{i}"}, name=f"r{i}")
                for i in (1, 2)
            ]
            wait_for(lambda: _owners(fleet_url).total() == len(batches), timeout=30)
            wait_for(lambda: _owners(fleet_url)[None] == 0, timeout=30)

            def requests() -> int:
                return int(sim.stats()["requests"])

            proxy.cut()
            cut = time.monotonic()
            before = requests()
            # Polling goes on for the rest of the lease (less the second it keeps in hand): at
            # the budget about 80 requests; a few are enough to show it on a busy machine.
            wait_for(lambda: requests() >= before + 5, timeout=lease - 1.5, what="polling on")
            for r in replicas:
                r.wait_until(lambda r=r: r.request("GET", "/readyz").status_code == 503, 10)

            time.sleep(max(0.0, cut + lease + 1.5 - time.monotonic()))  # past the lease
            stopped = requests()
            time.sleep(1.5)
            assert requests() == stopped, "polled past its lease"
            proxy.restore()
            for r in replicas:
                r.wait_until(lambda r=r: r.request("GET", "/readyz").status_code == 200, 30)

            def all_delivered() -> bool:
                return {d.json["batch_id"] for d in hook.received()} == set(batches)

            replicas[0].wait_until(all_delivered, timeout=120, what="every end delivered")
            assert all(r.proc.poll() is None for r in replicas)
        ids: dict[str, set[str]] = defaultdict(set)
        for delivery in hook.received():
            ids[delivery.json["batch_id"]].add(delivery.headers["webhook-id"])
        assert all(len(i) == 1 for i in ids.values())
        ends = Counter(b for r in replicas for b in announced(r.logs()))
        assert set(ends) == set(batches)
        assert max(ends.values()) == 1
    finally:
        proxy.close()
