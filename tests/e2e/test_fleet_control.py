"""Fleet mode with real processes: any replica answers the control API and the pages for the
whole fleet.

Two replicas over one PostgreSQL schema: each lists every watch with its owner and lease, shows
another's watch on its pages, deletes a watch another owns (which the owner then stops polling
and exporting), and registers a watch that only the replica that claims it polls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fleet_support import exported, exports, fleet_url, owner_of, owners
from harness import DaemonProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.e2e
__all__ = ["fleet_url"]  # the fixture, used by name

VS = "vs_fleetapi"
TOKEN = "fleet-control-token-5678"
LEASE = 3.0


def _polls(sim: SimulatorProcess, batch_id: str) -> int:
    return sum(sim.stats()["by_batch"].get(batch_id, {}).values())


def _listed(replica: DaemonProcess) -> dict[str, dict[str, Any]]:
    response = replica.request("GET", "/v1/watches", token=TOKEN)
    response.raise_for_status()
    return {w["batch_id"]: w for w in response.json()["watches"]}


def test_any_replica_answers_for_the_whole_fleet(
    fleet_url: str,
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """Each replica lists every watch of the fleet with its owner and lease (on the API, the
    status page, its filters and pages, and a batch's page); a DELETE on one of a watch the
    other owns removes it from the fleet, and the owner stops polling and exporting it; a
    configured watch answers 409 and an unknown one 404 on either; a POST of a watch another
    replica owns is not polled by the one asked, and a new one is polled by its claimer at
    once."""
    sim = simulator_factory("--scenario", "empty")
    batches = [f"vsfb_api{n:02d}" for n in range(20)]
    configured = "vsfb_conf"
    for batch_id in [*batches, configured, "vsfb_new"]:
        spec = {"total_files": 10, "duration_seconds": 900}
        sim.control("POST", "batches", {"vector_store_id": VS, "batch_id": batch_id, **spec})
    config: dict[str, Any] = {
        "api": {"base_url": sim.url, "max_requests_per_minute": 1200, "max_concurrency": 4},
        "poll": {"interval_seconds": 1.0, "min_interval_seconds": 0.5, "adaptive": False},
        "state": {"url": fleet_url, "lease_seconds": LEASE},
        "watch": [{"vector_store_id": VS, "batch_id": configured}],
    }
    replicas = [
        daemon_factory(
            config,
            env={"BATCH_WATCHER_REPLICA_ID": f"r{i}", "BATCH_WATCHER_CONTROL_TOKEN": TOKEN},
            name=f"r{i}",
        )
        for i in (1, 2)
    ]
    r1, r2 = replicas
    for batch_id in batches:  # all through r1: the fleet then shares them out
        response = r1.request(
            "POST", "/v1/watches", token=TOKEN, json={"vector_store_id": VS, "batch_id": batch_id}
        )
        assert response.status_code == 201, response.text
    total = len(batches) + 1

    def shared() -> bool:
        held = owners(fleet_url)
        return held[None] == 0 and held["r1"] >= 5 and held["r2"] >= 5 and held.total() == total

    wait_for(shared, timeout=30, what="the watches shared between both replicas")

    # Every replica lists every watch, each with its owner, as the database says.
    for replica in replicas:

        def everything(replica: DaemonProcess = replica) -> bool:
            listed = _listed(replica)
            return set(listed) == {*batches, configured} and all(
                w["lease"] == "owned" and w["owner"] == owner_of(fleet_url, b)
                for b, w in listed.items()
            )

        wait_for(everything, timeout=15, what=f"{replica.url} listing the whole fleet")
    theirs = next(b for b in batches if owner_of(fleet_url, b) == "r1")
    one = r2.request("GET", f"/v1/watches/{VS}/{theirs}", token=TOKEN)
    assert one.status_code == 200
    assert (one.json()["owner"], one.json()["lease"]) == ("r1", "owned")

    # The status page on r2 shows r1's watches too, with their owner; paging still works.
    page = r2.request("GET", "/", params={"per_page": 5})
    assert page.status_code == 200
    assert f"rows 1–5 of {total}" in page.text
    assert 'data-owner="r1"' in page.text or 'data-owner="r2"' in page.text
    everyone = r2.request("GET", "/", params={"per_page": 500}).text
    assert everyone.count('data-owner="r1"') == owners(fleet_url)["r1"]
    assert everyone.count('data-owner="r2"') == owners(fleet_url)["r2"]
    detail = r2.request("GET", f"/batches/{VS}/{theirs}")
    assert detail.status_code == 200
    assert 'id="owner" data-owner="r1" data-lease="owned"' in detail.text

    # DELETE on r2 of a watch r1 owns: gone from the fleet; r1 stops polling and exporting it.
    assert exports(r1, theirs)
    gone = r2.request("DELETE", f"/v1/watches/{VS}/{theirs}", token=TOKEN)
    assert gone.status_code == 204, gone.text
    assert owner_of(fleet_url, theirs) is None
    r1.wait_until(lambda: not exports(r1, theirs), timeout=2 * LEASE, what="r1 forgets it")
    polled = _polls(sim, theirs)
    others = sum(_polls(sim, b) for b in batches if b != theirs)
    wait_for(lambda: sum(_polls(sim, b) for b in batches if b != theirs) >= others + 40)
    assert _polls(sim, theirs) <= polled + 1  # one request may have been under way
    assert owner_of(fleet_url, theirs) is None, "written back by its old owner"
    for replica in replicas:
        assert replica.request("GET", f"/v1/watches/{VS}/{theirs}", token=TOKEN).status_code == 404
        missing = replica.request("DELETE", f"/v1/watches/{VS}/{theirs}", token=TOKEN)
        assert missing.status_code == 404
        kept = replica.request("DELETE", f"/v1/watches/{VS}/{configured}", token=TOKEN)
        assert kept.status_code == 409
        assert theirs not in _listed(replica)

    # A POST on r1 of a watch r2 owns is answered from the fleet, and not polled by r1.
    mine = next(b for b in batches if owner_of(fleet_url, b) == "r2")
    again = r1.request(
        "POST", "/v1/watches", token=TOKEN, json={"vector_store_id": VS, "batch_id": mine}
    )
    assert again.status_code == 200
    assert again.json()["owner"] == "r2"
    assert not exports(r1, mine)

    # A new watch is polled at once by whichever replica claims it (the one asked, here).
    new = r2.request(
        "POST", "/v1/watches", token=TOKEN, json={"vector_store_id": VS, "batch_id": "vsfb_new"}
    )
    assert new.status_code == 201
    assert new.json()["owner"] == "r2"
    wait_for(lambda: _polls(sim, "vsfb_new") > 0, timeout=5, what="vsfb_new polled")

    def once_each() -> bool:
        seen = exported(replicas)
        return set(seen) == ({*batches, configured, "vsfb_new"} - {theirs}) and set(
            seen.values()
        ) == {1}

    wait_for(once_each, timeout=15, what="each batch exported by exactly one replica")


def test_any_replica_answers_for_the_fleets_store_watches(
    fleet_url: str,
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """A store watch registered on one replica is listed, answered and shown (its page, with
    its owner) by the other, polled by its claimer only, and deleted from the fleet by the
    replica that does not own it, after which its owner stops exporting it."""
    sim = simulator_factory("--scenario", "empty")
    store = "vs_fleetstore"
    sim.control("POST", "stores", {"vector_store_id": store, "name": 'Docs "fleet" <b>'})
    sim.control(
        "POST",
        "batches",
        {
            "vector_store_id": store,
            "batch_id": "vsfb_s1",
            "total_files": 10,
            "duration_seconds": 1.0,
            "failed_files": 1,
        },
    )
    config: dict[str, Any] = {
        "api": {"base_url": sim.url, "max_requests_per_minute": 600, "max_concurrency": 2},
        "poll": {"interval_seconds": 0.5, "min_interval_seconds": 0.2},
        "state": {"url": fleet_url, "lease_seconds": LEASE},
    }
    r1, r2 = (
        daemon_factory(
            config,
            env={"BATCH_WATCHER_REPLICA_ID": f"r{i}", "BATCH_WATCHER_CONTROL_TOKEN": TOKEN},
            name=f"r{i}",
        )
        for i in (1, 2)
    )
    added = r1.request("POST", "/v1/stores", token=TOKEN, json={"vector_store_id": store})
    assert added.status_code == 201, added.text
    assert added.json()["owner"] == "r1"
    again = r2.request("POST", "/v1/stores", token=TOKEN, json={"vector_store_id": store})
    assert again.status_code == 200, again.text
    assert again.json()["owner"] == "r1"

    def listed_on_r2() -> bool:
        response = r2.request("GET", "/v1/stores", token=TOKEN)
        stores = {s["vector_store_id"]: s for s in response.json()["stores"]}
        return store in stores and (stores[store]["owner"], stores[store]["lease"]) == (
            "r1",
            "owned",
        )

    wait_for(listed_on_r2, timeout=15, what="r2 listing r1's store watch")
    one = r2.request("GET", f"/v1/stores/{store}", token=TOKEN)
    assert one.status_code == 200
    assert one.json()["owner"] == "r1"
    page = r2.request("GET", f"/stores/{store}")
    assert page.status_code == 200
    assert "r1 (owned)" in page.text
    assert r2.request("GET", "/stores/vs_nobody").status_code == 404

    def polled_by_r1() -> bool:
        return r1.metric("openai_vector_store_files", vector_store_id=store, status="failed") == 1

    r1.wait_until(polled_by_r1, what="r1 polling the store")
    assert r2.metric("openai_vector_store_files", vector_store_id=store, status="failed") is None

    gone = r2.request("DELETE", f"/v1/stores/{store}", token=TOKEN)
    assert gone.status_code == 204, gone.text
    assert owner_of(fleet_url, "") is None  # a store watch's row: batch_id ""
    r1.wait_until(
        lambda: (
            r1.metric("openai_vector_store_files", vector_store_id=store, status="failed") is None
        ),
        timeout=2 * LEASE + 5,
        what="r1 forgetting the deleted store",
    )
    for replica in (r1, r2):
        assert replica.request("GET", f"/v1/stores/{store}", token=TOKEN).status_code == 404
        assert replica.request("DELETE", f"/v1/stores/{store}", token=TOKEN).status_code == 404
