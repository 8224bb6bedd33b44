"""The simulator's vector-store endpoints, over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from factories import FakeClock, loopback_client

from watcher.simulator import BatchSpec, Fault, FaultKind, Simulator, StoreSpec, serve_simulator

VS = "vs_docs"
DAY = 86400


@dataclass
class Served:
    sim: Simulator
    clock: FakeClock
    wall: FakeClock
    api: httpx.AsyncClient
    control: httpx.AsyncClient


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    clock, wall = FakeClock(), FakeClock(1000.0)
    sim = Simulator(clock=clock, wall_clock=wall)
    sim.add_store(StoreSpec(VS, name="Docs <main>", created_at=100, expires_after_days=7))
    sim.add_batch(BatchSpec(VS, "vsfb_a", 10, 10, failed_files=2, created_at=200))
    sim.add_batch(BatchSpec(VS, "vsfb_b", 20, 40, failed_files=4, created_at=300))
    sim.add_batch(BatchSpec("vs_other", "vsfb_c", 5, 5, created_at=400))
    async with (
        serve_simulator(sim) as base_url,
        loopback_client(base_url, timeout=5) as api,
        loopback_client(base_url.removesuffix("/v1"), timeout=5) as control,
    ):
        yield Served(sim, clock, wall, api, control)


async def _pages(api: httpx.AsyncClient, url: str, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    after: str | None = None
    while len(pages) < 50:
        query = dict(params, **({"after": after} if after else {}))
        body = (await api.get(url, params=query)).json()
        pages.append([item["id"] for item in body["data"]])
        if not body["has_more"]:
            break
        after = body["data"][-1]["id"]
    return pages


async def test_store_sums_its_batches_and_completes_with_them(served: Served) -> None:
    """A store's file_counts are its batches' summed, in_progress until every file is done."""
    first = (await served.api.get(f"/vector_stores/{VS}")).json()
    assert first["object"] == "vector_store"
    assert first["status"] == "in_progress"
    assert first["name"] == "Docs <main>"
    assert first["file_counts"] == {
        "in_progress": 30,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "total": 30,
    }
    assert first["usage_bytes"] == 0
    served.clock.advance(40)
    done = (await served.api.get(f"/vector_stores/{VS}")).json()
    assert done["status"] == "completed"
    assert done["file_counts"]["completed"] == 24
    assert done["file_counts"]["failed"] == 6
    assert done["usage_bytes"] > 0
    assert done["last_active_at"] == 300
    assert done["expires_after"] == {"anchor": "last_active_at", "days": 7}
    assert done["expires_at"] == 300 + 7 * DAY


async def test_store_expires_by_its_clock_and_by_the_control_plane(served: Served) -> None:
    """A store past its expires_at says expired, and so does one expired through /_sim/."""
    served.wall.now = 300 + 7 * DAY
    assert (await served.api.get(f"/vector_stores/{VS}")).json()["status"] == "expired"
    other = (await served.api.get("/vector_stores/vs_other")).json()
    assert other["status"] == "in_progress"
    assert other["expires_at"] is None
    reply = await served.control.post("/_sim/stores/vs_other/expire")
    assert reply.status_code == 200
    assert (await served.api.get("/vector_stores/vs_other")).json()["status"] == "expired"


async def test_listing_stores_pages_with_after(served: Served) -> None:
    """GET /vector_stores walks every store with after cursors, limit 1 per page."""
    pages = await _pages(served.api, "/vector_stores", limit=1, order="asc")
    assert pages == [[VS], ["vs_other"]]
    too_many = await served.api.get("/vector_stores", params={"limit": 101})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "limit"


async def test_store_files_list_every_batch_and_filter(served: Served) -> None:
    """The store's files are its batches' files; filter=failed gives exactly the failed ones."""
    served.clock.advance(40)
    everything = await _pages(served.api, f"/vector_stores/{VS}/files", limit=100)
    assert sum(map(len, everything)) == 30
    failed_pages = await _pages(
        served.api, f"/vector_stores/{VS}/files", filter="failed", limit=4, order="asc"
    )
    failed = [i for page in failed_pages for i in page]
    assert len(failed) == 6
    assert len(failed_pages) == 2
    assert {i.split("-")[1] for i in failed} == {"vsfb_a", "vsfb_b"}
    body = (await served.api.get(f"/vector_stores/{VS}/files", params={"filter": "failed"})).json()
    assert all(f["status"] == "failed" and f["last_error"]["code"] for f in body["data"])
    bad = await served.api.get(f"/vector_stores/{VS}/files", params={"filter": "bogus"})
    assert bad.status_code == 400


async def test_unknown_store_is_404_and_faults_fire_per_store(served: Served) -> None:
    """An unknown store is a 404; a fault armed for a store fires on that store only."""
    missing = await served.api.get("/vector_stores/vs_nope")
    assert missing.status_code == 404
    assert "vs_nope" in missing.json()["error"]["message"]
    served.sim.inject(Fault(FaultKind.SERVER_ERROR, times=1, status=503), VS)
    assert (await served.api.get("/vector_stores/vs_other")).status_code == 200
    assert (await served.api.get(f"/vector_stores/{VS}")).status_code == 503
    assert (await served.api.get(f"/vector_stores/{VS}")).status_code == 200
    served.sim.inject(Fault(FaultKind.IGNORE_FILTER, times=1), VS)
    served.clock.advance(40)
    ignored = await served.api.get(
        f"/vector_stores/{VS}/files", params={"filter": "failed", "limit": 100}
    )
    assert len(ignored.json()["data"]) == 30
