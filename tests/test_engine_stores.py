"""Vector stores as watch targets: the real engine against the simulator's app in process, on
virtual time, next to batch watches on the same scheduler and budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from factories import virtual_time, virtual_wall

from watcher.api.settings import ClientSettings
from watcher.core.engine import Engine
from watcher.core.events import BatchFinished, Event, StoreFinished, StoreProgressed
from watcher.core.policy import PollSettings
from watcher.core.settings import EngineSettings
from watcher.core.states import Phase, State
from watcher.core.watch import STORE
from watcher.simulator import BatchSpec, Fault, FaultKind, Simulator, SimulatorApp, StoreSpec

VS = "vs_store"
FAST = EngineSettings(
    poll=PollSettings(interval=0.05, min_interval=0.01, max_interval=1.0),
    max_requests_per_minute=60_000,
    stall_after_seconds=None,
    deadline_seconds=5.0,
)


@pytest.fixture
def sim(logs: list[dict[str, Any]]) -> Simulator:
    return Simulator(clock=anyio.current_time, wall_clock=virtual_wall)


def populate(sim: Simulator) -> None:
    """A store of two batches (call it on the virtual clock)."""
    sim.add_store(StoreSpec(VS, name="Docs", expires_after_days=1))
    sim.add_batch(BatchSpec(VS, "vsfb_a", 10, 1.0, failed_files=2))
    sim.add_batch(BatchSpec(VS, "vsfb_b", 10, 2.0, failed_files=1))


@asynccontextmanager
async def engine_of(sim: Simulator, events: list[Event]) -> AsyncIterator[Engine]:
    engine = Engine.create(
        ClientSettings(base_url="http://simulator.test/v1", timeout_seconds=5.0),
        FAST,
        transport=httpx.ASGITransport(SimulatorApp(sim)),
        sinks=[events.append],
        wall=virtual_wall,
        clock=anyio.current_time,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        try:
            yield engine
        finally:
            tg.cancel_scope.cancel()


@virtual_time
async def test_watch_until_idle_ends_with_the_stores_failed_files(sim: Simulator) -> None:
    """A store watched until idle ends completed once both batches are done, with the failed
    files of both read from the store's own file list."""
    populate(sim)
    events: list[Event] = []
    async with engine_of(sim, events) as engine:
        engine.add(VS, STORE, until_idle=True)
        with anyio.fail_after(30):
            await engine.wait_idle()
    [finished] = [e for e in events if isinstance(e, StoreFinished)]
    result = finished.result
    assert result.status is State.COMPLETED
    assert result.file_counts is not None
    assert result.file_counts.in_progress == 0
    assert result.failed_files_listed == 3
    assert result.failed_files_complete
    assert {f.id.split("-")[1] for f in result.failed_files} == {"vsfb_a", "vsfb_b"}
    assert sim.stats.by_endpoint["list_store_files"] >= 1
    assert not [e for e in events if isinstance(e, BatchFinished)]


@virtual_time
async def test_the_daemon_keeps_watching_a_store_beside_its_batches(sim: Simulator) -> None:
    """A lasting store watch goes on after the store is idle, with no default deadline, while
    a batch of it on the same engine ends as a batch."""
    populate(sim)
    events: list[Event] = []
    async with engine_of(sim, events) as engine:
        engine.add(VS, STORE)
        engine.add(VS, "vsfb_a")
        with anyio.fail_after(60):
            while not [e for e in events if isinstance(e, BatchFinished)]:  # noqa: ASYNC110
                await anyio.sleep(0.1)
            await anyio.sleep(10)  # past the 5 s default deadline, which a store does not get
        store = engine.get(VS, STORE)
    assert store is not None
    assert store.phase is Phase.WATCHING
    assert store.deadline_at is None
    assert store.status == "completed"
    assert store.store is not None
    assert store.store.name == "Docs"
    assert store.store.expires_at is not None
    assert [e.batch_id for e in events if isinstance(e, BatchFinished)] == ["vsfb_a"]
    assert [e for e in events if isinstance(e, StoreProgressed)]


@virtual_time
async def test_a_store_that_expires_ends_expired(sim: Simulator) -> None:
    """A watched store that the server expires ends the watch as expired."""
    populate(sim)
    events: list[Event] = []
    async with engine_of(sim, events) as engine:
        engine.add(VS, STORE)
        with anyio.fail_after(30):
            while not [e for e in events if isinstance(e, StoreProgressed)]:  # noqa: ASYNC110
                await anyio.sleep(0.05)
            sim.expire_store(VS)
            await engine.wait_idle()
    [finished] = [e for e in events if isinstance(e, StoreFinished)]
    assert finished.result.status is State.EXPIRED


@virtual_time
async def test_store_polls_survive_server_errors(sim: Simulator) -> None:
    """Server errors on the store's retrieve are retried; the watch still ends as the store
    says."""
    sim.inject(Fault(FaultKind.SERVER_ERROR, times=3, status=502), VS)
    populate(sim)
    events: list[Event] = []
    async with engine_of(sim, events) as engine:
        engine.add(VS, STORE, until_idle=True)
        with anyio.fail_after(30):
            await engine.wait_idle()
    [finished] = [e for e in events if isinstance(e, StoreFinished)]
    assert finished.result.status is State.COMPLETED
    assert sim.stats.faults["server_error"] == 3
    assert sim.stats.requests_for(VS, "retrieve_store") >= 4
