"""Ownership of watches by lease, in PostgreSQL: heartbeats, claims, hand-overs, fencing tokens.

A replica's heartbeat (its row in ``replicas``, good until ``expires_at``) is the lease of every
watch whose row names it as ``owner``. A watch whose owner is missing or expired may be claimed
by any live replica: ``FOR UPDATE SKIP LOCKED``, so that replicas claiming at once take
different watches, and ``fence = fence + 1``, the token under which the new owner writes (see
:class:`~watcher.store.postgres.Fencing`). A replica that was paused past its lease keeps its
old token, and its writes no longer land.

Every statement here runs on a connection the caller gives, most inside the lease loop's one
transaction per tick (:mod:`watcher.fleet.keeper`), which holds the fleet's budget lock so that
grants grow one replica at a time (see :mod:`watcher.fleet.share`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from ..core.watch import Key, Watch
from ..errors import WatcherError
from ..store.codec import decode

#: Rows of replicas that stopped this long ago are deleted by whichever replica sees them.
FORGET_REPLICAS_AFTER_SECONDS: Final = 3600.0
#: A leaving replica notifies this channel, its schema as the payload, so that the others claim
#: its watches at once rather than at their next tick.
LEAVING_CHANNEL: Final = "batch_watcher_leaving"


class NameTaken(WatcherError):
    """Another live process heartbeats under this replica's name."""


@dataclass(frozen=True, slots=True)
class Fleet:
    """The fleet as one heartbeat saw it."""

    live: tuple[str, ...]  # live replicas' names, this one included, not those leaving
    active: int  # watches still being watched, in the whole fleet
    finished: int
    owned_active: int  # of those, this replica's
    owned_finished: int
    others_requests_per_minute: float  # the other live replicas' recorded grants (leaving too)
    others_concurrency: float
    fewest_active: int | None = None  # the fewest any other live replica holds
    fewest_finished: int | None = None
    unowned: int = 0  # watches no live replica owns: not claimed yet, or their owner's expired


@dataclass(frozen=True, slots=True)
class Claimed:
    """A watch this replica just claimed, under ``fence``; ``previous``: the owner it was taken
    from (its lease had expired), or ``None`` if it had none."""

    watch: Watch
    fence: int
    previous: str | None


def budget_lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"batch-watcher:budget:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_HEARTBEAT = """
INSERT INTO replicas AS r
    (name, incarnation, heartbeat_at, expires_at, requests_per_minute, concurrency)
VALUES (%(me)s, %(incarnation)s, now(), now() + make_interval(secs => %(lease)s),
    %(rpm)s, %(concurrency)s)
ON CONFLICT (name) DO UPDATE SET
    incarnation = EXCLUDED.incarnation, heartbeat_at = EXCLUDED.heartbeat_at,
    expires_at = EXCLUDED.expires_at, requests_per_minute = EXCLUDED.requests_per_minute,
    concurrency = EXCLUDED.concurrency, leaving = false,
    started_at = CASE WHEN r.incarnation = EXCLUDED.incarnation THEN r.started_at ELSE now() END
WHERE r.incarnation = EXCLUDED.incarnation OR r.expires_at <= now()
RETURNING name
"""

_LIVE = """
SELECT name, requests_per_minute, concurrency, leaving FROM replicas WHERE expires_at > now()
"""

_COUNTS = """
SELECT owner, count(*) FILTER (WHERE result IS NULL), count(*) FILTER (WHERE result IS NOT NULL)
FROM watches GROUP BY owner
"""

_CLAIM = """
WITH candidates AS (
    SELECT vector_store_id, batch_id, owner FROM watches
    WHERE (result IS NULL) = %(active)s
      AND (owner IS NULL OR owner NOT IN (SELECT name FROM replicas WHERE expires_at > now()))
    ORDER BY registered_at
    LIMIT %(limit)s
    FOR UPDATE OF watches SKIP LOCKED
)
UPDATE watches AS w SET owner = %(me)s, fence = w.fence + 1
FROM candidates AS c
WHERE w.vector_store_id = c.vector_store_id AND w.batch_id = c.batch_id
RETURNING w.*, c.owner AS previous
"""

_CLAIM_KEYS = """
WITH candidates AS (
    SELECT w.vector_store_id, w.batch_id, w.owner
    FROM watches AS w
    JOIN unnest(%(vs)s::text[], %(b)s::text[]) AS k(vector_store_id, batch_id)
        USING (vector_store_id, batch_id)
    WHERE w.owner IS NULL OR w.owner = %(me)s
       OR w.owner NOT IN (SELECT name FROM replicas WHERE expires_at > now())
    FOR UPDATE OF w
)
UPDATE watches AS w SET owner = %(me)s, fence = w.fence + 1
FROM candidates AS c
WHERE w.vector_store_id = c.vector_store_id AND w.batch_id = c.batch_id
RETURNING w.*, c.owner AS previous
"""

_PICK = """
SELECT vector_store_id, batch_id FROM watches
WHERE owner = %(me)s AND (result IS NULL) = %(active)s
ORDER BY registered_at DESC LIMIT %(limit)s
"""

_RELEASE = """
UPDATE watches AS w SET owner = NULL
FROM unnest(%(vs)s::text[], %(b)s::text[], %(fence)s::int8[]) AS k(vector_store_id, batch_id, fence)
WHERE w.vector_store_id = k.vector_store_id AND w.batch_id = k.batch_id
  AND w.owner = %(me)s AND w.fence = k.fence
"""


class Leases:
    """One replica's leases: its name, its fencing tokens, and the statements that keep them.

    It is the store's :class:`~watcher.store.postgres.Fencing`: ``token`` for writes, ``lost``
    when one did not land."""

    def __init__(
        self,
        name: str,
        lease_seconds: float,
        *,
        schema: str = "public",
        incarnation: str | None = None,
        on_lost: Callable[[set[Key]], None] | None = None,
    ) -> None:
        self.name = name
        self.lease_seconds = lease_seconds
        self.incarnation = incarnation or uuid.uuid4().hex
        self.tokens: dict[Key, int] = {}
        self.on_lost = on_lost
        self._budget_lock = budget_lock_key(schema)
        self.takeovers = 0  # watches claimed from an owner whose lease had expired

    # -- Fencing -------------------------------------------------------------------------------

    def token(self, key: Key) -> int | None:
        return self.tokens.get(key)

    def lost(self, keys: Collection[Key]) -> None:
        gone = {k for k in keys if self.tokens.pop(k, None) is not None}
        if gone and self.on_lost is not None:
            self.on_lost(gone)

    # -- one tick, in the caller's transaction ----------------------------------------------

    async def heartbeat(
        self, conn: psycopg.AsyncConnection[Any], requests_per_minute: float, concurrency: float
    ) -> Fleet:
        """Take the fleet's budget lock, renew this replica's lease (every watch it owns), and
        see the fleet. Raises :class:`NameTaken` if a live replica of another process has our
        name."""
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._budget_lock,))
        cur = await conn.execute(
            _HEARTBEAT,
            {
                "me": self.name,
                "incarnation": self.incarnation,
                "lease": self.lease_seconds,
                "rpm": requests_per_minute,
                "concurrency": round(concurrency),
            },
        )
        row = await cur.fetchone()
        if row is None:
            raise NameTaken(
                f"replica name {self.name!r} is in use by another live replica; give each its "
                "own BATCH_WATCHER_REPLICA_ID"
            )
        live = await (await conn.execute(_LIVE)).fetchall()
        rows = await (await conn.execute(_COUNTS)).fetchall()
        counts = {r[0]: (int(r[1]), int(r[2])) for r in rows}
        others = [r for r in live if r[0] != self.name]
        names = tuple(sorted(str(r[0]) for r in live if not r[3] or r[0] == self.name))
        mine = counts.get(self.name, (0, 0))
        theirs = [counts.get(n, (0, 0)) for n in names if n != self.name]
        alive = {r[0] for r in live}
        unowned = sum(sum(c) for owner, c in counts.items() if owner not in alive)
        return Fleet(
            live=names,
            active=sum(c[0] for c in counts.values()),
            finished=sum(c[1] for c in counts.values()),
            owned_active=mine[0],
            owned_finished=mine[1],
            others_requests_per_minute=float(sum(r[1] for r in others)),
            others_concurrency=float(sum(r[2] for r in others)),
            fewest_active=min((c[0] for c in theirs), default=None),
            fewest_finished=min((c[1] for c in theirs), default=None),
            unowned=unowned,
        )

    async def record_grants(
        self, conn: psycopg.AsyncConnection[Any], requests_per_minute: float, concurrency: float
    ) -> None:
        await conn.execute(
            "UPDATE replicas SET requests_per_minute = %s, concurrency = %s "
            "WHERE name = %s AND incarnation = %s",
            (requests_per_minute, round(concurrency), self.name, self.incarnation),
        )

    async def disown_all(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Give back every watch our name owns (a new incarnation holds none of their tokens)."""
        cur = await conn.execute("UPDATE watches SET owner = NULL WHERE owner = %s", (self.name,))
        self.tokens.clear()
        return cur.rowcount

    async def claim(
        self, conn: psycopg.AsyncConnection[Any], *, active: bool, limit: int
    ) -> list[Claimed]:
        """Claim up to ``limit`` unowned or expired watches (still watched with ``active``,
        else finished); :meth:`hold` them once the transaction is committed."""
        if limit <= 0:
            return []
        params = {"me": self.name, "active": active, "limit": limit}
        return await self._claimed(conn, _CLAIM, params)

    async def claim_keys(
        self, conn: psycopg.AsyncConnection[Any], keys: Iterable[Key]
    ) -> list[Claimed]:
        """Claim these watches, if no other live replica owns them (one registered here)."""
        ordered = sorted(keys)
        if not ordered:
            return []
        params = {"me": self.name, "vs": [k[0] for k in ordered], "b": [k[1] for k in ordered]}
        return await self._claimed(conn, _CLAIM_KEYS, params)

    async def _claimed(
        self, conn: psycopg.AsyncConnection[Any], query: Any, params: Mapping[str, object]
    ) -> list[Claimed]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        return [Claimed(decode(row), int(row["fence"]), row["previous"]) for row in rows]

    def hold(self, claimed: Iterable[Claimed]) -> set[Key]:
        """Take the tokens of what was claimed, once the claim is committed. Returns the keys
        claimed back: held here under an older token that another replica's claim (or the
        lapse of our own lease) had ended without our knowing. What this replica still holds
        of those is stale (the row may have moved on, even ended, meanwhile): the caller drops
        it before it adopts the row, or an ending would be announced twice."""
        regained: set[Key] = set()
        for c in claimed:
            key = c.watch.key
            before = self.tokens.get(key)
            if before is not None and not (c.previous == self.name and c.fence == before + 1):
                regained.add(key)
            self.tokens[key] = c.fence
            if c.previous is not None and c.previous != self.name:
                self.takeovers += 1
        return regained

    async def pick(
        self, conn: psycopg.AsyncConnection[Any], *, active: bool, limit: int
    ) -> list[Key]:
        """Up to ``limit`` of our watches to give back (the latest registered first)."""
        if limit <= 0:
            return []
        cur = await conn.execute(_PICK, {"me": self.name, "active": active, "limit": limit})
        return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]

    async def release(self, conn: psycopg.AsyncConnection[Any], keys: Iterable[Key]) -> int:
        """Give these watches back (each only where our token still holds), for another
        replica to claim at once."""
        held = sorted((k, self.tokens.pop(k)) for k in keys if k in self.tokens)
        if not held:
            return 0
        cur = await conn.execute(
            _RELEASE,
            {
                "me": self.name,
                "vs": [k[0] for k, _ in held],
                "b": [k[1] for k, _ in held],
                "fence": [f for _, f in held],
            },
        )
        return cur.rowcount

    async def reconcile(self, conn: psycopg.AsyncConnection[Any]) -> tuple[set[Key], set[Key]]:
        """Compare the tokens we hold with the rows: returns (lost, strays). Lost: claimed by
        another replica or deleted since; strays: rows that name us without our holding their
        token (a claim whose answer never reached us), given back here."""
        held = dict(self.tokens)  # tokens taken while we read are not judged on this read
        cur = await conn.execute(
            "SELECT vector_store_id, batch_id, fence FROM watches WHERE owner = %s", (self.name,)
        )
        stored = {(str(r[0]), str(r[1])): int(r[2]) for r in await cur.fetchall()}
        lost = {
            k for k, fence in held.items() if stored.get(k) != fence and self.tokens.get(k) == fence
        }
        strays = {k for k in stored if k not in self.tokens}
        if strays:
            ordered = sorted(strays)
            await conn.execute(
                _RELEASE,
                {
                    "me": self.name,
                    "vs": [k[0] for k in ordered],
                    "b": [k[1] for k in ordered],
                    "fence": [stored[k] for k in ordered],
                },
            )
        for key in lost:
            self.tokens.pop(key, None)
        return lost, strays

    async def leave(self, conn: psycopg.AsyncConnection[Any], settle: float) -> int:
        """Hand everything over at once: our watches and the deliveries we took go back to the
        fleet, and the others stop counting us in their shares; our row expires after
        ``settle`` seconds, when the others may take our budget."""
        async with conn.transaction():
            cur = await conn.execute(
                "UPDATE watches SET owner = NULL WHERE owner = %s", (self.name,)
            )
            released = cur.rowcount
            await conn.execute(
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = %s",
                (self.name,),
            )
            await conn.execute(
                "UPDATE replicas SET leaving = true, expires_at = least(expires_at, "
                "now() + make_interval(secs => %s)) WHERE name = %s AND incarnation = %s",
                (settle, self.name, self.incarnation),
            )
            await conn.execute(
                "DELETE FROM replicas WHERE expires_at < now() - make_interval(secs => %s)",
                (FORGET_REPLICAS_AFTER_SECONDS,),
            )
            # Sent at the commit: the others tick at once and claim what we released.
            await conn.execute("SELECT pg_notify(%s, current_schema())", (LEAVING_CHANNEL,))
        self.tokens.clear()
        return released
