"""The state-store backends the contract suite (``test_store_contract.py``) runs against.

A backend is a :class:`Backend`: it makes stores over one storage of its own (a file, a database
schema), each a new process's view of it, and it can make that storage refuse writes for a
while. To run the suite against a new backend, add its factory to :data:`BACKENDS`; a backend
whose server is missing skips itself (``pytest.skip`` in its factory).
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest
from postgres_fixtures import PG_URL, drop_schema, pg_connect

from watcher.core.watch import Watch
from watcher.store import OutboxItem, StateStore
from watcher.store.postgres import PostgresStore
from watcher.store.sqlite import SQLiteStore


class Backend(Protocol):
    """One storage, and what the contract suite needs to do with it."""

    def store(
        self, *, outbox: bool = False, flush_seconds: float = 1.0, progress_seconds: float = 30.0
    ) -> StateStore:
        """A new, unopened store over this storage: a second one is a restarted process."""
        ...

    def refuse_writes(self) -> contextlib.AbstractContextManager[None]:
        """While inside, every write to the storage fails (as when the file is locked by
        another process, the disk is full, the database is read-only); reads still work."""
        ...

    def break_for_good(self) -> None:
        """Make every later write fail, for the rest of the test."""
        ...

    def close(self) -> None:
        """Free what the backend holds (called once the test is over)."""
        ...


class SQLiteBackend:
    """A SQLite file in the test's directory. Writes are refused by another connection that
    holds the write lock, as a backup tool or a second daemon would; the stores wait a short
    ``busy_seconds`` for it."""

    BUSY_SECONDS = 0.05

    def __init__(self, directory: Path) -> None:
        self.path = directory / "state" / "state.sqlite3"
        self._holders: list[sqlite3.Connection] = []

    def store(
        self, *, outbox: bool = False, flush_seconds: float = 1.0, progress_seconds: float = 30.0
    ) -> SQLiteStore:
        return SQLiteStore(
            self.path,
            outbox=outbox,
            flush_seconds=flush_seconds,
            progress_seconds=progress_seconds,
            busy_seconds=self.BUSY_SECONDS,
            max_retry_seconds=0.05,
        )

    @contextlib.contextmanager
    def refuse_writes(self) -> Iterator[None]:
        holder = self._hold()
        try:
            yield
        finally:
            self._holders.remove(holder)
            holder.execute("ROLLBACK")
            holder.close()

    def break_for_good(self) -> None:
        self._hold()

    def _hold(self) -> sqlite3.Connection:
        holder = sqlite3.connect(self.path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        self._holders.append(holder)
        return holder

    def close(self) -> None:
        for holder in self._holders:
            holder.close()


class PostgresBackend:
    """A schema of its own on the test server (``BATCH_WATCHER_TEST_PG_URL``). Writes are
    refused by another session holding EXCLUSIVE locks on the store's tables, as a migration or
    an operator's ``LOCK TABLE`` would (reads go on); the stores give up waiting for a lock after
    ``LOCK_SECONDS``."""

    LOCK_SECONDS = 0.05

    def __init__(self, directory: Path) -> None:
        try:
            with psycopg.connect(PG_URL, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            pytest.skip(f"no PostgreSQL at {PG_URL}: {exc}")
        self.schema = f"c_{uuid.uuid4().hex[:16]}"
        self._holders: list[psycopg.Connection[Any]] = []

    def store(
        self, *, outbox: bool = False, flush_seconds: float = 1.0, progress_seconds: float = 30.0
    ) -> PostgresStore:
        return PostgresStore(
            PG_URL,
            schema=self.schema,
            outbox=outbox,
            flush_seconds=flush_seconds,
            progress_seconds=progress_seconds,
            lock_timeout=self.LOCK_SECONDS,
        )

    @contextlib.contextmanager
    def refuse_writes(self) -> Iterator[None]:
        holder = self._hold()
        try:
            yield
        finally:
            self._holders.remove(holder)
            holder.close()  # ends its transaction, and the locks with it

    def break_for_good(self) -> None:
        self._hold()

    def _hold(self) -> psycopg.Connection[Any]:
        holder = pg_connect(self.schema)
        holder.autocommit = False
        holder.execute("LOCK TABLE watches, outbox IN EXCLUSIVE MODE")
        self._holders.append(holder)
        return holder

    def close(self) -> None:
        for holder in self._holders:
            holder.close()
        drop_schema(self.schema)


#: Each backend's name and its factory, given the test's own directory.
BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "sqlite": SQLiteBackend,
    "postgres": PostgresBackend,
}


async def reopened(backend: Backend) -> list[Watch]:
    """The watches a restarted process finds in the storage (what is committed)."""
    store = backend.store()
    try:
        return await store.open()
    finally:
        await store.aclose()


async def pending(backend: Backend) -> list[OutboxItem]:
    """The deliveries a restarted process finds in the outbox."""
    store = backend.store(outbox=True)
    await store.open()
    try:
        return await store.pending_deliveries()
    finally:
        await store.aclose()
