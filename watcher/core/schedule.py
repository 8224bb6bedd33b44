"""When each watch is due, and which due watch goes first.

:class:`DueTimes` keeps one heap of due times for all watches: a watch costs an :class:`Entry`
and a heap item, not a task. Rescheduling pushes a new item and bumps the entry's ``seq``; the
old item stays in the heap and is dropped when it comes up.

:class:`Ready` holds the watches whose time has come while they wait for a worker and the
budget's turn. When the budget is the limit, the next request goes to the watch most likely to
have ended (:func:`~watcher.core.policy.ended_likelihood`), so a large fleet under a tight budget
notices ends sooner; watches never polled go first. The order is worked out once a second, not
per request: at 10,000 waiting watches that is 10,000 estimates a second, not a million.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from .policy import ended_likelihood
from .states import Phase
from .watch import Watch


class Entry:
    """A watch as the engine holds it: the latest record, and its place in the schedule."""

    __slots__ = ("busy", "due", "polled_at", "ready", "remaining", "removed", "seq", "watch")

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.due = 0.0
        self.seq = 0
        self.busy = False  # a worker is taking its turn
        self.removed = False
        self.polled_at: float | None = None  # the last good reply, on the monotonic clock
        self.remaining: float | None = None  # the estimate of the time left made then
        self.ready = -1  # the seq it waits under in Ready (-1: not there)

    @property
    def scheduled(self) -> bool:
        return not self.removed and self.watch.phase is not Phase.FINISHED


class DueTimes:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Entry]] = []
        self._seq = 0

    def put(self, entry: Entry, delay: float) -> bool:
        """Make ``entry`` due in ``delay`` seconds; True if it is now the first due."""
        self._seq += 1
        entry.seq = self._seq
        entry.due = self._clock() + delay
        heapq.heappush(self._heap, (entry.due, self._seq, entry))
        return self._heap[0][2] is entry

    def pop(self, now: float) -> Entry | None:
        """The next entry due by ``now`` that is still scheduled, or None."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, entry = heapq.heappop(heap)
            if entry.seq == seq and entry.scheduled:
                return entry
        return None

    def until_next(self, now: float, most: float) -> float:
        """Seconds until the next due time, at most ``most``."""
        return min(self._heap[0][0] - now, most) if self._heap else most


#: How often the waiting watches are ranked again.
RANK_EVERY_SECONDS = 1.0


class Ready:
    """Due watches waiting for a worker and the budget. Each is in the lists at most once, with
    the seq it became due under in :attr:`Entry.ready` (no tuple a waiting watch: at 10,000
    watches under a tight budget, all of them wait)."""

    def __init__(self, interval: Callable[[Entry], float]) -> None:
        self._interval = interval
        self._ranked: list[Entry] = []  # the best last
        self._fresh: list[Entry] = []
        self._ranked_at = float("-inf")

    def __len__(self) -> int:
        return len(self._ranked) + len(self._fresh)

    def add(self, entry: Entry) -> None:
        if entry.ready < 0:
            self._fresh.append(entry)
        entry.ready = entry.seq  # already waiting under an older seq: now under this one

    def take(self, now: float) -> Entry | None:
        """The waiting watch to serve next, or None when none waits."""
        if not self._ranked or now - self._ranked_at >= RANK_EVERY_SECONDS:
            self._rank(now)
        while self._ranked:
            entry = self._ranked.pop()
            current = entry.ready == entry.seq and entry.scheduled
            entry.ready = -1
            if current:
                return entry
        return None

    def _rank(self, now: float) -> None:
        waiting = []
        for e in (*self._ranked, *self._fresh):
            if e.ready == e.seq and e.scheduled:
                waiting.append(e)
            else:
                e.ready = -1  # rescheduled or gone meanwhile: no longer waiting here
        self._fresh = []
        self._ranked_at = now
        if len(waiting) > 1:
            waiting.sort(key=lambda e: self.likelihood(e, now))
        self._ranked = waiting

    def likelihood(self, entry: Entry, now: float) -> float:
        """How likely the watch's batch has ended since its last good reply (above 1: never
        polled, so first)."""
        if entry.polled_at is None:
            return 2.0
        return ended_likelihood(entry.remaining, now - entry.polled_at, self._interval(entry))
