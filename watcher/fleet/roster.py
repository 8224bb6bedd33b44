"""Every watch of the fleet, with its owner and the state of its lease, read from PostgreSQL.

Any replica answers the control API and the status page for the whole fleet: it reads the
``watches`` rows joined with the live ``replicas``. A watch's lease is ``owned`` while its owner's
heartbeat holds, ``expired`` once it ran out (the next replica to tick claims it), ``unowned``
while no replica has claimed it (just registered, or handed over). Registering and deleting are
here too: both work on the row, whichever replica owns the watch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import psycopg
from psycopg.rows import dict_row

from ..core.watch import Key, Watch
from ..store.codec import COLUMNS, decode
from ..store.pg_writes import INSERT_NEW, columns_of

Lease = Literal["owned", "unowned", "expired"]
LEASES: Final[tuple[Lease, ...]] = ("owned", "unowned", "expired")


@dataclass(frozen=True, slots=True)
class Ownership:
    """Who polls a watch: ``owner`` (a replica's name, or ``None``) and its lease's state."""

    owner: str | None
    lease: Lease

    def as_dict(self) -> dict[str, Any]:
        return {"owner": self.owner, "lease": self.lease}


@dataclass(frozen=True, slots=True)
class Listed:
    """One watch as the database holds it, and who owns it."""

    watch: Watch
    ownership: Ownership

    def as_dict(self) -> dict[str, Any]:
        """The watch as the control API shows it, with its owner and lease."""
        return {**self.watch.as_dict(), **self.ownership.as_dict()}


_SELECT: Final = f"""
SELECT {", ".join(f"w.{c}" for c in COLUMNS)}, w.owner,
    (r.name IS NOT NULL) AS live
FROM watches AS w
LEFT JOIN replicas AS r ON r.name = w.owner AND r.expires_at > now()
"""  # noqa: S608 - fixed text

_ALL: Final = _SELECT + " ORDER BY w.registered_at, w.vector_store_id, w.batch_id"
_ONE: Final = _SELECT + " WHERE w.vector_store_id = %s AND w.batch_id = %s"

_UNOWNED: Final = """
SELECT count(*) FROM watches AS w
WHERE w.owner IS NULL OR NOT EXISTS (
    SELECT 1 FROM replicas AS r WHERE r.name = w.owner AND r.expires_at > now())
"""

_DELETE: Final = """
DELETE FROM watches WHERE vector_store_id = %s AND batch_id = %s RETURNING owner
"""


def _listed(row: dict[str, Any]) -> Listed:
    owner = row["owner"]
    lease: Lease = "unowned" if owner is None else ("owned" if row["live"] else "expired")
    return Listed(decode(row), Ownership(owner, lease))


async def read_all(conn: psycopg.AsyncConnection[Any]) -> list[Listed]:
    """Every watch, the oldest registered first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_ALL)
        return [_listed(row) for row in await cur.fetchall()]


async def read_one(conn: psycopg.AsyncConnection[Any], key: Key) -> Listed | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_ONE, key)
        row = await cur.fetchone()
    return None if row is None else _listed(row)


async def count_unowned(conn: psycopg.AsyncConnection[Any]) -> int:
    """Watches no live replica owns (unowned or expired)."""
    row = await (await conn.execute(_UNOWNED)).fetchone()
    return int(row[0]) if row is not None else 0


async def insert_new(conn: psycopg.AsyncConnection[Any], watches: Sequence[Watch]) -> set[Key]:
    """Write these watches where no row is there yet; return the keys written."""
    if not watches:
        return set()
    cur = await conn.execute(INSERT_NEW, columns_of(watches))
    return {(str(r[0]), str(r[1])) for r in await cur.fetchall()}


async def delete(conn: psycopg.AsyncConnection[Any], key: Key) -> tuple[bool, str | None]:
    """Delete the watch's row, whoever owns it: (whether there was one, its owner). The owner
    finds its token gone at its next heartbeat (or write) and forgets the watch."""
    cur = await conn.execute(_DELETE, key)
    row = await cur.fetchone()
    return (False, None) if row is None else (True, row[0])
