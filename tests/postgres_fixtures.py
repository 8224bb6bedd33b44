"""A real PostgreSQL for the tests that need one: each test gets a schema of its own.

The server is ``BATCH_WATCHER_TEST_PG_URL`` (default: the local one, trust authentication,
database ``test``). A test that asks for it fails, not skips, when the server does not answer:
``.ci/run`` starts one where none runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import anyio
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PG_URL = os.environ.get("BATCH_WATCHER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def via(host: str, port: int) -> str:
    """The test server's URL, reached through ``host:port`` (a proxy) instead."""
    params = conninfo_to_dict(PG_URL)
    params.update(host=host, port=str(port))
    return make_conninfo("", **params)


def target() -> tuple[str, int]:
    """The test server's host and port."""
    params = conninfo_to_dict(PG_URL)
    return str(params.get("host") or "127.0.0.1"), int(str(params.get("port") or 5432))


def drop_schema(name: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg_url() -> str:
    """The test server's URL. Where none answers the test is skipped, as the deploy tests are
    without promtool; under ``CI=true`` it fails instead (``.ci/run`` starts one)."""
    try:
        with psycopg.connect(PG_URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        why = f"no PostgreSQL at {PG_URL} (set BATCH_WATCHER_TEST_PG_URL): {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return PG_URL


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh schema name for this test (created by whoever migrates it), dropped after."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    drop_schema(name)


def pg_connect(schema: str) -> psycopg.Connection[tuple[object, ...]]:
    """A plain connection to the test server with ``schema`` first on the search path."""
    return psycopg.connect(PG_URL, autocommit=True, options=f"-c search_path={schema}")


async def eventually(condition: Callable[[], object], seconds: float = 10.0) -> None:
    """Return once ``condition()`` is true; fail after ``seconds``."""
    with anyio.fail_after(seconds):
        while True:
            if condition():
                return
            await anyio.sleep(0.02)
