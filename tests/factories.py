"""Objects many tests need, built one way."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, ParamSpec

import anyio
from trio.testing import MockClock

from watcher.core.results import BatchResult
from watcher.core.states import Phase, State
from watcher.core.watch import Watch

P = ParamSpec("P")

#: Unix time at virtual time 0: virtual wall clocks read EPOCH + the event loop's clock.
EPOCH = 1_800_000_000.0


def virtual_time(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test under trio with a mock clock that jumps to the next timer whenever
    every task waits: sleeps, timeouts and the engine's schedule cost no real time, and the
    order of events is exactly what the clock says."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        anyio.run(
            functools.partial(test, *args, **kwargs),
            backend="trio",
            backend_options={"clock": MockClock(autojump_threshold=0)},
        )

    return run


def virtual_wall() -> float:
    """Unix time on the virtual clock (call it inside :func:`virtual_time`)."""
    return EPOCH + anyio.current_time()


class FakeClock:
    """A clock that moves only when told, or when something sleeps on it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def ended_watch(vector_store_id: str, batch_id: str, status: str = "completed") -> Watch:
    """A watch that ended with ``status`` at t=2, registered at t=1, with no failed files."""
    result = BatchResult(
        vector_store_id=vector_store_id,
        batch_id=batch_id,
        status=State(status),
        file_counts=None,
        failed_files=(),
        failed_by_code={},
        failed_files_listed=0,
        failed_files_truncated=False,
        failed_files_complete=True,
        elapsed_seconds=1.0,
        finished_at=2.0,
    )
    watch = Watch.new(vector_store_id, batch_id, registered_at=1.0)
    return replace(watch, result=result, finished_at=2.0, phase=Phase.FINISHED)
