"""A fleet replica in the daemon against a real PostgreSQL: what it does with the watches the
lease keeper gives it and takes from it (the engine behind, the metrics it exports)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import psycopg
import pytest
from factories import finished
from postgres_fixtures import PG_URL, pg_connect

from watcher.config import config_from_mapping
from watcher.core.retry import RetryPolicy
from watcher.core.states import Phase
from watcher.core.watch import WatchOptions
from watcher.daemon.fleet_view import FleetView
from watcher.daemon.service import Daemon
from watcher.store.codec import decode, encode
from watcher.store.postgres import LeaseLost

VS = "vs_rep"
BATCHES = ("vsfb_r1", "vsfb_r2", "vsfb_r3")


@asynccontextmanager
async def _daemon(
    schema: str, name: str, first: Mapping[str, object] | None = None
) -> AsyncIterator[Daemon]:
    """A fleet daemon's parts (not serving): joined, its store open, one heartbeat done.
    ``first``: more keys of the first ``[[watch]]``."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    separator = "&" if "?" in PG_URL else "?"
    config = config_from_mapping(
        {
            "api": {"base_url": "http://127.0.0.1:9/v1"},
            "poll": {"deadline_seconds": 3600.0},
            "state": {"url": f"{PG_URL}{separator}options=-csearch_path%3D{schema}"},
            "watch": [
                {"vector_store_id": VS, "batch_id": b, **(first or {} if i == 0 else {})}
                for i, b in enumerate(BATCHES)
            ],
        },
        {"OPENAI_API_KEY": "sk-test-fleet-replica-0000"},
    )
    daemon = Daemon(config, environ={"BATCH_WATCHER_REPLICA_ID": name})
    assert daemon.fleet is not None
    await daemon.fleet.start(daemon.declared)
    try:
        await daemon.fleet.keeper.tick()
        yield daemon
    finally:
        await daemon.store.aclose()


async def test_a_declared_watch_joins_the_fleet_with_all_its_options(pg_schema: str) -> None:
    """A ``[[watch]]``'s overrides and ``retry`` table reach its row, and the default deadline
    the others, as the engine gives a watch added to it (the retry table was once lost)."""
    overrides = {"interval_seconds": 7.0, "retry": {"codes": ["server_error"], "max_attempts": 3}}
    async with _daemon(pg_schema, "r1", first=overrides) as daemon:
        with pg_connect(pg_schema) as conn:
            conn.row_factory = psycopg.rows.dict_row
            rows = conn.execute("SELECT * FROM watches ORDER BY batch_id").fetchall()
        options = [decode(row).options for row in rows]
        deadline = 3600.0  # [poll]'s
        assert options[0] == WatchOptions(
            interval_seconds=7.0,
            deadline_seconds=deadline,
            retry=RetryPolicy(("server_error",), 3),
        )
        assert options[1] == options[2] == WatchOptions(deadline_seconds=deadline)
        assert daemon.engine.get(VS, BATCHES[0]).options == options[0]  # type: ignore[union-attr]


def _exported(daemon: Daemon) -> str:
    body, _ = daemon.metrics.render(daemon.metrics.snapshot(daemon.engine), None)
    return body.decode()


async def test_a_lost_lease_drops_the_watch_and_its_series_at_once(pg_schema: str) -> None:
    """When the end of a watch cannot be written because another replica took it, the replica
    forgets it there and then: its engine no longer holds it and ``/metrics`` no longer exports
    it, while the others stay; the new owner's row is untouched."""
    async with _daemon(pg_schema, "r1") as daemon:
        assert {w.batch_id for w in daemon.engine.watches()} == set(BATCHES)
        assert 'batch_id="vsfb_r2"' in _exported(daemon)
        with pg_connect(pg_schema) as conn:
            conn.execute(
                "UPDATE watches SET owner = 'r9', fence = fence + 1 WHERE batch_id = 'vsfb_r2'"
            )
        watch = daemon.engine.get(VS, "vsfb_r2")
        assert watch is not None
        with pytest.raises(LeaseLost):
            await daemon.store.save_finished(finished(watch))
        assert daemon.engine.get(VS, "vsfb_r2") is None
        exported = _exported(daemon)
        assert 'batch_id="vsfb_r2"' not in exported
        assert 'batch_id="vsfb_r1"' in exported
        with pg_connect(pg_schema) as conn:
            row = conn.execute(
                "SELECT owner, result FROM watches WHERE batch_id = 'vsfb_r2'"
            ).fetchone()
        assert row == ("r9", None)


async def test_a_watch_claimed_back_is_adopted_as_its_row_is_not_as_held_here(
    pg_schema: str,
) -> None:
    """A replica paused past its lease still holds its copy of a watch. When another replica
    took it, ended it and gave it back, and this one claims it again, the engine takes the row
    (ended) in place of its stale copy, which would otherwise poll on under the new token and
    announce the end a second time."""
    async with _daemon(pg_schema, "r1") as daemon:
        assert daemon.fleet is not None
        key = (VS, "vsfb_r2")
        stale = daemon.engine.get(*key)
        assert stale is not None
        assert stale.phase is not Phase.FINISHED
        ended = finished(stale)
        row = encode(ended)
        with pg_connect(pg_schema) as conn:
            conn.execute(  # taken by r9 (fence + 1), ended there, handed back (fence + 1 more)
                "UPDATE watches SET owner = NULL, fence = fence + 2, result = %s, "
                "finished_at = %s WHERE batch_id = 'vsfb_r2'",
                (row.result, row.finished_at),
            )
        unfinished = daemon.engine.unfinished
        await daemon.fleet.keeper.tick()
        adopted = daemon.engine.get(*key)
        assert adopted is not None
        assert adopted.phase is Phase.FINISHED
        assert adopted.result == ended.result
        assert daemon.engine.unfinished == unfinished - 1
        with pg_connect(pg_schema) as conn:
            fence = conn.execute("SELECT fence FROM watches WHERE batch_id = 'vsfb_r2'").fetchone()
        assert fence is not None
        assert daemon.fleet.leases.tokens[key] == fence[0]


async def test_the_fleet_view_takes_its_own_watches_from_the_engine(pg_schema: str) -> None:
    """The fleet's list shows this replica's watches as its engine has them (newer than their
    rows) and the others' as their rows say, each with its owner and lease."""
    async with _daemon(pg_schema, "r1") as daemon:
        assert daemon.fleet is not None
        with pg_connect(pg_schema) as conn:
            conn.execute("UPDATE watches SET owner = NULL WHERE batch_id = 'vsfb_r3'")
        daemon.fleet.drop({(VS, "vsfb_r3")})
        view = FleetView(daemon.fleet, ttl=0.0)
        listing = await view.listing()
        mine = daemon.engine.get(VS, "vsfb_r1")
        assert mine is not None
        by_id = {w.batch_id: w for w in listing.watches}
        assert by_id["vsfb_r1"] is mine
        assert {k[1]: (o.owner, o.lease) for k, o in listing.owners.items()} == {
            "vsfb_r1": ("r1", "owned"),
            "vsfb_r2": ("r1", "owned"),
            "vsfb_r3": (None, "unowned"),
        }
        assert await view.lookup((VS, "vsfb_none")) is None
        assert await view.delete((VS, "vsfb_r3"))
        assert not await view.delete((VS, "vsfb_r3"))
        assert {w["batch_id"] for w in await view.watches_json()} == {"vsfb_r1", "vsfb_r2"}
