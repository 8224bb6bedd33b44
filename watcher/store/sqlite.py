"""The daemon's state: every watch and how it stands, in SQLite (WAL mode), across restarts.

Writes follow two cadences. A watch saved (:meth:`StateStore.save`: a new watch, its first
reply) or deleted is written within ``flush_seconds`` (1 s), in one transaction with everything
else saved meanwhile. Progress (:meth:`StateStore.note_progress`: new counts or a new status) is
only noted, and written every ``progress_seconds`` (30 s), because a lost progress update costs
nothing: the next poll brings it back; a crash loses up to that much of it, a clean shutdown
none. What must not be lost is written at once and durably: a watch registered through the API
(:meth:`StateStore.flush` before answering), and a finished batch
(:meth:`StateStore.save_finished` before it is announced, so that a restart never announces it
twice). Webhook deliveries wait in an outbox table until they succeed.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ..api.models import parse_file_counts
from ..core.results import BatchResult
from ..core.states import Phase
from ..core.watch import Key, Watch, WatchOptions
from ..errors import ConfigError

T = TypeVar("T")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS watches (
    vector_store_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    labels TEXT NOT NULL,
    options TEXT NOT NULL,
    registered_at REAL NOT NULL,
    progress TEXT NOT NULL,
    result TEXT,
    finished_at REAL,
    PRIMARY KEY (vector_store_id, batch_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    vector_store_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""

Row = tuple[str, str, str, str, float, str, str | None, float | None]


@dataclass(slots=True)
class _Pending:
    """What was noted, taken to be written in one transaction."""

    dirty: dict[Key, Row]
    deleted: set[Key]
    deliveries: list[tuple[Key, str]]
    # Noted progress (at a checkpoint), and the rows made of it: newer than ``dirty``'s.
    progress: dict[Key, Watch] = field(default_factory=dict)
    progress_rows: list[Row] = field(default_factory=list)
    failure: BaseException | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    vector_store_id: str
    batch_id: str
    payload: str


def _row(watch: Watch) -> Row:
    progress = {
        "status": watch.status,
        "file_counts": watch.file_counts.as_dict() if watch.file_counts else None,
        "created_at": watch.created_at,
        "first_seen_at": watch.first_seen_at,
        "last_poll_at": watch.last_poll_at,
    }
    options = watch.options.as_dict()
    # Most watches have no labels and no options: "{}" without a trip through the encoder (a row
    # is made of every watch whose counts moved, at each progress checkpoint).
    return (
        watch.vector_store_id,
        watch.batch_id,
        json.dumps(dict(watch.labels)) if watch.labels else "{}",
        json.dumps(options) if options else "{}",
        watch.registered_at,
        json.dumps(progress),
        json.dumps(watch.result.as_dict()) if watch.result is not None else None,
        watch.finished_at,
    )


def _watch(row: sqlite3.Row) -> Watch:
    options = WatchOptions(**json.loads(row["options"]))
    watch = Watch.new(
        row["vector_store_id"],
        row["batch_id"],
        labels=json.loads(row["labels"]),
        options=options,
        registered_at=row["registered_at"],
    )
    progress: dict[str, Any] = json.loads(row["progress"])
    counts = progress.get("file_counts")
    watch = replace(
        watch,
        status=progress.get("status"),
        file_counts=parse_file_counts(counts) if counts is not None else None,
        created_at=progress.get("created_at"),
        first_seen_at=progress.get("first_seen_at"),
        last_poll_at=progress.get("last_poll_at"),
    )
    if row["result"] is not None:
        watch = replace(
            watch,
            result=BatchResult.from_dict(json.loads(row["result"])),
            finished_at=row["finished_at"],
            phase=Phase.FINISHED,
        )
    return watch


class StateStore:
    """One SQLite file. Open with :meth:`open`; run :meth:`run` in the task group to flush."""

    def __init__(
        self,
        path: Path,
        *,
        flush_seconds: float = 1.0,
        progress_seconds: float = 30.0,
        outbox: bool = False,
    ) -> None:
        """``outbox``: keep each finished batch's result for the webhook notifier."""
        self.path = path
        self._outbox = outbox
        self.flush_seconds = flush_seconds
        self.progress_seconds = progress_seconds
        self._db: sqlite3.Connection | None = None
        self._lock = anyio.Lock()
        self._dirty: dict[Key, Row] = {}
        self._deleted: set[Key] = set()
        # Watches whose progress moved since the last checkpoint; their rows are made when taken.
        self._progress: dict[Key, Watch] = {}
        # Webhook payloads of finished watches, written in the transaction that writes the watch.
        self._deliveries: list[tuple[Key, str]] = []
        self.writes = 0

    # -- opening -----------------------------------------------------------------------------

    def open(self) -> list[Watch]:
        """Open (or create) the store and return every watch in it. Refuses a damaged file."""
        db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            status = db.execute("PRAGMA quick_check").fetchone()[0]
            if status != "ok":
                raise sqlite3.DatabaseError(status)
            db.executescript(_SCHEMA)
            version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is None:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(version[0]) > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {version[0]} is newer than this batch-watcher knows"
                )
            rows = db.execute("SELECT * FROM watches ORDER BY registered_at").fetchall()
            watches = [_watch(row) for row in rows]
        except (sqlite3.Error, OSError, ValueError, KeyError, TypeError) as exc:
            if db is not None:
                db.close()  # a refused file is not held open by the error's traceback
            raise ConfigError(
                f"state.path: cannot use {str(self.path)!r} as the state store: {exc}"
            ) from None
        self._db = db
        return watches

    def close(self) -> None:
        if self._db is not None:
            self._commit_pending()
            self._db.close()
            self._db = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    # -- the engine's side (WatchStore) --------------------------------------------------------

    def save(self, watch: Watch) -> None:
        self._deleted.discard(watch.key)
        self._progress.pop(watch.key, None)  # the row made now is newer
        self._dirty[watch.key] = _row(watch)

    def note_progress(self, watch: Watch) -> None:
        """Note that the watch's progress moved; its row is made and written at the next
        checkpoint (every ``progress_seconds``), from the watch as it is then."""
        self._progress[watch.key] = watch

    def delete(self, key: Key) -> None:
        self._dirty.pop(key, None)
        self._progress.pop(key, None)
        self._deleted.add(key)

    async def save_finished(self, watch: Watch) -> None:
        self.save(watch)
        if self._outbox and watch.result is not None:
            self._deliveries.append((watch.key, json.dumps(watch.result.as_dict())))
        await self._commit()

    async def flush(self, *, progress: bool = False) -> None:
        """Write everything saved so far, durably; noted progress only with ``progress`` (a
        checkpoint). The control API flushes without it: a registration needs its own saved row
        on disk before the answer, not the latest counts of every other watch."""
        if self._dirty or self._deleted or self._deliveries or (progress and self._progress):
            await self._commit(progress=progress)

    async def run(self) -> None:
        """Flush saved watches every ``flush_seconds`` and noted progress every
        ``progress_seconds`` until cancelled; then flush both once more."""
        last_checkpoint = anyio.current_time()
        try:
            while True:
                until_checkpoint = last_checkpoint + self.progress_seconds - anyio.current_time()
                await anyio.sleep(max(0.0, min(self.flush_seconds, until_checkpoint)))
                now = anyio.current_time()
                if now >= last_checkpoint + self.progress_seconds:
                    last_checkpoint = now
                    await self.flush(progress=True)
                else:
                    await self.flush()
        finally:
            with anyio.CancelScope(shield=True):
                await self.flush(progress=True)

    # -- the notifier's side -------------------------------------------------------------------

    async def pending_deliveries(self, limit: int = 100) -> list[OutboxItem]:
        def read() -> list[OutboxItem]:
            rows = self._conn().execute(
                "SELECT id, vector_store_id, batch_id, payload FROM outbox ORDER BY id LIMIT ?",
                (limit,),
            )
            return [OutboxItem(*row) for row in rows]

        return await self._in_thread(read)

    async def delivered(self, item_id: int) -> None:
        await self._in_thread(
            lambda: self._conn().execute("DELETE FROM outbox WHERE id = ?", (item_id,))
        )

    # -- plumbing ------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the state store is not open")
        return self._db

    async def _in_thread(self, work: Callable[[], T]) -> T:
        async with self._lock:
            return await anyio.to_thread.run_sync(work)

    async def _commit(self, *, progress: bool = False) -> None:
        """Write what is noted, in a worker thread. It is taken here, on the event loop where it
        is noted: were the thread to take it, a watch noted meanwhile (a finished result whose
        payload is being serialised) could land in a collection already taken, and be lost."""
        async with self._lock:
            pending = self._take(progress=progress)
            try:
                await anyio.to_thread.run_sync(self._write, pending)
            finally:
                # Back on the event loop, cancelled or not: the thread has finished by now.
                if pending.failure is not None:
                    self._give_back(pending)
            if pending.failure is not None:
                raise pending.failure

    def _commit_pending(self) -> None:
        """:meth:`_commit` with noted progress, here and now (on closing)."""
        pending = self._take(progress=True)
        self._write(pending)
        if pending.failure is not None:
            self._give_back(pending)
            raise pending.failure

    def _take(self, *, progress: bool) -> _Pending:
        pending = _Pending(self._dirty, self._deleted, self._deliveries)
        self._dirty, self._deleted, self._deliveries = {}, set(), []
        if progress and self._progress:
            pending.progress, self._progress = self._progress, {}
            # Made here, not in the writer thread: the engine changes these watches meanwhile.
            pending.progress_rows = [_row(watch) for watch in pending.progress.values()]
        return pending

    def _give_back(self, pending: _Pending) -> None:
        # Nothing noted is dropped: what failed to write is noted again, unless newer. Progress
        # first, while ``_dirty`` and ``_deleted`` hold only what was noted since the take.
        for k, watch in pending.progress.items():
            if k not in self._dirty and k not in self._deleted:
                self._progress.setdefault(k, watch)
        for k, row in pending.dirty.items():
            self._dirty.setdefault(k, row)
        self._deleted |= pending.deleted - self._dirty.keys()
        self._deliveries[:0] = pending.deliveries  # the finished rows they go with are back too

    def _write(self, pending: _Pending) -> None:
        """One transaction; a failure is kept in ``pending.failure``, for the event loop."""
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            if pending.deleted:
                db.executemany(
                    "DELETE FROM watches WHERE vector_store_id = ? AND batch_id = ?",
                    pending.deleted,
                )
            if pending.dirty or pending.progress_rows:
                # A watch in both was noted after it was saved: its progress row comes last.
                db.executemany(
                    "INSERT OR REPLACE INTO watches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    itertools.chain(pending.dirty.values(), pending.progress_rows),
                )
            if pending.deliveries:
                db.executemany(
                    "INSERT INTO outbox (vector_store_id, batch_id, payload, created_at) "
                    "VALUES (?, ?, ?, strftime('%s', 'now'))",
                    [(*key, payload) for key, payload in pending.deliveries],
                )
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            pending.failure = exc
            return
        self.writes += 1
