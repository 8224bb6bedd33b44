"""File names looked up once per id, bounded, through the client and the simulator's app."""

from __future__ import annotations

import httpx
import pytest

from watcher.api.client import APIClient
from watcher.api.settings import ClientSettings
from watcher.core.file_names import FileNames
from watcher.simulator import BatchSpec, Fault, FaultKind, Simulator, SimulatorApp, file_id

BATCH = "vsfb_names"
IDS = [file_id(BATCH, i) for i in range(4)]


@pytest.fixture
def sim() -> Simulator:
    sim = Simulator()
    sim.add_batch(BatchSpec("vs_names", BATCH, total_files=4, duration_seconds=1.0))
    return sim


def client(sim: Simulator) -> APIClient:
    settings = ClientSettings(base_url="http://simulator.test/v1")
    return APIClient(settings, transport=httpx.ASGITransport(SimulatorApp(sim)))


async def test_a_name_is_asked_for_once(sim: Simulator) -> None:
    """A second lookup of the same files is answered from the cache."""
    async with client(sim) as api:
        names = FileNames(api)
        first = await names.look_up(IDS[:2])
        again = await names.look_up(IDS[:2])
    assert first == again
    assert all(n.filename and n.bytes for n in first.values())
    assert sim.stats.by_endpoint["file"] == 2


async def test_the_cache_is_bounded(sim: Simulator) -> None:
    """Past its size the least recently used name is forgotten, and asked for again."""
    async with client(sim) as api:
        names = FileNames(api, max_entries=2)
        await names.look_up(IDS[:3])
        assert len(names) == 2
        await names.look_up(IDS[:1])
    assert sim.stats.by_endpoint["file"] == 4


async def test_a_file_not_found_keeps_its_id_and_says_why(sim: Simulator) -> None:
    """A deleted file is named ``None`` with the reason, and is not asked for again."""
    async with client(sim) as api:
        names = FileNames(api)
        [gone] = (await names.look_up(["file-deleted"])).values()
        await names.look_up(["file-deleted"])
    assert gone.filename is None
    assert gone.error is not None
    assert "not found" in gone.error
    assert sim.stats.by_endpoint["file"] == 1


async def test_a_429_stops_the_lookups_and_says_so(sim: Simulator) -> None:
    """After a 429 the rest are not asked for; each says why, and none is remembered."""
    sim.inject(Fault(FaultKind.RATE_LIMIT, endpoint="file", times=1))
    async with client(sim) as api:
        names = FileNames(api)
        found = await names.look_up(IDS)
    assert [n.filename for n in found.values()] == [None] * 4
    assert all(n.error and "not looked up" in n.error for n in list(found.values())[1:])
    assert sim.stats.by_endpoint["file"] == 1
    assert len(names) == 0


async def test_lookups_stop_after_three_failures_in_a_row(sim: Simulator) -> None:
    """A server without the Files API costs three lookups per call, not one per file."""
    async with client(sim) as api:
        names = FileNames(api)
        found = await names.look_up([f"file-gone-{i}" for i in range(10)])
    assert sim.stats.by_endpoint["file"] == 3
    rest = list(found.values())[3:]
    assert all(n.error and "the 3 lookups before it failed" in n.error for n in rest)
