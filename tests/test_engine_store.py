"""How the engine ends a watch: an ending not on disk is never announced (and is retried until
it is), and what it keeps of the failed files is bounded.

These run on the real clock: the store writes in a worker thread, and a virtual clock would
jump ahead while every task waits for it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest
from postgres_fixtures import eventually
from structlog.testing import capture_logs

from watcher.api.settings import ClientSettings
from watcher.core.engine import Engine
from watcher.core.events import BatchFinished, Event
from watcher.core.failed_files import MAX_ERROR_CODES, bounded_codes
from watcher.core.policy import PollSettings
from watcher.core.settings import EngineSettings
from watcher.core.states import Phase
from watcher.core.watch import Watch
from watcher.errors import StoreUnavailable
from watcher.simulator import BatchSpec, Simulator, SimulatorApp
from watcher.store.sqlite import SQLiteStore


def _engine(sim: Simulator, settings: EngineSettings, **kwargs: object) -> Engine:
    """An engine of the simulator's app, in process."""
    return Engine.create(
        ClientSettings(base_url="http://simulator.test/v1"),
        settings,
        transport=httpx.ASGITransport(SimulatorApp(sim)),
        **kwargs,  # type: ignore[arg-type]
    )


class FlakyStore(SQLiteStore):
    """A real store whose first ``failures`` durable writes of a finished batch fail with
    ``error``."""

    def __init__(self, path: Path, failures: int, error: Exception) -> None:
        super().__init__(path)
        self.failures = failures
        self.error = error

    async def save_finished(self, watch: Watch) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        await super().save_finished(watch)


@pytest.mark.parametrize(
    "error",
    [StoreUnavailable("the state store cannot write: disk full"), OSError("a bug of the store")],
)
async def test_failed_durable_write_delays_the_announcement_until_it_succeeds(
    tmp_path: Path, error: Exception
) -> None:
    """When the finished state cannot be written, nothing is announced; the ending is retried,
    announced once when the write succeeds, and the store then holds the result. A store that
    says it cannot write (StoreUnavailable) costs no ``internal_error`` traceback."""
    sim = Simulator(
        [BatchSpec("vs_s", "b_s", total_files=3, duration_seconds=0.1, failed_files=1)],
    )
    store = FlakyStore(tmp_path / "state.sqlite3", failures=2, error=error)
    await store.open()
    events: list[Event] = []
    settings = EngineSettings(
        poll=PollSettings(interval=0.05, min_interval=0.01, max_interval=0.2),
        max_requests_per_minute=60_000,
    )
    engine = _engine(sim, settings, sinks=[events.append], store=store)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(engine.run)
            engine.add("vs_s", "b_s")
            with anyio.fail_after(20):
                await engine.wait_idle()
            tg.cancel_scope.cancel()
    internal = [e for e in logs if e["event"] == "internal_error"]
    assert len(internal) == (0 if isinstance(error, StoreUnavailable) else 2)
    finished = [e for e in events if isinstance(e, BatchFinished)]
    assert store.failures == 0
    assert len(finished) == 1
    assert finished[0].result.failed_files_listed == 1
    watch = engine.get("vs_s", "b_s")
    assert watch is not None
    assert watch.phase is Phase.FINISHED
    await store.aclose()
    again = SQLiteStore(tmp_path / "state.sqlite3")
    [restored] = await again.open()
    await again.aclose()
    assert restored.result is not None
    assert restored.result.status == "completed"


class RecordingStore(SQLiteStore):
    """A real store that keeps the name of each call the engine makes to note a watch."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: list[str] = []

    def save(self, watch: Watch) -> None:
        self.calls.append("save")
        super().save(watch)

    def note_progress(self, watch: Watch) -> None:
        self.calls.append("note_progress")
        super().note_progress(watch)

    async def save_finished(self, watch: Watch) -> None:
        self.calls.append("save_finished")
        await super().save_finished(watch)


async def test_progress_after_the_first_reply_is_only_noted(tmp_path: Path) -> None:
    """The engine saves a new watch and its first reply, only notes the progress seen after,
    and writes the ending durably; the store then holds the result."""
    sim = Simulator(
        [BatchSpec("vs_p", "b_p", total_files=20, duration_seconds=0.5)],
    )
    store = RecordingStore(tmp_path / "state.sqlite3")
    await store.open()
    settings = EngineSettings(
        poll=PollSettings(interval=0.02, min_interval=0.01, max_interval=0.05),
        max_requests_per_minute=60_000,
    )
    engine = _engine(sim, settings, store=store)
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        engine.add("vs_p", "b_p")
        with anyio.fail_after(20):
            await engine.wait_idle()
        tg.cancel_scope.cancel()
    # save_finished saves the finished watch itself, hence its inner "save".
    assert store.calls[:2] == ["save", "save"]
    assert store.calls[-2:] == ["save_finished", "save"]
    noted = store.calls[2:-2]
    assert noted
    assert set(noted) == {"note_progress"}
    await store.aclose()
    again = SQLiteStore(tmp_path / "state.sqlite3")
    [restored] = await again.open()
    await again.aclose()
    assert restored.result is not None
    assert restored.result.status == "completed"


def test_error_codes_are_bounded_per_batch() -> None:
    """Past twenty distinct codes the rarest are counted as 'other'; the total stays exact."""
    by_code = Counter({f"code_{i}": 100 - i for i in range(50)})
    kept = bounded_codes(by_code)
    assert len(kept) == MAX_ERROR_CODES
    assert sum(kept.values()) == sum(by_code.values())
    assert kept["code_0"] == 100
    assert "code_49" not in kept


class CountingTransport(httpx.AsyncBaseTransport):
    """The simulator's app in process, counting the requests for each path."""

    def __init__(self, sim: Simulator) -> None:
        self.inner = httpx.ASGITransport(SimulatorApp(sim))
        self.paths: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths[request.url.path] += 1
        return await self.inner.handle_async_request(request)

    def polls(self, batch_id: str) -> int:
        return sum(n for path, n in self.paths.items() if path.endswith(f"/{batch_id}"))


async def test_a_forgotten_watch_is_polled_no_more_and_stays_in_the_store(
    tmp_path: Path,
) -> None:
    """``forget`` stops polling a watch and says so (``watch_forgotten``), yet deletes nothing:
    the store still holds it, while ``remove`` deletes its row."""
    sim = Simulator(
        [
            BatchSpec("vs_f", "b_kept", total_files=5, duration_seconds=600),
            BatchSpec("vs_f", "b_other", total_files=5, duration_seconds=600),
            BatchSpec("vs_f", "b_gone", total_files=5, duration_seconds=600),
        ],
    )
    store = SQLiteStore(tmp_path / "state.sqlite3")
    await store.open()
    transport = CountingTransport(sim)
    events: list[Event] = []
    settings = EngineSettings(
        poll=PollSettings(interval=0.02, min_interval=0.01, max_interval=0.05, slow_down=False),
        max_requests_per_minute=60_000,
    )
    engine = Engine.create(
        ClientSettings(base_url="http://simulator.test/v1"),
        settings,
        transport=transport,
        store=store,
        sinks=[events.append],
    )
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        for batch_id in ("b_kept", "b_other", "b_gone"):
            engine.add("vs_f", batch_id)
        await eventually(
            lambda: min(transport.polls(b) for b in ("b_kept", "b_other", "b_gone")) >= 2, 20
        )
        assert engine.forget(("vs_f", "b_kept"))
        assert engine.remove("vs_f", "b_gone")
        assert not engine.forget(("vs_f", "b_kept"))
        at_forget = transport.polls("b_kept")
        other = transport.polls("b_other")
        await eventually(lambda: transport.polls("b_other") >= other + 20, 20)
        tg.cancel_scope.cancel()
    # A request under way when it was forgotten may still have completed; none after it.
    assert transport.polls("b_kept") <= at_forget + 1
    assert engine.get("vs_f", "b_kept") is None
    assert [type(e).__name__ for e in events if e.batch_id != "b_other"][-2:] == [
        "WatchForgotten",
        "WatchRemoved",
    ]
    await store.aclose()
    again = SQLiteStore(tmp_path / "state.sqlite3")
    stored = {w.batch_id for w in await again.open()}
    await again.aclose()
    assert stored == {"b_kept", "b_other"}
