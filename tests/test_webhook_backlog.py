"""The webhook notifier with more waiting in the outbox than it reads at once."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx

from watcher.events import BatchResult
from watcher.notify import PAGE, Notifier
from watcher.store import StateStore
from watcher.watch import Phase, Watch


async def test_a_backlog_longer_than_a_page_is_delivered_without_waiting_for_a_wake_up(
    tmp_path: Path,
) -> None:
    """When more batches finished than one read of the outbox holds, every one of them is
    delivered at once, not one page now and the rest after the notifier's idle wait."""
    store = StateStore(tmp_path / "state.sqlite3", outbox=True)
    store.open()
    for n in range(PAGE + PAGE // 2):
        watch = Watch("vs_1", f"vsfb_{n:04d}", registered_at=0.0)
        watch.result = BatchResult(
            vector_store_id="vs_1",
            batch_id=watch.batch_id,
            status="completed",
            file_counts=None,
            failed_files=(),
            failed_by_code={},
            failed_files_listed=0,
            failed_files_truncated=False,
            failed_files_complete=True,
            elapsed_seconds=1.0,
            finished_at=1.0,
        )
        watch.finished_at, watch.phase = 1.0, Phase.FINISHED
        await store.save_finished(watch)
    received: list[str] = []
    everything = anyio.Event()

    def receiver(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content)["batch_id"])
        if len(received) == PAGE + PAGE // 2:
            everything.set()
        return httpx.Response(204)

    notifier = Notifier(
        "http://127.0.0.1:9/hook",
        store,
        idle_seconds=3600,  # only a wake-up, or reading on, can deliver the rest in time
        transport=httpx.MockTransport(receiver),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        with anyio.fail_after(10):
            await everything.wait()
        tg.cancel_scope.cancel()
    store.close()
    assert sorted(received) == [f"vsfb_{n:04d}" for n in range(PAGE + PAGE // 2)]
