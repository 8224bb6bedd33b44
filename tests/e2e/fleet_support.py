"""What the fleet's end-to-end tests share: a schema of their own, who owns what, who exports
what."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from harness import DaemonProcess
from postgres_fixtures import PG_URL, drop_schema

BATCH = "openai_vector_store_file_batch"


def schema_url(server_url: str, schema: str) -> str:
    """``server_url`` with its connections' search path set to ``schema``."""
    separator = "&" if "?" in server_url else "?"
    return f"{server_url}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture
def fleet_url(pg_url: str) -> Iterator[str]:
    """A URL whose connections use a schema of their own (created here, dropped after)."""
    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield schema_url(PG_URL, schema)
    drop_schema(schema)


def owners(url: str) -> Counter[str | None]:
    """How many watches each replica owns (``None``: none does)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT owner, count(*) FROM watches GROUP BY owner").fetchall()
    return Counter({r[0]: int(r[1]) for r in rows})


def owner_of(url: str, batch_id: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT owner FROM watches WHERE batch_id = %s", (batch_id,)).fetchone()
    return None if row is None else row[0]


def exported(replicas: list[DaemonProcess]) -> Counter[str]:
    """How many replicas export each batch."""
    seen: Counter[str] = Counter()
    for r in replicas:
        if r.proc.poll() is not None:
            continue
        for name, labels, _ in r.samples():
            if name == f"{BATCH}_info":
                seen[labels["batch_id"]] += 1
    return seen


def exports(replica: DaemonProcess, batch_id: str) -> bool:
    return any(
        name == f"{BATCH}_info" and labels.get("batch_id") == batch_id
        for name, labels, _ in replica.samples()
    )
