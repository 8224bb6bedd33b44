"""What the daemon asks of a state store, whatever keeps it (SQLite today).

Every promise below is held by the contract suite (``tests/test_store_contract.py``), which runs
against each backend; a new backend is one more entry in ``tests/store_backends.py``.

1. **Round trip.** :meth:`StateStore.open` returns every watch stored, field for field, oldest
   registration first; a finished one with its result, in :attr:`Phase.FINISHED`.
2. **Two cadences.** :meth:`~StateStore.save` (a new watch, its first reply) and
   :meth:`~StateStore.delete` are written by the next :meth:`~StateStore.flush`;
   :meth:`~StateStore.note_progress` only by a checkpoint (``flush(progress=True)``), as last
   noted, and may be lost in a crash. The later of a save, a note and a delete of
   one watch wins. :meth:`~StateStore.run` flushes every ``flush_seconds`` and checkpoints every
   ``progress_seconds``.
3. **Finished is durable.** :meth:`~StateStore.save_finished` returns once the watch, its result
   and (with an outbox) its webhook delivery are written, in one transaction: a restart never
   finds the result without its delivery, nor announces a batch twice.
   :meth:`~StateStore.save_now` likewise returns once the watch (and everything saved before it)
   is written: the engine records a retry attempt so before it sends the attempt's request.
4. **Outbox, at least once.** :meth:`~StateStore.pending_deliveries` returns deliveries in the
   order the batches finished, until :meth:`~StateStore.delivered` removes them; they survive
   restarts, and the deletion of their watch. A finished watch deleted before it could be
   written leaves no delivery (it was never announced).
5. **A write that fails loses nothing.** It raises :class:`~watcher.errors.StoreUnavailable`;
   what it would have written stays noted (unless something newer was noted meanwhile) and is
   written by a later flush. :attr:`~StateStore.write_failure` says why until a write succeeds.
   :meth:`~StateStore.run` never ends for a failed write: it retries with backoff.
6. **Refused at open.** A store that cannot be read, cannot be written, or holds a row the
   store could not have written, is refused by :meth:`~StateStore.open` with a
   :class:`~watcher.errors.ConfigError` naming the store and every damaged row.
7. **Closing.** :meth:`~StateStore.aclose` writes everything noted, progress too; a store that
   cannot write then logs what it could not write, and closes all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..core.watch import Watch
from ..core.watch_list import WatchStore


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A webhook delivery waiting in the outbox: the finished batch and its JSON payload."""

    id: int
    vector_store_id: str
    batch_id: str
    payload: str


@dataclass(frozen=True, slots=True)
class WriteFailure:
    """Why the store cannot write: the last error, since when (wall clock), how many writes
    failed in a row."""

    error: str
    since: float
    attempts: int


class StateStore(WatchStore, Protocol):
    """Where watches outlive the process. The engine's side is :class:`WatchStore`; the
    daemon opens, runs and closes the store, the control API flushes it, the webhook notifier
    reads its outbox."""

    @property
    def location(self) -> str:
        """Where the store is, for messages: a path, or a database without its password."""
        ...

    @property
    def is_open(self) -> bool: ...

    @property
    def write_failure(self) -> WriteFailure | None:
        """Why the last write failed, or ``None`` when it succeeded (or none was tried)."""
        ...

    async def open(self) -> list[Watch]:
        """Open (or create) the store and return every watch in it (promises 1 and 6)."""
        ...

    async def aclose(self) -> None:
        """Write everything noted and close (promise 7)."""
        ...

    async def flush(self, *, progress: bool = False) -> None:
        """Write everything saved or deleted so far, and with ``progress`` every noted
        progress; returns once it is written (promises 2 and 5)."""
        ...

    async def run(self) -> None:
        """Flush and checkpoint on schedule until cancelled, then once more (promise 2)."""
        ...

    async def pending_deliveries(self, limit: int = 100) -> list[OutboxItem]:
        """The oldest ``limit`` deliveries not yet marked delivered (promise 4)."""
        ...

    async def delivered(self, item_id: int) -> None:
        """Remove a delivery from the outbox (promise 4)."""
        ...
