"""The daemon's state in PostgreSQL: the store protocol, shared by a fleet of replicas.

Writes keep the SQLite store's cadences: a saved or deleted watch within ``flush_seconds``, noted
progress every ``progress_seconds``, a finished batch at once together with its outbox row.
:meth:`PostgresStore.open` migrates the schema under an advisory lock (see
:mod:`~watcher.store.pg_schema`) and opens a psycopg async pool, which every write and read
then uses until :meth:`PostgresStore.aclose`.

In fleet mode a :class:`Fencing` gives each watch's fencing token: writes land only where the
row still carries it, and a watch whose write did not land is reported lost (see
:mod:`~watcher.store.pg_writes`). PostgreSQL being away does not stop the run loop: it says so
(:attr:`~PostgresStore.write_failure`, :attr:`~PostgresStore.available`), keeps what it could
not write, and writes it, with backoff, once the server is back.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio
import psycopg
import structlog
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..config.values import mask_url, password_of
from ..core.watch import Key, Watch
from ..errors import ConfigError, StoreUnavailable
from .codec import COLUMNS, DamagedRow, decode
from .pending import PendingWrites
from .pg_schema import NewerSchema, check_schema_name, migrate
from .pg_writes import plan, run
from .protocol import OutboxItem, WriteFailure

log = structlog.get_logger("watcher.store.postgres")

#: How long a replica keeps the outbox rows it took for delivery before another may take them.
DELIVERY_CLAIM_SECONDS = 600.0
#: The longest wait between two tries while the server is away.
MAX_RETRY_SECONDS = 30.0

#: Driver errors that mean "the server is away (for now)", not "this is a bug"; the store's
#: methods raise them as :class:`StoreUnavailable`.
UNAVAILABLE = (psycopg.OperationalError, PoolTimeout)
#: Everything that means the database is away, for callers that use :meth:`connection` too.
AWAY = (*UNAVAILABLE, StoreUnavailable)

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


#: Damaged rows named one by one when the store is refused; the rest are counted.
MAX_DAMAGED_SHOWN = 20


class LeaseLost(StoreUnavailable):
    """A fenced write did not land: another replica owns the watch now (or it was deleted).
    Nothing of it was written; the lease loop drops the watch here."""


class Fencing(Protocol):
    """Fleet mode: which watches this replica owns, under which token."""

    def token(self, key: Key) -> int | None:
        """The fencing token this replica holds for ``key``, or ``None``."""

    def lost(self, keys: Collection[Key]) -> None:
        """Writes of these watches did not land: they are not ours any more."""


class PostgresStore:
    """Open with :meth:`open`; run :meth:`run` in the task group; close with :meth:`aclose`."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        replica: str = "",
        flush_seconds: float = 1.0,
        progress_seconds: float = 30.0,
        outbox: bool = False,
        fencing: Fencing | None = None,
        pool_size: int = 4,
        connect_timeout: float = 10.0,
        lock_timeout: float = 10.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``url``: a libpq URL (its password stays here, never shown); ``schema``: tables in
        this schema (created if missing) instead of the connection's current one."""
        self._url = url
        self.schema = check_schema_name(schema) if schema is not None else None
        self.location = mask_url(url) + (f" (schema {schema})" if schema else "")
        self.replica = replica or f"pid-{os.getpid()}"
        self.flush_seconds = flush_seconds
        self.progress_seconds = progress_seconds
        self.connect_timeout = connect_timeout
        # A write that waits this long for a lock (a migration, an operator's LOCK TABLE) fails
        # and is tried again later, rather than hold up the flush and everything noted after.
        self.lock_timeout = lock_timeout
        self.fencing = fencing
        self._outbox = outbox
        self._pool_size = pool_size
        self._wall = wall
        self._pool: Pool | None = None
        self._lock = anyio.Lock()
        self._pending = PendingWrites()
        self.writes = 0
        self.write_failure: WriteFailure | None = None
        self.available = True  # the last statement reached the server

    def connect_kwargs(self) -> dict[str, Any]:
        """What every connection of this store is opened with."""
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(self.connect_timeout)),
            "application_name": f"batch-watcher {self.replica}"[:63],
        }
        if self.schema is not None:
            kwargs["options"] = f"-c search_path={self.schema}"
        return kwargs

    async def notifications(self, channel: str) -> AsyncIterator[None]:
        """One item for each notification on ``channel`` from this store's schema, on a
        connection of its own (a ``LISTEN`` holds it); raises what breaks the connection."""
        async with await psycopg.AsyncConnection.connect(
            self._url, **self.connect_kwargs()
        ) as conn:
            row = await (await conn.execute("SELECT current_schema()")).fetchone()
            schema = row[0] if row else None
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            async for note in conn.notifies():
                if note.payload == schema:
                    yield None

    # -- opening and closing -------------------------------------------------------------------

    async def open(self, *, load: bool = True) -> list[Watch]:
        """Migrate the schema, open the pool and return every watch stored (none with
        ``load=False``: a fleet replica loads what it claims). Refuses, with a
        :class:`ConfigError` naming ``state.url``, a database it cannot use and damaged rows."""
        rows: list[dict[str, Any]] = []
        try:
            conn = await psycopg.AsyncConnection.connect(self._url, **self.connect_kwargs())
            async with conn:
                await self._configure(conn)
                await migrate(conn, self.schema)
                if load:
                    async with conn.cursor(row_factory=dict_row) as cur:
                        await cur.execute(
                            f"SELECT {', '.join(COLUMNS)} FROM watches"  # noqa: S608
                            " ORDER BY registered_at"
                        )
                        rows = await cur.fetchall()
        except (psycopg.Error, NewerSchema, OSError) as exc:
            raise ConfigError(
                f"state.url: cannot use {self.location} as the state store: {self.scrub(exc)}"
            ) from None
        watches: list[Watch] = []
        damaged: list[DamagedRow] = []
        for row in rows:
            try:
                watches.append(decode(row))
            except DamagedRow as exc:
                damaged.append(exc)
        if damaged:
            where = f"state.url: {self.location}:"
            problems = [f"{where} {exc}" for exc in damaged[:MAX_DAMAGED_SHOWN]]
            if len(damaged) > MAX_DAMAGED_SHOWN:
                problems.append(f"{where} and {len(damaged) - MAX_DAMAGED_SHOWN} more")
            problems.append(
                f"{where} {len(damaged)} damaged watch rows; batch-watcher does not start on a "
                "store it cannot read whole: restore them, or delete those rows"
            )
            raise ConfigError(problems)
        pool: Pool = AsyncConnectionPool(
            self._url,
            min_size=1,
            max_size=self._pool_size,
            kwargs=self.connect_kwargs(),
            open=False,
            check=AsyncConnectionPool.check_connection,
            configure=self._configure,
            timeout=self.connect_timeout,
            name=f"batch-watcher-{self.replica}",
        )
        await pool.open(wait=False)
        self._pool = pool
        return watches

    async def aclose(self) -> None:
        """Write everything noted, progress too, then close the pool. What cannot be written
        now is logged (how much), and the store closes all the same."""
        pool = self._pool
        if pool is None:
            return
        with anyio.CancelScope(shield=True):
            noted = self._pending.counts()
            try:
                await self.flush(progress=True)
            except StoreUnavailable as exc:
                log.error("state_not_written", store=self.location, error=str(exc), **noted)
            finally:
                self._pool = None
                await pool.close()

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    # -- the engine's side (WatchStore) --------------------------------------------------------

    def save(self, watch: Watch) -> None:
        self._pending.save(watch)

    def note_progress(self, watch: Watch) -> None:
        """Note that the watch's progress moved; written at the next checkpoint."""
        self._pending.note_progress(watch)

    def delete(self, key: Key) -> None:
        self._pending.delete(key)

    def forget(self, keys: Collection[Key]) -> None:
        """Write nothing more of these watches, and delete none of them: they were handed over
        to another replica, lost to one, or deleted by one (fleet mode)."""
        for key in keys:
            self._pending.forget(key)

    async def save_finished(self, watch: Watch) -> None:
        """Write the ended watch (and its outbox row) at once. Raises :class:`LeaseLost` when
        the watch is no longer this replica's: then nothing of it was written."""
        self.save(watch)
        if self._outbox and watch.result is not None:
            self._pending.deliver(watch.key, json.dumps(watch.result.as_dict()))
        lost = await self._commit()
        if watch.key in lost:
            raise LeaseLost(f"{watch.vector_store_id}/{watch.batch_id} is not ours any more")

    async def save_now(self, watch: Watch) -> None:
        """Save the watch and write it, with everything saved before, durably. Raises
        :class:`LeaseLost` when the watch is no longer this replica's."""
        self.save(watch)
        if watch.key in await self._commit():
            raise LeaseLost(f"{watch.vector_store_id}/{watch.batch_id} is not ours any more")

    async def flush(self, *, progress: bool = False) -> None:
        """Write everything saved so far; noted progress only with ``progress``."""
        if self._pending.any(progress=progress):
            await self._commit(progress=progress)

    async def run(self) -> None:
        """Flush saved watches every ``flush_seconds`` and noted progress every
        ``progress_seconds`` until cancelled, then both once more. While the server is away,
        try again with backoff; what was noted waits for it."""
        last_checkpoint = anyio.current_time()
        try:
            while True:
                until_checkpoint = last_checkpoint + self.progress_seconds - anyio.current_time()
                delay = min(self.flush_seconds, until_checkpoint)
                if self.write_failure is not None:
                    backoff = self.flush_seconds * 2**self.write_failure.attempts
                    delay = min(MAX_RETRY_SECONDS, backoff)
                await anyio.sleep(max(0.0, delay))
                now = anyio.current_time()
                checkpoint = now >= last_checkpoint + self.progress_seconds
                try:
                    await self.flush(progress=checkpoint)
                except StoreUnavailable:
                    continue  # the checkpoint comes again with the next try
                if checkpoint:
                    last_checkpoint = now
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(StoreUnavailable):
                await self.flush(progress=True)

    # -- the notifier's side -------------------------------------------------------------------

    async def pending_deliveries(self, limit: int = 100) -> list[OutboxItem]:
        """Take up to ``limit`` undelivered outbox rows, oldest first, for this replica. Rows
        another live replica took are left to it until its claim runs out; a crashed replica's
        are taken once its lease has (and are delivered again, under the same id)."""
        query = """
            UPDATE outbox SET claimed_by = %(me)s,
                claimed_until = now() + make_interval(secs => %(claim)s)
            WHERE id IN (
                SELECT id FROM outbox
                WHERE claimed_by IS NULL OR claimed_by = %(me)s OR claimed_until < now()
                   OR claimed_by NOT IN (SELECT name FROM replicas WHERE expires_at > now())
                ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
            )
            RETURNING id, vector_store_id, batch_id, payload
        """
        params = {"me": self.replica, "claim": DELIVERY_CLAIM_SECONDS, "limit": limit}
        try:
            async with self.connection() as conn:
                cur = await conn.execute(query, params)
                rows = await cur.fetchall()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(self._cannot("read the outbox", exc)) from exc
        return sorted((OutboxItem(int(r[0]), r[1], r[2], r[3]) for r in rows), key=_by_id)

    async def delivered(self, item_id: int) -> None:
        try:
            async with self.connection() as conn:
                await conn.execute("DELETE FROM outbox WHERE id = %s", (item_id,))
        except UNAVAILABLE as exc:
            raise StoreUnavailable(self._cannot("write", exc)) from exc

    # -- plumbing ------------------------------------------------------------------------------

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Every new connection: how long a statement may wait for a lock."""
        wait = f"{round(self.lock_timeout * 1000)}ms"
        await conn.execute("SELECT set_config('lock_timeout', %s, false)", (wait,))

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection from the pool; marks the store unavailable when the server is away."""
        if self._pool is None:
            raise RuntimeError("the state store is not open")
        try:
            async with self._pool.connection(timeout=self.connect_timeout) as conn:
                yield conn
        except UNAVAILABLE:
            self.available = False
            raise
        self.available = True

    async def _commit(self, *, progress: bool = False) -> set[Key]:
        """Write what is noted, in one transaction; return the watches found lost. What could
        not be written is noted again (unless newer was noted meanwhile)."""
        async with self._lock:
            pending = self._pending.take(progress=progress)
            if not (pending.dirty or pending.deleted or pending.deliveries or pending.progress):
                return set()
            fencing = self.fencing
            try:
                async with self.connection() as conn:
                    lost = await run(conn, plan(pending, fencing.token if fencing else None))
            except UNAVAILABLE as exc:
                self._pending.give_back(pending)
                self._failed(exc)
                raise StoreUnavailable(self._cannot("write", exc)) from exc
            except BaseException:
                self._pending.give_back(pending)
                raise
            self.writes += 1
            self.write_failure = None
        if lost and fencing is not None:
            log.warning("leases_lost_on_write", count=len(lost))
            fencing.lost(lost)
        return lost

    def _failed(self, exc: BaseException) -> None:
        before = self.write_failure
        self.write_failure = WriteFailure(
            error=self.scrub(exc),
            since=before.since if before else self._wall(),
            attempts=before.attempts + 1 if before else 1,
        )
        if before is None:
            log.warning("state_store_unavailable", error=self.write_failure.error)

    def _cannot(self, what: str, exc: BaseException) -> str:
        return f"the state store {self.location} cannot {what}: {self.scrub(exc)}"

    def scrub(self, exc: BaseException) -> str:
        """The error as text, with no password in it."""
        text = f"{type(exc).__name__}: {exc}".strip()
        for secret in (password_of(self._url), os.environ.get("PGPASSWORD")):
            if secret:
                text = text.replace(secret, "********")
        return text


def _by_id(item: OutboxItem) -> int:
    return item.id
