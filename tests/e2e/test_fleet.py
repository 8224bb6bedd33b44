"""Fleet mode with real processes: three replicas over one PostgreSQL schema and one simulator.

Watches registered through all three are shared out; each batch is exported by one replica; a
replica killed with SIGKILL has its watches taken over within two leases, one sent SIGTERM hands
over within two seconds; every batch's end is delivered, a repeat only under the same delivery
id; and the fleet's requests stay within the one budget.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any

import psycopg
import pytest
from fleet_support import exported as _exported
from fleet_support import fleet_url
from fleet_support import owners as _owners
from harness import (
    DaemonProcess,
    SimulatorProcess,
    WebhookReceiver,
    announced,
    wait_for,
)

from watcher.fleet.keeper import KeeperSettings

pytestmark = pytest.mark.e2e
__all__ = ["fleet_url"]  # the fixture, used by name

VS = "vs_fleet"
TOKEN = "fleet-control-token-1234"
#: Registered through the three replicas; fewer with BATCH_WATCHER_FLEET_WATCHES for a quick run.
WATCHES = int(os.environ.get("BATCH_WATCHER_FLEET_WATCHES", "3000"))
LEASE = 2.0
RATE = 6000  # a minute, for the whole fleet: 100 a second
#: The keeper's default: what a replica may hold over its fair share before it gives back.
RELEASE_SLACK = next(f.default for f in fields(KeeperSettings) if f.name == "release_slack")
#: Clients registering at once, spread over the replicas.
REGISTERING = 12


def test_three_replicas_share_fail_over_and_deliver_once(
    fleet_url: str,
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """Three replicas share the watches registered through all of them, each batch exported by
    exactly one; kill -9 of one moves its watches within two leases, SIGTERM of another within
    two seconds; no watch is lost, each end is announced once and delivered under one id, and
    no second sees more requests than the fleet's budget."""
    started = time.monotonic()
    sim = simulator_factory("--scenario", "empty")
    batches = [f"vsfb_{n:04d}" for n in range(WATCHES)]
    # Registering takes a while: the first batches end once all are shared out, the last
    # after the kill and the SIGTERM.
    base = 15 + WATCHES // 40
    specs = [
        {
            "vector_store_id": VS,
            "batch_id": batch_id,
            "total_files": 10,
            "duration_seconds": base + (n % 30),
            "failed_files": n % 2,
        }
        for n, batch_id in enumerate(batches)
    ]
    with ThreadPoolExecutor(REGISTERING) as pool:
        list(pool.map(lambda spec: sim.control("POST", "batches", spec), specs))
    with WebhookReceiver() as hook:
        config: dict[str, Any] = {
            "api": {"base_url": sim.url, "max_requests_per_minute": RATE, "max_concurrency": 6},
            "poll": {"interval_seconds": 2.0, "min_interval_seconds": 0.5},
            "state": {"url": fleet_url, "lease_seconds": LEASE},
            "notify": {"webhook_url": hook.url},
        }
        replicas = [
            daemon_factory(
                config,
                env={"BATCH_WATCHER_REPLICA_ID": f"r{i}", "BATCH_WATCHER_CONTROL_TOKEN": TOKEN},
                name=f"r{i}",
            )
            for i in (1, 2, 3)
        ]

        def register(n: int) -> int:
            response = replicas[n % 3].request(
                "POST",
                "/v1/watches",
                token=TOKEN,
                json={"vector_store_id": VS, "batch_id": batches[n]},
                timeout=30,
            )
            assert response.status_code == 201, response.text
            return response.status_code

        registering = time.monotonic()
        with ThreadPoolExecutor(REGISTERING) as pool:
            assert len(list(pool.map(register, range(WATCHES)))) == WATCHES
        registered = time.monotonic() - registering

        share = math.ceil(WATCHES / 3)
        # A replica gives back what it holds over its share only past a slack (2% of a share):
        # after a lease lapsed under load, the shares settle within it, not to the watch.
        margin = max(1, math.ceil(share * RELEASE_SLACK))

        def shared() -> bool:
            owners = _owners(fleet_url)
            fair = all(owners[r] <= share + margin for r in ("r1", "r2", "r3"))
            return fair and owners[None] == 0 and owners.total() == WATCHES

        wait_for(shared, timeout=60, what="every watch owned, a fair share by each")

        def once_each() -> bool:
            # A hand-over (a share given back, claimed by another at its next tick) may show a
            # batch on none for a moment: at steady state each is on exactly one.
            exported = _exported(replicas)
            return set(exported) == set(batches) and set(exported.values()) == {1}

        wait_for(once_each, timeout=30, what="each batch exported by exactly one replica")

        replicas[0].kill9()
        killed = time.monotonic()
        wait_for(
            lambda: _owners(fleet_url)["r1"] == 0, timeout=4 * LEASE, what="r1's watches moved"
        )
        takeover = time.monotonic() - killed
        assert takeover <= 2 * LEASE, f"took {takeover:.1f}s"
        assert sum(_owners(fleet_url).values()) == WATCHES

        replicas[1].signal(signal.SIGTERM)
        stopped = time.monotonic()
        wait_for(lambda: _owners(fleet_url) == Counter({"r3": WATCHES}), timeout=10)
        handover = time.monotonic() - stopped
        assert handover <= 2.0, f"took {handover:.1f}s"
        assert replicas[1].proc.wait(15) == 0

        last = replicas[2]
        last.wait_until(lambda: last.metric("batch_watcher_owned_watches") == WATCHES, timeout=10)

        def all_delivered() -> bool:
            return {d.json["batch_id"] for d in hook.received()} == set(batches)

        # One replica left, at the fleet's 100 requests a second, sees every end in time.
        last.wait_until(all_delivered, timeout=120 + WATCHES / 20, what="every end delivered")

    ids_by_batch: dict[str, set[str]] = defaultdict(set)
    for delivery in hook.received():
        ids_by_batch[delivery.json["batch_id"]].add(delivery.headers["webhook-id"])
    assert all(len(ids) == 1 for ids in ids_by_batch.values()), "a repeat under a new id"
    # Each replica announces an end at most once, and every end is announced. On a starved
    # machine (beside stress-ng --cpu 2 and another suite) two replicas were seen to announce
    # the same end, under one delivery id, which the contract allows; it is a known gap (a
    # repeat should only follow a crash), counted in the figures printed below.
    ends = Counter(b for r in replicas for b in announced(r.logs()))
    assert set(ends) == set(batches)
    for replica in replicas:
        mine = Counter(announced(replica.logs()))
        assert max(mine.values(), default=1) == 1, [b for b, n in mine.items() if n > 1]
    repeats = sorted(b for b, n in ends.items() if n > 1)
    assert all(len(ids_by_batch[b]) == 1 for b in repeats), "a repeat under a new id"
    with psycopg.connect(fleet_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*), count(result) FROM watches").fetchone()
    assert row == (WATCHES, WATCHES)
    busiest = sim.stats()["max_requests_per_second"]
    assert busiest <= RATE / 60
    print(  # the figures docs/scaling.md quotes, with -s
        f"fleet: {WATCHES} watches registered in {registered:.1f}s, takeover after kill -9 "
        f"{takeover:.2f}s (lease {LEASE}s), handover after SIGTERM {handover:.2f}s, busiest "
        f"second {busiest} requests, ends announced by two replicas {len(repeats)}, whole test "
        f"{time.monotonic() - started:.0f}s"
    )
