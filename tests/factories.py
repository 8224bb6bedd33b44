"""Objects many tests need, built one way."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, ParamSpec

import anyio
import httpx
from trio.testing import MockClock

from watcher.api.models import FileCounts, LastError
from watcher.core.results import BatchResult, FailedFile
from watcher.core.states import Phase, State
from watcher.core.watch import Watch, WatchOptions

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


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def loopback_client(base_url: str = "", **options: Any) -> httpx.AsyncClient:
    """An HTTP client for a test's own server on loopback. httpx builds a new TLS context for
    every client (reading the CA bundle: about 60 ms of CPU each) though plain HTTP never uses
    it; these clients share one."""
    return httpx.AsyncClient(base_url=base_url, verify=_tls(), **options)


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


def stored_watch(batch_id: str = "vsfb_1", **labels: str) -> Watch:
    """A watch in progress with every field a store keeps set, options and labels too."""
    watch = Watch.new(
        "vs_1",
        batch_id,
        labels=labels or {"team": "search"},
        options=WatchOptions(
            interval_seconds=2.5,
            deadline_seconds=600.0,
            cancel_on_timeout=True,
            stall_after_seconds=45.0,
        ),
        registered_at=1_700_000_000.25,
    )
    return replace(
        watch,
        status="in_progress",
        file_counts=FileCounts(in_progress=3, completed=5, failed=2, cancelled=0, total=10),
        created_at=1_699_999_990,
        first_seen_at=1_700_000_001.5,
        last_poll_at=1_700_000_007.75,
    )


def moved(watch: Watch, completed: int) -> Watch:
    """The watch after its batch's counts moved to ``completed`` of 10."""
    return replace(watch, file_counts=FileCounts(completed=completed, total=10))


def finished(watch: Watch) -> Watch:
    """``watch`` ended completed, with two failed files kept of three listed, and a note."""
    counts = FileCounts(in_progress=0, completed=8, failed=2, cancelled=0, total=10)
    result = BatchResult(
        vector_store_id=watch.vector_store_id,
        batch_id=watch.batch_id,
        status=State.COMPLETED,
        file_counts=counts,
        failed_files=(
            FailedFile("file-a", LastError("unsupported_file", 'bad "type" \\ <x>')),
            FailedFile("file-b", LastError("parsing_timeout", "too slow\nsecond line")),
        ),
        failed_by_code={"unsupported_file": 1, "parsing_timeout": 1},
        failed_files_listed=3,
        failed_files_truncated=True,
        failed_files_complete=False,
        elapsed_seconds=12.5,
        finished_at=1_700_000_012.5,
        labels=dict(watch.labels),
        note="the failed-file list is incomplete: page 2",
    )
    return replace(
        watch,
        status="completed",
        file_counts=counts,
        result=result,
        finished_at=1_700_000_012.5,
        phase=Phase.FINISHED,
    )
