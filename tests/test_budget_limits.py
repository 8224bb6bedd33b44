"""The request budget's limits changed at run time (a fleet replica's grants)."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from test_budget import FakeClock

from watcher.api.budget import RequestBudget


async def _settle() -> None:
    for _ in range(10):
        await anyio.lowlevel.checkpoint()


async def test_a_lower_rate_spaces_turns_further() -> None:
    """After set_limits(60, …) turns come a second apart instead of a tenth."""
    budget = RequestBudget(600, 4)
    assert budget.reserve(1000.0) == 0.0
    assert budget.reserve(1000.0) == pytest.approx(0.1)
    budget.set_limits(60, 4)
    assert budget.reserve(1000.0) == pytest.approx(0.2)  # the turn already given stays
    assert budget.reserve(1000.0) == pytest.approx(1.2)


async def test_a_zero_rate_stops_requests_until_raised() -> None:
    """With no rate granted, a request waits (holding no slot); raising the rate lets it go."""
    budget = RequestBudget(600, 2)
    budget.set_limits(0, 2)
    sent = anyio.Event()

    async def request() -> None:
        async with budget.slot():
            sent.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await _settle()
        assert not sent.is_set()
        assert budget.in_flight == 0
        budget.set_limits(600, 2)
        with anyio.fail_after(2):
            await sent.wait()


async def test_lower_concurrency_takes_effect_as_requests_finish() -> None:
    """Lowering concurrency below what is in flight lets those finish, then holds the slots
    back; raising it gives them back."""
    clock = FakeClock()
    budget = RequestBudget(60_000, 3, clock=clock, sleep=clock.sleep)
    inside = 0
    most = 0
    release = anyio.Event()

    async def request() -> None:
        nonlocal inside, most
        async with budget.slot():
            inside += 1
            most = max(most, inside)
            await release.wait()
            inside -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(request)
        await _settle()
        assert budget.in_flight == 3
        budget.set_limits(60_000, 1)
        release.set()
        await _settle()
        assert budget.in_flight == 0
        release = anyio.Event()
        most = 0
        for _ in range(3):
            tg.start_soon(request)
        await _settle()
        assert (inside, budget.in_flight) == (1, 1)
        budget.set_limits(60_000, 3)
        await _settle()
        assert (inside, budget.in_flight) == (3, 3)
        release.set()
    assert most == 3


async def test_concurrency_never_rises_above_what_the_budget_was_built_with() -> None:
    """A grant larger than the budget's own cap is held to the cap; zero stops every slot."""
    budget = RequestBudget(60_000, 2)
    budget.set_limits(60_000, 10)
    assert budget._slots.value == 2
    budget.set_limits(60_000, 0)
    assert budget._slots.value == 0
    budget.set_limits(60_000, 2)
    assert budget._slots.value == 2


async def test_a_grant_runs_out_at_its_end_whoever_watches_it() -> None:
    """A grant for some seconds (a lease) sends nothing after them, even if nobody took it
    away (the lease's watchdog may run late on a busy event loop); set again, it sends."""
    clock = FakeClock()
    budget = RequestBudget(60_000, 2, clock=clock, sleep=clock.sleep)
    budget.set_limits(60_000, 2, for_seconds=5.0)
    sent: list[float] = []

    async def request() -> None:
        async with budget.slot():
            sent.append(clock())

    await request()
    clock.advance(4.9)
    await request()
    assert len(sent) == 2
    clock.advance(0.2)  # past the grant's end
    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await _settle()
        assert len(sent) == 2
        assert budget.in_flight == 0  # waiting for a grant holds no slot
        budget.set_limits(60_000, 2, for_seconds=5.0)
        with anyio.fail_after(2):
            while len(sent) < 3:
                await anyio.lowlevel.checkpoint()
