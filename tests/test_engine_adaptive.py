"""Adaptive polling through the engine, against the simulator over loopback HTTP: the estimate
of the time left reaches the schedule at the engine's one call of ``next_poll`` for an OK reply."""

from __future__ import annotations

import dataclasses

import anyio

from watcher.api.client import ClientSettings
from watcher.core.engine import Engine, EngineSettings
from watcher.core.policy import PollSettings
from watcher.simulator import BatchSpec, Simulator, serve_simulator

VS = "vs_adaptive"
POLL = PollSettings(interval=0.1, min_interval=0.01, max_interval=1.0, slow_down=False)
SETTINGS = EngineSettings(poll=POLL, max_requests_per_minute=60_000, stall_after_seconds=None)


async def _retrieves(sim: Simulator, base_url: str, batch_id: str, adaptive: bool) -> int:
    """Watch one batch to its end with adaptive polling on or off; the retrieves it took."""
    settings = dataclasses.replace(SETTINGS, poll=dataclasses.replace(POLL, adaptive=adaptive))
    engine = Engine(ClientSettings(base_url=base_url, timeout_seconds=5.0), settings)
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        engine.add(VS, batch_id)
        with anyio.fail_after(30):
            await engine.wait_idle()
        tg.cancel_scope.cancel()
    watch = engine.get(VS, batch_id)
    assert watch is not None
    assert watch.result is not None
    assert watch.result.status == "completed"
    return sim.stats.requests_for(batch_id, "retrieve")


async def test_a_steady_batch_is_polled_far_less_often_with_adaptive_polling() -> None:
    """Two identical steady batches, one watched adaptively: it takes under half the retrieves
    of polling every interval, and its end is still seen."""
    sim = Simulator(
        [
            BatchSpec(VS, "fixed", total_files=300, duration_seconds=4.0),
            BatchSpec(VS, "adaptive", total_files=300, duration_seconds=4.0),
        ]
    )
    async with serve_simulator(sim) as base_url, anyio.create_task_group() as tg:
        counts: dict[str, int] = {}

        async def watch(batch_id: str, adaptive: bool) -> None:
            counts[batch_id] = await _retrieves(sim, base_url, batch_id, adaptive)

        tg.start_soon(watch, "fixed", False)
        tg.start_soon(watch, "adaptive", True)
    assert counts["fixed"] >= 20  # about 4 s / 0.1 s
    assert counts["adaptive"] < 0.5 * counts["fixed"]
    assert sim.stats.retrieves_after_terminal == 0
