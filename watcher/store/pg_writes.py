"""What the PostgreSQL store writes in one transaction, as a plan of statements.

The plan is a pure function of what was taken to be written (a
:class:`~watcher.store.pending.Taken`) and of the fencing tokens; :func:`run` sends it on one
connection, in one transaction. Fenced writes (fleet mode) update a watch only where its
``fence`` is still the token this replica claimed it with: a replica that was paused past its
lease finds the row claimed again, writes nothing, and learns that the watch is no longer its
own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, LiteralString

import psycopg

from ..core.watch import Key, Watch
from .codec import Row, encode
from .pending import Taken

_COLUMNS: Final = (
    "vector_store_id, batch_id, labels, options, registered_at, progress, result, finished_at"
)
_TYPES: Final = (
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], %s::text[], %s::text[], "
    "%s::float8[]"
)

DELETE: Final = """
DELETE FROM watches AS w USING unnest(%s::text[], %s::text[]) AS d(vector_store_id, batch_id)
WHERE w.vector_store_id = d.vector_store_id AND w.batch_id = d.batch_id
"""

UPSERT: Final = f"""
INSERT INTO watches ({_COLUMNS}) SELECT * FROM unnest({_TYPES})
ON CONFLICT (vector_store_id, batch_id) DO UPDATE SET
    labels = EXCLUDED.labels, options = EXCLUDED.options,
    registered_at = EXCLUDED.registered_at, progress = EXCLUDED.progress,
    result = EXCLUDED.result, finished_at = EXCLUDED.finished_at
"""  # noqa: S608 - fixed text

#: A new watch on a replica that does not own it: written unless already there.
INSERT_NEW: Final = f"""
INSERT INTO watches ({_COLUMNS}) SELECT * FROM unnest({_TYPES})
ON CONFLICT (vector_store_id, batch_id) DO NOTHING
RETURNING vector_store_id, batch_id
"""  # noqa: S608 - fixed text

FENCED_UPDATE: Final = f"""
UPDATE watches AS w SET
    labels = t.labels, options = t.options, registered_at = t.registered_at,
    progress = t.progress, result = t.result, finished_at = t.finished_at
FROM unnest({_TYPES}, %s::int8[]) AS t({_COLUMNS}, fence)
WHERE w.vector_store_id = t.vector_store_id AND w.batch_id = t.batch_id AND w.fence = t.fence
RETURNING w.vector_store_id, w.batch_id
"""  # noqa: S608 - fixed text

OUTBOX: Final = """
INSERT INTO outbox (vector_store_id, batch_id, payload)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])
"""


@dataclass(frozen=True, slots=True)
class Step:
    """One statement; ``returns_keys``: its rows are the keys it wrote."""

    query: LiteralString
    params: Sequence[object]
    returns_keys: bool = False


@dataclass(slots=True)
class Plan:
    steps: list[Step]
    #: Keys written under a fence or as new: written only if a step returns them.
    checked: set[Key]
    #: Outbox rows, inserted for the keys that were written.
    deliveries: list[tuple[Key, str]]


def _columns(rows: Sequence[Row]) -> list[list[object]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 8


def columns_of(watches: Sequence[Watch]) -> list[list[object]]:
    """The parameters of :data:`UPSERT` or :data:`INSERT_NEW` for these watches."""
    return _columns([encode(w) for w in watches])


def _rows(taken: Taken) -> dict[Key, Row]:
    """One row per watch, the newest: a watch noted after it was saved has its progress row
    last."""
    rows = dict(taken.dirty)
    rows.update(((row.vector_store_id, row.batch_id), row) for row in taken.progress_rows)
    return rows


def plan(pending: Taken, token: Callable[[Key], int | None] | None) -> Plan:
    """The statements that write ``pending``; ``token`` gives each watch's fencing token (fleet
    mode; ``None``: the watch is not ours, so it is only written if new)."""
    steps: list[Step] = []
    if pending.deleted:
        keys = sorted(pending.deleted)
        steps.append(Step(DELETE, [[k[0] for k in keys], [k[1] for k in keys]]))
    rows = _rows(pending)
    checked: set[Key] = set()
    if rows and token is None:
        steps.append(Step(UPSERT, _columns(list(rows.values()))))
    elif rows and token is not None:
        fenced: list[Row] = []
        fences: list[int] = []
        new: list[Row] = []
        for key, row in rows.items():
            fence = token(key)
            if fence is None:
                new.append(row)
            else:
                fenced.append(row)
                fences.append(fence)
        if fenced:
            steps.append(Step(FENCED_UPDATE, [*_columns(fenced), fences], returns_keys=True))
        if new:
            steps.append(Step(INSERT_NEW, _columns(new), returns_keys=True))
        checked = set(rows)
    return Plan(steps, checked, list(pending.deliveries))


def _outbox_step(plan: Plan, lost: set[Key]) -> Step | None:
    kept = [(key, payload) for key, payload in plan.deliveries if key not in lost]
    if not kept:
        return None
    return Step(OUTBOX, [[k[0] for k, _ in kept], [k[1] for k, _ in kept], [p for _, p in kept]])


async def run(conn: psycopg.AsyncConnection[Any], plan: Plan) -> set[Key]:
    """Run ``plan`` in one transaction; return the checked keys it could not write."""
    written: set[Key] = set()
    async with conn.transaction(), conn.cursor() as cur:
        for step in plan.steps:
            await cur.execute(step.query, step.params)
            if step.returns_keys:
                rows = await cur.fetchall()
                written.update((str(r[0]), str(r[1])) for r in rows)
        lost = plan.checked - written
        if (outbox := _outbox_step(plan, lost)) is not None:
            await cur.execute(outbox.query, outbox.params)
    return lost
