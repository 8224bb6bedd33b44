"""One request budget and one concurrency cap, shared by every watch.

Every request the client makes passes :meth:`RequestBudget.slot` first. Requests are spaced at
least ``60 / per_minute`` seconds apart, and no more than a second's share of the budget goes out
in any 1.01 s, so that the server never counts more than its share in one second, even when one
request is late and the next on time. A 429 pauses everyone for the server's wait. When the
server's ``x-ratelimit-remaining-requests`` runs low, the remaining requests are spread over the
time until its reset, so that we slow down before the server has to say 429.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio

from .headers import RateLimit

#: No more than a second's share of the budget is sent in any window this long. The 10 ms over a
#: second cost 1% of the rate at most, and absorb the difference in how long requests take to
#: reach the server.
SHARE_WINDOW_SECONDS = 1.01


class RequestBudget:
    def __init__(
        self,
        per_minute: float,
        max_concurrency: int,
        *,
        reserve_fraction: float = 0.1,
        max_pause: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if per_minute <= 0 or max_concurrency < 1:
            raise ValueError("the budget needs per_minute > 0 and max_concurrency >= 1")
        self.spacing = 60.0 / per_minute
        self.reserve_fraction = reserve_fraction
        # However long a server asks everyone to wait, we look again after this: a misbehaving
        # or hostile server must not be able to stop all polling for a day.
        self.max_pause = max_pause
        self._clock = clock
        self._sleep = sleep
        self._next_free = float("-inf")
        # Uncontended, neither yields to the event loop: a poll pays for its own sleep only.
        self._lock = anyio.Lock(fast_acquire=True)
        self._max_concurrency = max_concurrency
        self._slots = anyio.Semaphore(max_concurrency, fast_acquire=True)
        self._slot = _Slot(self)
        # When the last second's share of requests went out.
        self._sent: deque[float] = deque(maxlen=math.ceil(per_minute / 60))
        self.granted = 0
        self.remaining: int | None = None  # the server's last word on remaining requests
        # Fleet mode (set_limits): slots taken out of use, and slots to take as they come back.
        self._held = 0
        self._debt = 0
        self._until = math.inf  # fleet mode: when the grant runs out
        self._rate_open = anyio.Event()
        self._rate_open.set()

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now."""
        return self._max_concurrency - self._slots.value - self._held

    def set_limits(
        self, per_minute: float, max_concurrency: int, *, for_seconds: float = math.inf
    ) -> None:
        """Spend at most this from now on (a fleet replica's grant): zero of either stops new
        requests until raised. Concurrency goes no higher than it was built with; a lower one
        takes effect as requests in flight finish. ``for_seconds``: the grant runs out then (a
        lease's end), when no request is sent any more until the limits are set again, however
        late whoever watches the lease gets to run."""
        self._until = self._clock() + for_seconds
        if per_minute > 0:
            self.spacing = 60.0 / per_minute
            size = math.ceil(per_minute / 60)
            if size != self._sent.maxlen:
                self._sent = deque(list(self._sent)[-size:], maxlen=size)
            self._rate_open.set()
        elif self._rate_open.is_set():
            self._rate_open = anyio.Event()
        hold = self._max_concurrency - max(0, min(max_concurrency, self._max_concurrency))
        change = hold - (self._held + self._debt)
        while change > 0 and self._slots.value > 0:
            self._slots.acquire_nowait()
            self._held += 1
            change -= 1
        if change > 0:
            self._debt += change
        while change < 0 and self._debt > 0:
            self._debt -= 1
            change += 1
        while change < 0:
            self._held -= 1
            self._slots.release()
            change += 1

    def _release_slot(self) -> None:
        if self._debt > 0:
            self._debt -= 1
            self._held += 1
        else:
            self._slots.release()

    def slot(self) -> _Slot:
        """``async with budget.slot():`` holds a concurrency slot and waits for the request's
        turn; send inside the block."""
        return self._slot

    async def _enter(self) -> None:
        while True:
            if not self._rate_open.is_set():
                await self._rate_open.wait()  # a fleet replica granted no rate (yet)
            # The slot first, the turn second: a turn taken while waiting for a slot would let
            # requests bunch up when slots free, breaking the spacing.
            await self._slots.acquire()
            try:
                async with self._lock:
                    wait = self.reserve(self._clock())
                    if wait > 0:
                        await self._sleep(wait)
                    # A turn's sleep may end late and the next one's on time, and requests
                    # reach the server a little sooner or later than sent: so a second's share
                    # goes out over a little more than a second, and the server never sees more
                    # in one second.
                    sent = self._sent
                    if len(sent) == sent.maxlen:
                        wait = sent[0] + SHARE_WINDOW_SECONDS - self._clock()
                        if wait > 0:
                            await self._sleep(wait)
                    now = self._clock()
                    if now > self._until and self._rate_open.is_set():
                        self._rate_open = anyio.Event()  # the grant ran out
                    if self._rate_open.is_set():
                        self._sent.append(now)
                        return
            except BaseException:
                self._release_slot()
                raise
            # The rate was taken away (set_limits, or its grant ran out) while this request
            # waited for its turn.
            self._release_slot()

    def reserve(self, now: float) -> float:
        """Take the next turn; return how long to wait for it."""
        start = max(now, self._next_free)
        self._next_free = start + self.spacing
        self.granted += 1
        return start - now

    def pause(self, seconds: float, now: float | None = None) -> None:
        """No request for ``seconds`` (the server's wait after a 429 applies to every watch)."""
        at = (self._clock() if now is None else now) + min(seconds, self.max_pause)
        self._next_free = max(self._next_free, at)

    def observe(self, rate_limit: RateLimit | None, now: float | None = None) -> None:
        """Slow down when the server says few requests remain before its window resets."""
        if rate_limit is None or rate_limit.remaining is None:
            return
        self.remaining = rate_limit.remaining
        limit, reset = rate_limit.limit, rate_limit.reset_seconds
        if limit is None or reset is None:
            if rate_limit.remaining == 0:
                self.pause(1.0, now)
            return
        # Requests that hold a slot beside the one just answered were sent (or given their
        # turn) before this count was made: what is left is theirs first.
        committed = max(0, self.in_flight - 1)
        remaining = max(0, rate_limit.remaining - committed)
        if remaining <= max(1.0, limit * self.reserve_fraction):
            # Spread what is left over what is left of the window.
            self.pause(reset / (remaining + 1), now)


class _Slot:
    """The async context manager :meth:`RequestBudget.slot` returns (one, shared: it keeps no
    state of its own)."""

    __slots__ = ("_budget",)

    def __init__(self, budget: RequestBudget) -> None:
        self._budget = budget

    async def __aenter__(self) -> None:
        await self._budget._enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._budget._release_slot()
