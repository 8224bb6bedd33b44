"""The daemon's state: every watch and how it stands, in SQLite (WAL mode), across restarts.

:class:`SQLiteStore` is the :class:`~watcher.store.protocol.StateStore` of one file. Writes follow
two cadences. A watch saved (:meth:`~SQLiteStore.save`: a new watch, its first reply) or deleted
is written within ``flush_seconds`` (1 s), in one transaction with everything else saved
meanwhile. Progress (:meth:`~SQLiteStore.note_progress`: new counts or a new status) is only
noted, and written every ``progress_seconds`` (30 s), because a lost progress update costs
nothing: the next poll brings it back; a crash loses up to that much of it, a clean shutdown
none. What must not be lost is written at once and durably: a watch registered through the API
(:meth:`~SQLiteStore.flush` before answering), and a finished batch
(:meth:`~SQLiteStore.save_finished` before it is announced, so that a restart never announces it
twice). Webhook deliveries wait in an outbox table until they succeed. What is noted and not yet
written is kept by :class:`~watcher.store.pending.PendingWrites`.

A write that fails (the file locked by another process for more than ``busy_seconds``, a full
disk, a read-only file) raises :class:`~watcher.errors.StoreUnavailable` and keeps what it would
have written; :meth:`~SQLiteStore.run` retries with backoff, and the daemon goes on polling.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import stamina
import structlog

from ..core.watch import Key, Watch
from ..errors import ConfigError, StoreUnavailable
from .codec import COLUMNS, DamagedRow, decode
from .pending import PendingWrites, Taken
from .protocol import OutboxItem, WriteFailure

log = structlog.get_logger("watcher.store.sqlite")

T = TypeVar("T")

#: Damaged rows named one by one when a store is refused; the rest are counted.
_MAX_DAMAGED_SHOWN = 20
#: How to delete a damaged row, as the refusal says it.
_HOW = "(DELETE FROM watches WHERE vector_store_id = '...' AND batch_id = '...')"

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


class SQLiteStore:
    """One SQLite file. Open with :meth:`open`; run :meth:`run` in the task group to flush."""

    def __init__(
        self,
        path: Path,
        *,
        flush_seconds: float = 1.0,
        progress_seconds: float = 30.0,
        outbox: bool = False,
        busy_seconds: float = 5.0,
        max_retry_seconds: float = 30.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``outbox``: keep each finished batch's result for the webhook notifier.
        ``busy_seconds``: how long a write waits for a lock another process holds before it
        fails (and is retried, after at most ``max_retry_seconds``)."""
        self.path = path
        self._outbox = outbox
        self.flush_seconds = flush_seconds
        self.progress_seconds = progress_seconds
        self.busy_seconds = busy_seconds
        self.max_retry_seconds = max_retry_seconds
        self._wall = wall
        self._db: sqlite3.Connection | None = None
        self._lock = anyio.Lock()
        self._pending = PendingWrites()
        self._failure: WriteFailure | None = None
        self.writes = 0

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def write_failure(self) -> WriteFailure | None:
        return self._failure

    # -- opening -----------------------------------------------------------------------------

    async def open(self) -> list[Watch]:
        """Open (or create) the store and return every watch in it. Refuses, naming
        ``state.path``, a file it cannot read or write, and one with damaged rows."""
        return await anyio.to_thread.run_sync(self._open)

    def _open(self) -> list[Watch]:
        db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_seconds,
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            status = db.execute("PRAGMA quick_check").fetchone()[0]
            if status != "ok":
                raise sqlite3.DatabaseError(status)
            db.executescript(_SCHEMA)
            version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is not None and int(version[0]) > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {version[0]} is newer than this batch-watcher knows"
                )
            # A store that cannot be written is refused now, not at the first write: one
            # transaction, as every later write is.
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('opened_at', ?)",
                (repr(self._wall()),),
            )
            db.execute("COMMIT")
            read = db.cursor()
            read.row_factory = sqlite3.Row
            rows = read.execute(
                f"SELECT {', '.join(COLUMNS)} FROM watches ORDER BY registered_at"  # noqa: S608
            ).fetchall()
        except (sqlite3.Error, OSError, ValueError) as exc:
            if db is not None:
                db.close()  # a refused file is not held open by the error's traceback
            raise ConfigError(
                f"state.path: cannot use {self.location!r} as the state store: {_said(exc)}"
            ) from None
        watches, damaged = [], []
        for row in rows:
            try:
                watches.append(decode(row))
            except DamagedRow as exc:
                damaged.append(exc)
        if damaged:
            db.close()
            raise ConfigError(self._refusal(damaged))
        self._db = db
        return watches

    def _refusal(self, damaged: list[DamagedRow]) -> list[str]:
        where = f"state.path: {self.location!r}:"
        problems = [f"{where} {exc}" for exc in damaged[:_MAX_DAMAGED_SHOWN]]
        if len(damaged) > _MAX_DAMAGED_SHOWN:
            problems.append(f"{where} and {len(damaged) - _MAX_DAMAGED_SHOWN} more damaged rows")
        problems.append(
            f"{where} {len(damaged)} damaged watch rows; batch-watcher does not start on a store "
            f"it cannot read whole: restore the file from a backup, or delete those rows {_HOW}"
        )
        return problems

    async def aclose(self) -> None:
        """Write everything noted, progress too, and close. A store that cannot write now
        says what it could not write, and closes all the same."""
        if self._db is None:
            return
        with anyio.CancelScope(shield=True):
            noted = self._pending.counts()
            try:
                await self._commit(progress=True)
            except StoreUnavailable as exc:
                log.error("state_not_written", store=self.location, error=str(exc), **noted)
            finally:
                self._db.close()
                self._db = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    # -- the engine's side (WatchStore) --------------------------------------------------------

    def save(self, watch: Watch) -> None:
        self._pending.save(watch)

    def note_progress(self, watch: Watch) -> None:
        """Note that the watch's progress moved; its row is made and written at the next
        checkpoint (every ``progress_seconds``), as last noted."""
        self._pending.note_progress(watch)

    def delete(self, key: Key) -> None:
        self._pending.delete(key)

    async def save_finished(self, watch: Watch) -> None:
        self.save(watch)
        if self._outbox and watch.result is not None:
            self._pending.deliver(watch.key, json.dumps(watch.result.as_dict()))
        await self._commit()

    async def save_now(self, watch: Watch) -> None:
        """Save the watch and write it, with everything saved before, durably."""
        self.save(watch)
        await self._commit()

    async def flush(self, *, progress: bool = False) -> None:
        """Write everything saved so far, durably; noted progress only with ``progress`` (a
        checkpoint). The control API flushes without it: a registration needs its own saved row
        on disk before the answer, not the latest counts of every other watch."""
        if self._pending.any(progress=progress):
            await self._commit(progress=progress)

    async def run(self) -> None:
        """Flush saved watches every ``flush_seconds`` and noted progress every
        ``progress_seconds`` until cancelled; then flush both once more. A flush that fails is
        retried with backoff (at most ``max_retry_seconds`` apart) until it succeeds."""
        last_checkpoint = anyio.current_time()
        try:
            while True:
                until_checkpoint = last_checkpoint + self.progress_seconds - anyio.current_time()
                await anyio.sleep(max(0.0, min(self.flush_seconds, until_checkpoint)))
                now = anyio.current_time()
                checkpoint = now >= last_checkpoint + self.progress_seconds
                if checkpoint:
                    last_checkpoint = now
                await self._flush_retrying(progress=checkpoint)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(StoreUnavailable):
                await self.flush(progress=True)

    async def _flush_retrying(self, *, progress: bool) -> None:
        # Unbounded: the daemon polls on meanwhile, and the store says why it is not ready.
        # Only stamina's testing mode bounds the attempts; the next round then tries again.
        with contextlib.suppress(StoreUnavailable):
            async for attempt in stamina.retry_context(
                on=StoreUnavailable,
                attempts=None,
                timeout=None,
                wait_initial=self.flush_seconds,
                wait_max=self.max_retry_seconds,
                wait_jitter=self.flush_seconds,
            ):
                with attempt:
                    await self.flush(progress=progress)

    # -- the notifier's side -------------------------------------------------------------------

    async def pending_deliveries(self, limit: int = 100) -> list[OutboxItem]:
        def read() -> list[OutboxItem]:
            rows = self._conn().execute(
                "SELECT id, vector_store_id, batch_id, payload FROM outbox ORDER BY id LIMIT ?",
                (limit,),
            )
            return [OutboxItem(*row) for row in rows]

        try:
            return await self._in_thread(read)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(
                f"the state store {self.location!r} cannot be read: {_said(exc)}"
            ) from exc

    async def delivered(self, item_id: int) -> None:
        def delete() -> None:
            self._conn().execute("DELETE FROM outbox WHERE id = ?", (item_id,))

        try:
            await self._in_thread(delete)
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
        else:
            self._succeeded()

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
            taken = self._pending.take(progress=progress)
            try:
                await anyio.to_thread.run_sync(self._write, taken)
            finally:
                # Back on the event loop, cancelled or not: the thread has finished by now.
                if taken.failure is not None:
                    self._pending.give_back(taken)
            failure = taken.failure
            if failure is None:
                self._succeeded()
            elif isinstance(failure, sqlite3.Error | OSError):
                self._failed(failure)
            else:
                raise failure

    def _failed(self, exc: sqlite3.Error | OSError) -> None:
        error = _said(exc)
        previous = self._failure
        since = previous.since if previous is not None else self._wall()
        attempts = previous.attempts + 1 if previous is not None else 1
        self._failure = WriteFailure(error, since, attempts)
        log.warning(
            "state_write_failed",
            store=self.location,
            error=error,
            attempts=attempts,
            failing_seconds=round(self._wall() - since, 3),
            **self._pending.counts(),
        )
        raise StoreUnavailable(f"the state store {self.location!r} cannot write: {error}") from exc

    def _succeeded(self) -> None:
        previous, self._failure = self._failure, None
        if previous is not None:
            log.info(
                "state_write_recovered",
                store=self.location,
                attempts=previous.attempts,
                failed_seconds=round(self._wall() - previous.since, 3),
            )

    def _write(self, taken: Taken) -> None:
        """One transaction; a failure is kept in ``taken.failure``, for the event loop."""
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            if taken.deleted:
                db.executemany(
                    "DELETE FROM watches WHERE vector_store_id = ? AND batch_id = ?",
                    taken.deleted,
                )
            if taken.dirty or taken.progress_rows:
                # A watch in both was noted after it was saved: its progress row comes last.
                db.executemany(
                    "INSERT OR REPLACE INTO watches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    itertools.chain(taken.dirty.values(), taken.progress_rows),
                )
            if taken.deliveries:
                db.executemany(
                    "INSERT INTO outbox (vector_store_id, batch_id, payload, created_at) "
                    "VALUES (?, ?, ?, strftime('%s', 'now'))",
                    [(*key, payload) for key, payload in taken.deliveries],
                )
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            taken.failure = exc
            return
        self.writes += 1


def _said(exc: BaseException) -> str:
    """What SQLite (or the system) said, and what it likely means."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        text += " (another process holds a lock on it: a second batch-watcher, or a backup?)"
    return text
