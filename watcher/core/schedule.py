"""When each watch is due: one heap of due times for all of them.

A watch costs an :class:`Entry` and a heap item, not a task. Rescheduling pushes a new item and
bumps the entry's ``seq``; the old item stays in the heap and is dropped when it comes up.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from .states import Phase
from .watch import Watch


class Entry:
    """A watch as the engine holds it: the latest record, and its place in the schedule."""

    __slots__ = ("busy", "due", "removed", "seq", "watch")

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.due = 0.0
        self.seq = 0
        self.busy = False  # a worker is taking its turn
        self.removed = False


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
            if entry.seq == seq and not entry.removed and entry.watch.phase is not Phase.FINISHED:
                return entry
        return None

    def until_next(self, now: float, most: float) -> float:
        """Seconds until the next due time, at most ``most``."""
        return min(self._heap[0][0] - now, most) if self._heap else most
