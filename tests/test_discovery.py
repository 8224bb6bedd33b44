"""Store discovery: every page of GET /vector_stores, again every interval, on virtual time
against the simulator's app in process."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
from factories import virtual_time, virtual_wall

from watcher.api.settings import ClientSettings
from watcher.core.engine import Engine
from watcher.core.policy import PollSettings
from watcher.core.settings import EngineSettings
from watcher.core.watch import STORE
from watcher.daemon.discovery import discover_once, discover_stores
from watcher.simulator import Fault, FaultKind, Simulator, SimulatorApp, StoreSpec

SETTINGS = EngineSettings(
    poll=PollSettings(interval=1.0, min_interval=0.1, max_interval=10.0),
    max_requests_per_minute=60_000,
    max_watches=200,
)


def engine_of(sim: Simulator) -> Engine:
    return Engine.create(
        ClientSettings(base_url="http://simulator.test/v1", timeout_seconds=5.0),
        SETTINGS,
        transport=httpx.ASGITransport(SimulatorApp(sim)),
        wall=virtual_wall,
    )


@virtual_time
async def test_every_listed_store_is_watched_once(logs: list[dict[str, Any]]) -> None:
    """Stores over two pages are all watched; a second listing adds none again."""
    sim = Simulator(clock=anyio.current_time, wall_clock=virtual_wall)
    for n in range(105):
        sim.add_store(StoreSpec(f"vs_{n:03d}"))
    engine = engine_of(sim)
    assert await discover_once(engine) == 105
    assert {w.vector_store_id for w in engine.watches()} == {f"vs_{n:03d}" for n in range(105)}
    assert all(w.is_store for w in engine.watches())
    assert sim.stats.by_endpoint["list_stores"] == 2
    assert await discover_once(engine) == 0
    assert len(engine) == 105
    await engine.client.aclose()


@virtual_time
async def test_discovery_runs_again_every_interval_and_survives_errors(
    logs: list[dict[str, Any]],
) -> None:
    """A failed listing is logged and tried again; a store created later is found at the next
    interval."""
    sim = Simulator(clock=anyio.current_time, wall_clock=virtual_wall)
    sim.add_store(StoreSpec("vs_first"))
    sim.inject(Fault(FaultKind.SERVER_ERROR, times=1, status=500, endpoint="list_stores"))
    engine = engine_of(sim)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: discover_stores(engine, interval=300.0))
        await anyio.sleep(1)
        assert engine.get("vs_first", STORE) is None  # the first listing failed
        await anyio.sleep(300)
        assert engine.get("vs_first", STORE) is not None
        sim.add_store(StoreSpec("vs_later"))
        await anyio.sleep(300)
        assert engine.get("vs_later", STORE) is not None
        tg.cancel_scope.cancel()
    assert [e["event"] for e in logs].count("store_discovery_failed") == 1
    await engine.client.aclose()
