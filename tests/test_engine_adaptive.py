"""Adaptive polling through the engine, on virtual time against the simulator's app in process:
the estimate of the time left reaches the schedule at the lifecycle's call of ``next_poll`` for
a good reply."""

from __future__ import annotations

import dataclasses

import anyio
import httpx
from factories import virtual_time, virtual_wall

from watcher.api.models import FileBatch, FileCounts
from watcher.api.settings import ClientSettings
from watcher.core import lifecycle
from watcher.core.engine import Engine
from watcher.core.lifecycle import Step, Wait
from watcher.core.policy import LEAD, NEAR, PollSettings, Progress, Reason
from watcher.core.settings import EngineSettings
from watcher.core.watch import Watch
from watcher.simulator import BatchSpec, Simulator, SimulatorApp

VS = "vs_adaptive"
INTERVAL = 5.0
POLL = PollSettings(interval=INTERVAL, slow_down=False)
SETTINGS = EngineSettings(poll=POLL, max_requests_per_minute=60_000, stall_after_seconds=None)
#: Batches on ingestion curves (changing rates, pauses, a slow tail), 2 to 10 minutes long.
BATCHES = [
    BatchSpec(VS, f"b{n}", total_files=files, duration_seconds=duration, curve_seed=n)
    for n, (files, duration) in enumerate([(120, 151.3), (400, 242.7), (900, 333.1), (2000, 601.9)])
]


async def _watch_all(sim: Simulator, prefix: str, adaptive: bool) -> Engine:
    """Watch a copy of every batch to its end with one engine, adaptive or not."""
    settings = dataclasses.replace(SETTINGS, poll=dataclasses.replace(POLL, adaptive=adaptive))
    engine = Engine.create(
        ClientSettings(base_url="http://simulator.test/v1", timeout_seconds=5.0),
        settings,
        transport=httpx.ASGITransport(SimulatorApp(sim)),
        wall=virtual_wall,
        clock=anyio.current_time,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        for spec in BATCHES:
            batch_id = prefix + spec.batch_id
            sim.add_batch(dataclasses.replace(spec, batch_id=batch_id))
            engine.add(VS, batch_id)
        with anyio.fail_after(3600):
            await engine.wait_idle()
        tg.cancel_scope.cancel()
    return engine


@virtual_time
async def test_adaptive_polling_takes_under_half_the_retrieves_and_sees_every_end() -> None:
    """The same batches watched adaptively and every interval: adaptively they take under half
    the retrieves, every end is seen within the interval, and no batch is polled after it."""
    sim = Simulator(clock=anyio.current_time, wall_clock=virtual_wall)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_all, sim, "adaptive_", True)
        tg.start_soon(_watch_all, sim, "fixed_", False)

    def retrieves(prefix: str) -> int:
        return sum(sim.stats.requests_for(prefix + s.batch_id, "retrieve") for s in BATCHES)

    assert retrieves("fixed_") >= sum(s.duration_seconds for s in BATCHES) / INTERVAL
    assert retrieves("adaptive_") < 0.5 * retrieves("fixed_")
    for spec in BATCHES:
        truth = sim.truth("adaptive_" + spec.batch_id, failed_files=False)
        assert truth["status"] == "completed"
        assert 0 <= truth["seen_terminal_at"] - truth["terminal_at"] <= INTERVAL
    assert sim.stats.retrieves_after_terminal == 0


def _reply(watch: Watch, completed: int, now: float, poll_after: float | None = None) -> Step:
    counts = FileCounts(in_progress=1000 - completed, completed=completed, total=1000)
    return lifecycle.replied(
        watch,
        FileBatch("b", VS, "in_progress", counts, created_at=0),
        poll_after=poll_after,
        now=now,
        wall=1_700_000_000.0 + now,
        settings=SETTINGS,
        random=lambda: 0.5,
    )


def test_each_good_reply_feeds_the_window_and_the_estimate_sets_the_wait() -> None:
    """A reply adds its count to the watch's window; with a rate, the wait is the estimate's
    (far: a share of the time left; near: NEAR · interval); the server's hint still wins."""
    watch = lifecycle.start(Watch.new(VS, "b", registered_at=1_700_000_000.0), now=0.0).watch
    first = _reply(watch, 0, now=0.0)
    assert first.action == Wait(INTERVAL, Reason.INTERVAL)  # no rate yet
    far = _reply(first.watch, 100, now=100.0)  # 1 file/s, 900 left, watched 100 s
    assert far.watch.window.points == (Progress(0.0, 0), Progress(100.0, 100))
    # Trusted 1.5 × 100 s ahead; the estimate goes to the scheduler too.
    assert far.action == Wait(LEAD * 150.0, Reason.ESTIMATE, remaining=150.0)
    near = _reply(far.watch, 998, now=998.0)
    assert isinstance(near.action, Wait)
    assert (near.action.delay, near.action.reason) == (NEAR * INTERVAL, Reason.ESTIMATE)
    hinted = _reply(far.watch, 998, now=998.0, poll_after=20.0)
    assert isinstance(hinted.action, Wait)
    assert (hinted.action.delay, hinted.action.reason) == (20.0, Reason.SERVER_HINT)
