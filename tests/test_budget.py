"""The shared request budget, with a fake clock."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from factories import FakeClock

from watcher.api.budget import SHARE_WINDOW_SECONDS, RequestBudget
from watcher.api.headers import RateLimit


def test_turns_are_spaced_by_the_budget() -> None:
    """At 120 requests a minute, turns come every 0.5 s, whatever the demand."""
    budget = RequestBudget(120, 4)
    waits = [budget.reserve(1000.0) for _ in range(4)]
    assert waits == [0.0, 0.5, 1.0, 1.5]


def test_idle_time_is_not_banked_as_a_burst() -> None:
    """After a long idle spell the next turns are spaced again, not fired all at once."""
    budget = RequestBudget(60, 4)
    budget.reserve(0.0)
    assert budget.reserve(100.0) == 0.0
    assert budget.reserve(100.0) == 1.0


def test_no_one_second_window_exceeds_the_rate() -> None:
    """Granted start times never put more than per_minute/60 requests in any second."""
    budget = RequestBudget(600, 8)
    starts = [1000.0 + budget.reserve(1000.0) for _ in range(200)]
    for i, t in enumerate(starts):
        in_window = sum(1 for u in starts[i:] if u < t + 1.0)
        assert in_window <= 10


def test_pause_holds_every_watch() -> None:
    """A pause (the server's 429 wait) delays the next turn for everyone."""
    budget = RequestBudget(600, 8)
    budget.pause(30.0, now=1000.0)
    assert budget.reserve(1000.0) == 30.0


def test_low_remaining_spreads_requests_over_the_reset_window() -> None:
    """When the server says few requests remain, the rest are spread until its reset."""
    budget = RequestBudget(6000, 8)
    budget.observe(RateLimit(limit=100, remaining=50, reset_seconds=10.0), now=1000.0)
    assert budget.reserve(1000.0) == 0.0  # plenty left: no slowing down
    budget.observe(RateLimit(limit=100, remaining=4, reset_seconds=10.0), now=1000.0)
    assert budget.reserve(1000.0) == pytest.approx(2.0)  # 10 s / (4 + 1)
    assert budget.remaining == 4


def test_zero_remaining_without_reset_pauses_a_second() -> None:
    """A bare 'remaining: 0' (no limit or reset header) still slows us down."""
    budget = RequestBudget(6000, 8)
    budget.observe(RateLimit(remaining=0), now=1000.0)
    assert budget.reserve(1000.0) == pytest.approx(1.0)


def test_invalid_budget_is_refused() -> None:
    """A budget of zero requests or zero concurrency is a programming error."""
    with pytest.raises(ValueError, match="per_minute"):
        RequestBudget(0, 1)


async def test_slot_sleeps_for_its_turn_and_caps_concurrency() -> None:
    """Concurrent slots sleep their turn on the injected clock, and never exceed the cap."""
    clock = FakeClock()
    budget = RequestBudget(60, 2, clock=clock, sleep=clock.sleep)
    inside = 0
    most = 0

    async def one() -> None:
        nonlocal inside, most
        async with budget.slot():
            inside += 1
            most = max(most, inside)
            await anyio.lowlevel.checkpoint()
            inside -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
    assert most <= 2
    assert budget.granted == 5
    # Five turns a second apart, and no second's share (here one) sent within 1.01 s.
    assert clock.now == pytest.approx(1000.0 + 4 * SHARE_WINDOW_SECONDS)


class LateClock(FakeClock):
    """A clock whose sleeps end late by turns: 4 ms late, then twice on time."""

    def __init__(self) -> None:
        super().__init__()
        self.late = [0.0, 0.0, 0.004]

    async def sleep(self, seconds: float) -> None:
        self.late.append(self.late.pop(0))
        await super().sleep(seconds + self.late[0])


async def test_late_turns_never_put_more_than_a_seconds_share_in_a_second() -> None:
    """When one turn's sleep ends late and the next ones on time, no window of 1.01 s holds
    more requests than the budget's share of a second."""
    clock = LateClock()
    budget = RequestBudget(12_000, 1, clock=clock, sleep=clock.sleep)
    sent: list[float] = []
    for _ in range(1000):
        async with budget.slot():
            sent.append(clock.now)
    window = SHARE_WINDOW_SECONDS
    most = max(
        sum(1 for t in sent[i : i + 201] if t < start + window) for i, start in enumerate(sent)
    )
    assert most <= 200


def test_pauses_are_capped() -> None:
    """Neither a 429's wait nor a far-off rate-limit reset holds every watch past max_pause."""
    budget = RequestBudget(600, 8, max_pause=300.0)
    budget.pause(86400.0, now=1000.0)
    assert budget.reserve(1000.0) == 300.0
    other = RequestBudget(600, 8, max_pause=300.0)
    other.observe(RateLimit(limit=100, remaining=0, reset_seconds=86400.0), now=1000.0)
    assert other.reserve(1000.0) == 300.0
