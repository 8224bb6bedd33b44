"""What any replica of a fleet answers for the whole fleet: the control API and the pages.

Every watch comes from the database (:mod:`watcher.fleet.roster`), with its owner and lease;
those this replica owns come from its engine instead, which knows them to the last reply (the
database has their progress only as of the last checkpoint). The list is read at most once per
``ttl`` however many ask.

A watch registered here is written, then claimed here unless a live replica owns it: only then
does this engine poll it. A watch deleted here is deleted in the database whoever owns it; its
owner finds its token gone at its next heartbeat and forgets it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import anyio
import structlog

from ..core.watch import Key, Watch, WatchOptions
from ..errors import StoreUnavailable
from ..fleet import roster
from ..fleet.roster import Listed, Ownership
from ..store.postgres import AWAY
from .fleet import FleetReplica

log = structlog.get_logger("watcher.daemon.fleet_view")

#: How long a list of the fleet's watches is served again.
TTL_SECONDS: Final = 1.0


@dataclass(frozen=True, slots=True)
class Listing:
    """The fleet's watches at one moment, and who owns each."""

    watches: tuple[Watch, ...]
    owners: Mapping[Key, Ownership]
    here: str  # this replica's name


class FleetView:
    def __init__(
        self,
        replica: FleetReplica,
        *,
        ttl: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replica = replica
        self._ttl = ttl
        self._clock = clock
        self._lock = anyio.Lock()
        self._last: tuple[float, Listing] | None = None

    @property
    def name(self) -> str:
        return self.replica.name

    def _mine(self) -> Ownership:
        return Ownership(self.name, "owned")

    # -- reading ---------------------------------------------------------------------------------

    async def listing(self) -> Listing:
        """Every watch of the fleet; raises :class:`StoreUnavailable` when the database does
        not answer."""
        async with self._lock:
            if self._last is not None and self._clock() - self._last[0] < self._ttl:
                return self._last[1]
            store = self.replica.store
            try:
                async with store.connection() as conn:
                    rows = await roster.read_all(conn)
            except AWAY as exc:
                raise StoreUnavailable(
                    f"the state store {store.location} cannot be read: {store.scrub(exc)}"
                ) from exc
            listing = self._merge(rows)
            self._last = (self._clock(), listing)
            return listing

    async def watches_json(self) -> list[dict[str, Any]]:
        """``GET /v1/watches``: every batch watch of the fleet, with its owner and lease."""
        listing = await self.listing()
        return [
            {**w.as_dict(), **listing.owners[w.key].as_dict()}
            for w in listing.watches
            if not w.is_store
        ]

    def _merge(self, rows: list[Listed]) -> Listing:
        engine = self.replica.engine
        watches: list[Watch] = []
        owners: dict[Key, Ownership] = {}
        for row in rows:
            key = row.watch.key
            local = engine.get(*key)
            if local is not None and row.ownership.owner == self.name:
                watches.append(local)
                owners[key] = self._mine()
            else:
                watches.append(row.watch)
                owners[key] = row.ownership
        return Listing(tuple(watches), owners, self.name)

    async def lookup(self, key: Key) -> Listed | None:
        """One watch of the fleet, or ``None``; raises :class:`StoreUnavailable`."""
        local = self.replica.engine.get(*key)
        if local is not None:
            return Listed(local, self._mine())
        store = self.replica.store
        try:
            async with store.connection() as conn:
                return await roster.read_one(conn, key)
        except AWAY as exc:
            raise StoreUnavailable(
                f"the state store {store.location} cannot be read: {store.scrub(exc)}"
            ) from exc

    # -- writing ---------------------------------------------------------------------------------

    async def register(
        self,
        vector_store_id: str,
        batch_id: str,
        *,
        labels: Mapping[str, str],
        options: WatchOptions,
    ) -> tuple[Listed, bool]:
        """Write a watch (unless the fleet has it already) and claim it here unless a live
        replica owns it: (the watch, whether it is new). Raises :class:`StoreUnavailable`."""
        key = (vector_store_id, batch_id)
        engine = self.replica.engine
        if (local := engine.get(*key)) is not None:
            return Listed(local, self._mine()), False
        options = engine.options_for(batch_id, options)  # as the engine gives a watch added here
        watch = Watch.new(
            vector_store_id, batch_id, registered_at=time.time(), labels=labels, options=options
        )
        keeper, store = self.replica.keeper, self.replica.store
        try:
            created, claimed = await keeper.register([watch])
        except AWAY as exc:
            raise StoreUnavailable(
                f"the state store {store.location} cannot write: {store.scrub(exc)}"
            ) from exc
        self._last = None
        if claimed:
            await self.replica.adopt(claimed)  # what it cannot hold, it hands over
            if (local := engine.get(*key)) is not None:
                return Listed(local, self._mine()), key in created
        found = await self.lookup(key)
        if found is None:  # deleted by another replica in the meantime
            return Listed(watch, Ownership(None, "unowned")), key in created
        return found, key in created

    async def delete(self, key: Key) -> bool:
        """Delete the watch from the fleet, whoever owns it; ``False`` if there was none.
        Raises :class:`StoreUnavailable`."""
        store = self.replica.store
        if self.replica.engine.get(*key) is not None:
            # Ours: removed like in one process (the store deletes the row, fenced writes and
            # the outbox included), then written before we answer.
            self.replica.engine.remove(*key)
            self.replica.leases.tokens.pop(key, None)  # gone by our hand: not lost
            self._last = None
            await store.flush()
            return True
        try:
            async with store.connection() as conn:
                found, owner = await roster.delete(conn, key)
        except AWAY as exc:
            raise StoreUnavailable(
                f"the state store {store.location} cannot write: {store.scrub(exc)}"
            ) from exc
        self._last = None
        if found:
            log.info(
                "watch_deleted_in_fleet",
                vector_store_id=key[0],
                batch_id=key[1],
                owner=owner,
            )
        return found
