"""The PostgreSQL schema, versioned: each migration runs once, in order, under an advisory lock.

Replicas that start together all call :func:`migrate`; the first to take the lock brings the
schema up to date in one transaction, and the others, waiting on the lock, find nothing left to
do. A database migrated by a newer batch-watcher is refused, never written.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

import psycopg
from psycopg import sql

#: Each entry brings the schema from its index to its index + 1. Append; never edit one that
#: has shipped.
MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: watches with their owners, replicas with their heartbeats and budget grants, the
    # webhook outbox. A watch's lease is its owner's: it holds while the owner's row has not
    # expired; ``fence`` grows by one at each claim.
    """
    CREATE TABLE watches (
        vector_store_id TEXT NOT NULL,
        batch_id TEXT NOT NULL,
        labels TEXT NOT NULL,
        options TEXT NOT NULL,
        registered_at DOUBLE PRECISION NOT NULL,
        progress TEXT NOT NULL,
        result TEXT,
        finished_at DOUBLE PRECISION,
        owner TEXT,
        fence BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (vector_store_id, batch_id)
    );
    CREATE INDEX watches_owner ON watches (owner);
    CREATE TABLE replicas (
        name TEXT PRIMARY KEY,
        incarnation TEXT NOT NULL,
        started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        heartbeat_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        requests_per_minute DOUBLE PRECISION NOT NULL DEFAULT 0,
        concurrency INTEGER NOT NULL DEFAULT 0,
        leaving BOOLEAN NOT NULL DEFAULT false
    );
    CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        vector_store_id TEXT NOT NULL,
        batch_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        claimed_by TEXT,
        claimed_until TIMESTAMPTZ
    );
    """,
)

SCHEMA_VERSION: Final = len(MIGRATIONS)

_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_schema_name(name: str) -> str:
    """A schema name we put into statements and connection options without quoting."""
    if not _SCHEMA_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a schema name ([a-z_][a-z0-9_]*, at most 63)")
    return name


class NewerSchema(Exception):
    """The database was migrated by a newer batch-watcher."""


def lock_key(schema: str) -> int:
    """The advisory lock (a signed 64-bit key) that guards migrating ``schema``."""
    digest = hashlib.sha256(f"batch-watcher:migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate(conn: psycopg.AsyncConnection[Any], schema: str | None = None) -> int:
    """Bring the schema (``schema``, created if missing, or the connection's current one) up to
    date in one transaction under its advisory lock; return how many migrations ran."""
    async with conn.transaction():
        if schema is None:
            row = await (await conn.execute("SELECT current_schema()")).fetchone()
            target = str(row[0]) if isinstance(row, tuple) and row[0] is not None else "public"
        else:
            target = schema
        # Held to the end of the transaction: a second replica waits here, then finds the
        # versions already applied.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(target),))
        if schema is not None:
            name = sql.Identifier(schema)
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
            await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(name))
        await conn.execute(_VERSIONS)
        cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
        row = await cur.fetchone()
        current = int(row[0]) if isinstance(row, tuple) else 0
        if current > SCHEMA_VERSION:
            raise NewerSchema(
                f"schema version {current} is newer than this batch-watcher knows "
                f"({SCHEMA_VERSION})"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[version - 1].encode())
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        return SCHEMA_VERSION - current
