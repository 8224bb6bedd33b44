"""The state store while its writer thread and the event loop work at the same time."""

from __future__ import annotations

import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from factories import ended_watch

from watcher.core.results import BatchResult
from watcher.core.watch import Watch
from watcher.store.sqlite import SQLiteStore

VS = "vs_store"


class _Connection:
    """A SQLite connection that says when the writer thread commits."""

    def __init__(self, db: sqlite3.Connection, committing: threading.Event) -> None:
        self._db, self._committing = db, committing

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            self._committing.set()
        return self._db.execute(sql, *args)


def _finished(batch_id: str) -> Watch:
    return ended_watch(VS, batch_id)


async def test_a_batch_finishing_while_a_flush_writes_keeps_its_webhook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that finishes while the periodic flush is writing in its thread (its payload
    being serialised as the thread starts) is written with its outbox row, not without it."""
    store = SQLiteStore(tmp_path / "state.sqlite3", outbox=True)
    await store.open()
    loop_thread = threading.current_thread()
    entered, go, committing = threading.Event(), threading.Event(), threading.Event()
    real_conn = store._conn

    def conn() -> Any:
        db = real_conn()
        if threading.current_thread() is loop_thread:
            return db
        entered.set()
        assert go.wait(5)  # the writer thread starts only when told
        return _Connection(db, committing)

    real_as_dict = BatchResult.as_dict

    def as_dict(self: BatchResult) -> dict[str, Any]:
        if sys._getframe(1).f_code.co_name == "save_finished":
            # The webhook payload is being serialised: let the writer thread run now, and go
            # on once it commits, as a thread switch during a large payload's json.dumps would.
            go.set()
            assert committing.wait(5)
        return real_as_dict(self)

    monkeypatch.setattr(store, "_conn", conn)
    store.save(Watch(VS, "vsfb_progress", registered_at=0.0))
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.flush)  # the periodic flush, now in its thread, waiting for `go`
        await anyio.to_thread.run_sync(entered.wait, 5)
        monkeypatch.setattr(BatchResult, "as_dict", as_dict)
        await store.save_finished(_finished("vsfb_finished"))
    monkeypatch.setattr(BatchResult, "as_dict", real_as_dict)

    deliveries = await store.pending_deliveries()
    await store.aclose()
    assert [item.batch_id for item in deliveries] == ["vsfb_finished"]
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    rows = dict(db.execute("SELECT batch_id, result IS NOT NULL FROM watches").fetchall())
    db.close()
    assert rows == {"vsfb_progress": 0, "vsfb_finished": 1}
