"""What the pages show of a batch's past: its progress over time.

An engine sink, kept in memory only (a restart starts a new history). Each watch keeps at most
:data:`MAX_POINTS` points of (wall-clock time, files finished): when they are all used, every
other point is dropped, so the history always spans the whole watch at a coarser grain. Times are
kept to the second.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable

from ..core.events import BatchFinished, BatchProgressed, Event, WatchRemoved
from ..core.watch import Key

#: Points kept per watch: enough for a small chart, about 0.4 KB a watch when full.
MAX_POINTS = 48
#: What a point holds at most (a 32-bit integer): a count past it is drawn at it.
_MOST = 2**31 - 1


class BatchHistory:
    """Progress points of every watch, fed by the engine's events."""

    def __init__(
        self, *, wall: Callable[[], float] = time.time, max_points: int = MAX_POINTS
    ) -> None:
        if max_points < 4:
            raise ValueError("max_points must be at least 4")
        self._wall = wall
        self._max = max_points
        # Times in whole seconds since this history began: 32-bit integers, like the counts.
        self._epoch = math.floor(wall())
        # One flat array per watch, time and count interleaved, 8 bytes a point: a tuple per
        # point would cost several times the memory at 10,000 watches. By vector store, then
        # batch: no key tuple a watch either.
        self._points: dict[str, dict[str, array[int]]] = {}

    def on_event(self, event: Event) -> None:
        if isinstance(event, BatchProgressed):
            self._add(event.vector_store_id, event.batch_id, event.file_counts.finished)
        elif isinstance(event, BatchFinished) and event.result.file_counts is not None:
            finished = event.result.file_counts.finished
            self._add(event.vector_store_id, event.batch_id, finished)
        elif isinstance(event, WatchRemoved):
            store = self._points.get(event.vector_store_id)
            if store is not None:
                store.pop(event.batch_id, None)
                if not store:
                    del self._points[event.vector_store_id]

    def _add(self, vector_store_id: str, batch_id: str, finished: int) -> None:
        finished = min(finished, _MOST)
        store = self._points.get(vector_store_id)
        if store is None:
            store = self._points[vector_store_id] = {}
        points = store.get(batch_id)
        if points is None:
            store[batch_id] = array("i", (self._now(), finished))
            return
        if points[-1] == finished:
            return  # a status change alone moves nothing on the chart
        if len(points) >= 2 * self._max:
            # Keep the first point and every other one after it; the newest is appended below.
            kept = array("i", points[:2])
            for i in range(2 + 2, len(points), 4):
                kept.extend(points[i : i + 2])
            points = store[batch_id] = kept
        points.extend((self._now(), finished))

    def _now(self) -> int:
        return max(-_MOST, min(round(self._wall()) - self._epoch, _MOST))

    def points(self, key: Key) -> tuple[tuple[float, int], ...]:
        """The watch's (time, files finished) points, oldest first (a copy)."""
        flat = self._points.get(key[0], {}).get(key[1])
        if flat is None:
            return ()
        epoch = self._epoch
        return tuple((float(epoch + flat[i]), flat[i + 1]) for i in range(0, len(flat), 2))

    def __len__(self) -> int:
        return sum(map(len, self._points.values()))
