"""The webhook notifier with more waiting in the outbox than it reads at once."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
from factories import ended_watch

from watcher.daemon.notify import PAGE, Notifier
from watcher.store.sqlite import SQLiteStore


async def test_a_backlog_longer_than_a_page_is_delivered_without_waiting_for_a_wake_up(
    tmp_path: Path,
) -> None:
    """When more batches finished than one read of the outbox holds, every one of them is
    delivered at once, not one page now and the rest after the notifier's idle wait."""
    store = SQLiteStore(tmp_path / "state.sqlite3", outbox=True)
    await store.open()
    for n in range(PAGE + PAGE // 2):
        watch = ended_watch("vs_1", f"vsfb_{n:04d}")
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
    await store.aclose()
    assert sorted(received) == [f"vsfb_{n:04d}" for n in range(PAGE + PAGE // 2)]
