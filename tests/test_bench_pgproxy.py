"""bench.pgproxy: the counting proxy the fleet benchmark puts between replicas and PostgreSQL
counts what a client really sent, against the real server."""

from __future__ import annotations

import psycopg
from postgres_fixtures import target, via

from bench.pgproxy import CountingProxy


def test_counts_queries_executes_and_bytes(pg_url: str) -> None:
    proxy = CountingProxy(*target())
    try:
        url = via("127.0.0.1", proxy.port) + " sslmode=disable gssencmode=disable"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT 1")  # no parameters: one simple Query
            for n in range(3):  # with parameters: the extended protocol, one Execute each
                assert conn.execute("SELECT %s::int", (n,)).fetchone() == (n,)
        counts = proxy.snapshot()
    finally:
        proxy.close()
    assert counts["counts"]["startup"] == 1
    assert counts["counts"]["Q"] == 1
    assert counts["counts"]["E"] == 3
    assert counts["counts"]["S"] == 3
    assert counts["bytes_up"] > 0
    assert counts["bytes_down"] > counts["bytes_up"]
    assert counts["connections"] == 1
