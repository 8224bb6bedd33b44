"""The PostgreSQL state store against a real server: what it writes and when, the shared outbox,
the versioned schema, fenced writes, and a server that goes away for a while."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import contextmanager

import anyio
import psycopg
import pytest
from factories import finished as _finish
from factories import moved as _moved
from factories import stored_watch as _watch
from postgres_fixtures import PG_URL, eventually, pg_connect, target, via
from tcp_proxy import TcpProxy

from watcher.core.watch import Key, Phase
from watcher.errors import ConfigError, StoreUnavailable
from watcher.store.pg_schema import SCHEMA_VERSION, lock_key
from watcher.store.postgres import LeaseLost, PostgresStore


def _rows(schema: str, table: str = "watches") -> list[dict[str, object]]:
    """What another connection sees (committed data only)."""
    with pg_connect(schema) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f"SELECT * FROM {table}")  # noqa: S608 - a fixed name
        return cur.fetchall()


def _batch_ids(schema: str, table: str = "watches") -> list[str]:
    return sorted(str(r["batch_id"]) for r in _rows(schema, table))


def _completed(schema: str) -> dict[str, int]:
    return {
        str(r["batch_id"]): json.loads(str(r["progress"]))["file_counts"]["completed"]
        for r in _rows(schema)
    }


@pytest.fixture
async def store(pg_schema: str) -> AsyncIterator[PostgresStore]:
    """An open, empty store in a schema of its own, keeping an outbox."""
    s = PostgresStore(PG_URL, schema=pg_schema, outbox=True, replica="r1")
    assert await s.open() == []
    yield s
    await s.aclose()


async def _reopened(schema: str) -> list[str]:
    again = PostgresStore(PG_URL, schema=schema)
    try:
        return sorted(w.batch_id for w in await again.open())
    finally:
        await again.aclose()


async def test_open_migrates_a_new_schema_once(pg_schema: str) -> None:
    """Opening creates the schema at the current version; opening again migrates nothing."""
    store = PostgresStore(PG_URL, schema=pg_schema)
    assert await store.open() == []
    assert store.is_open
    await store.aclose()
    assert not store.is_open
    assert await _reopened(pg_schema) == []
    with pg_connect(pg_schema) as conn:
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


async def test_every_field_survives_a_restart(store: PostgresStore) -> None:
    """A watch in progress and a finished one (with failed files) come back field for field."""
    running = _watch("vsfb_running", team="search", corpus="manuals")
    done = _finish(_watch("vsfb_done"))
    store.save(running)
    await store.save_finished(done)
    await store.aclose()
    assert store.schema is not None
    again = PostgresStore(PG_URL, schema=store.schema)
    restored = {w.batch_id: w for w in await again.open()}
    await again.aclose()
    assert sorted(restored) == ["vsfb_done", "vsfb_running"]
    for original in (running, done):
        copy = restored[original.batch_id]
        assert copy.as_dict() == original.as_dict()
        assert copy.result == original.result
        assert copy.phase is original.phase
    assert restored["vsfb_done"].phase is Phase.FINISHED


async def test_saved_watches_wait_for_a_flush(store: PostgresStore) -> None:
    """Saved watches are only noted until ``flush``, which writes them in one transaction."""
    assert store.schema is not None
    for n in range(3):
        store.save(_watch(f"vsfb_{n}"))
    assert _rows(store.schema) == []
    await store.flush()
    assert store.writes == 1
    assert _batch_ids(store.schema) == ["vsfb_0", "vsfb_1", "vsfb_2"]
    await store.flush()  # nothing new: nothing written
    assert store.writes == 1


async def test_noted_progress_waits_for_a_checkpoint(store: PostgresStore) -> None:
    """Noted progress is written only by a checkpoint, the latest noted record of the watch."""
    assert store.schema is not None
    watch = _watch()
    store.save(watch)
    await store.flush()
    store.note_progress(_moved(watch, 6))
    await store.flush()
    assert _completed(store.schema) == {"vsfb_1": 5}
    store.note_progress(_moved(watch, 7))
    await store.flush(progress=True)
    assert _completed(store.schema) == {"vsfb_1": 7}


async def test_progress_noted_after_a_save_is_written_over_it(store: PostgresStore) -> None:
    """A watch both saved and then noted in one transaction is written once, as noted last."""
    assert store.schema is not None
    watch = _watch()
    store.save(watch)
    store.note_progress(_moved(watch, 9))
    await store.flush(progress=True)
    assert _completed(store.schema) == {"vsfb_1": 9}


async def test_delete_and_add_again(store: PostgresStore) -> None:
    """A deleted watch is gone after the next flush; deleted then saved again, it is kept."""
    assert store.schema is not None
    store.save(_watch("vsfb_keep"))
    store.save(_watch("vsfb_gone"))
    store.save(_watch("vsfb_back"))
    await store.flush()
    store.delete(("vs_1", "vsfb_gone"))
    store.delete(("vs_1", "vsfb_back"))
    store.save(_watch("vsfb_back"))
    await store.flush()
    assert _batch_ids(store.schema) == ["vsfb_back", "vsfb_keep"]
    await store.aclose()
    assert await _reopened(store.schema) == ["vsfb_back", "vsfb_keep"]


async def test_a_finished_watch_and_its_outbox_row_are_written_at_once(
    store: PostgresStore,
) -> None:
    """``save_finished`` has the result and its webhook payload committed when it returns;
    the payload leaves the outbox once delivered."""
    assert store.schema is not None
    done = _finish(_watch("vsfb_done"))
    await store.save_finished(done)
    [row] = _rows(store.schema)
    assert json.loads(str(row["result"]))["status"] == "completed"
    [item] = await store.pending_deliveries()
    assert (item.vector_store_id, item.batch_id) == ("vs_1", "vsfb_done")
    assert done.result is not None
    assert json.loads(item.payload) == done.result.as_dict()
    await store.delivered(item.id)
    assert _rows(store.schema, "outbox") == []


async def test_the_outbox_is_shared_and_each_item_goes_to_one_replica(
    store: PostgresStore,
) -> None:
    """Two live replicas reading the outbox at once take different items; a replica's items
    that it did not mark delivered go to another once its lease has run out (it died), under
    the same id."""
    assert store.schema is not None
    other = PostgresStore(PG_URL, schema=store.schema, outbox=True, replica="r2")
    await other.open()
    with pg_connect(store.schema) as conn:  # both heartbeat
        conn.execute(
            "INSERT INTO replicas (name, incarnation, heartbeat_at, expires_at) "
            "SELECT n, n, now(), now() + interval '1 hour' FROM unnest(ARRAY['r1', 'r2']) AS n"
        )
    for n in range(6):
        await store.save_finished(_finish(_watch(f"vsfb_{n}")))
    mine, theirs = await store.pending_deliveries(3), await other.pending_deliveries(10)
    assert len(mine) == 3
    assert len(theirs) == 3
    assert {i.id for i in mine}.isdisjoint(i.id for i in theirs)
    assert await other.pending_deliveries(10) == theirs  # its own claims, again
    with pg_connect(store.schema) as conn:  # r1 dies: its lease runs out
        conn.execute("UPDATE replicas SET expires_at = now() WHERE name = 'r1'")
    taken = await other.pending_deliveries(10)
    assert {i.id for i in taken} == {i.id for i in mine} | {i.id for i in theirs}
    await other.aclose()


async def test_the_run_loop_flushes_and_flushes_again_when_cancelled(
    store: PostgresStore,
) -> None:
    """``run`` writes saved watches every ``flush_seconds`` through the pool, and what is noted
    after its last flush, progress too, on its way out."""
    assert store.schema is not None
    store.flush_seconds = 0.01
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.run)
        store.save(_watch("vsfb_early"))
        await eventually(lambda: _rows(store.schema), 5)
        store.flush_seconds = 3600.0
        await anyio.sleep(0.05)
        store.note_progress(_watch("vsfb_noted"))
        store.save(_watch("vsfb_late"))
        tg.cancel_scope.cancel()
    assert _batch_ids(store.schema) == ["vsfb_early", "vsfb_late", "vsfb_noted"]


async def test_close_writes_what_is_still_noted(store: PostgresStore) -> None:
    """A clean close writes saved watches and noted progress that no flush took."""
    assert store.schema is not None
    store.save(_watch("vsfb_saved"))
    store.note_progress(_watch("vsfb_noted"))
    await store.aclose()
    assert _batch_ids(store.schema) == ["vsfb_noted", "vsfb_saved"]


async def test_a_newer_schema_is_refused_naming_the_key(store: PostgresStore) -> None:
    """A database migrated by a newer batch-watcher is refused with a ConfigError naming
    ``state.url``."""
    assert store.schema is not None
    with pg_connect(store.schema) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match=r"^state\.url: .*newer") as caught:
        await PostgresStore(PG_URL, schema=store.schema).open()
    assert str(SCHEMA_VERSION + 1) in str(caught.value)


async def test_an_unreachable_server_is_refused_with_the_password_masked() -> None:
    """A server that does not answer is a ConfigError naming ``state.url``; the URL's password
    shows as the mask, nowhere in clear."""
    closed = TcpProxy("127.0.0.1", 5432)
    closed.cut()
    url = f"postgresql://postgres:hunter2secret@127.0.0.1:{closed.port}/test"
    try:
        with pytest.raises(ConfigError) as caught:
            await PostgresStore(url, connect_timeout=2).open()
    finally:
        closed.close()
    [problem] = caught.value.problems
    assert problem.startswith("state.url: cannot use postgresql://postgres:********@127.0.0.1")
    assert "hunter2secret" not in problem


def test_replicas_starting_together_migrate_once(pg_schema: str) -> None:
    """Six replicas (threads, each with its own event loop) opening a new schema at the same
    moment all succeed, and each migration is applied exactly once."""
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    async def start() -> None:
        store = PostgresStore(PG_URL, schema=pg_schema)
        barrier.wait()
        await store.open()
        await store.aclose()

    def replica() -> None:
        try:
            anyio.run(start)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with pg_connect(pg_schema) as conn:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_migrating_waits_for_the_advisory_lock(pg_schema: str) -> None:
    """While another session holds the schema's migration lock, ``open`` waits; it finishes
    once the lock is released."""
    done = threading.Event()
    with psycopg.connect(PG_URL, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(pg_schema),))

        async def start() -> None:
            store = PostgresStore(PG_URL, schema=pg_schema)
            await store.open()
            await store.aclose()
            done.set()

        thread = threading.Thread(target=anyio.run, args=(start,))
        thread.start()
        assert not done.wait(0.5), "open() did not wait for the lock"
        holder.execute("SELECT pg_advisory_unlock(%s)", (lock_key(pg_schema),))
        assert done.wait(10)
        thread.join()


class _Tokens:
    """A fencing that holds given tokens and records what it is told it lost."""

    def __init__(self, tokens: dict[Key, int]) -> None:
        self.tokens = tokens
        self.lost_keys: set[Key] = set()

    def token(self, key: Key) -> int | None:
        return self.tokens.get(key)

    def lost(self, keys: Collection[Key]) -> None:
        self.lost_keys.update(keys)


async def test_fenced_writes_land_only_under_the_current_token(store: PostgresStore) -> None:
    """With fencing, a watch is written only where its row still carries our token; a stale
    token writes nothing (not even the webhook) and the watch is reported lost."""
    assert store.schema is not None
    ours, stale = _watch("vsfb_ours"), _watch("vsfb_stale")
    store.save(ours)
    store.save(stale)
    await store.flush()
    with pg_connect(store.schema) as conn:
        conn.execute("UPDATE watches SET fence = 3")  # claimed three times so far
    fencing = _Tokens({ours.key: 3, stale.key: 2})
    store.fencing = fencing
    ours, stale = _moved(ours, 8), _moved(stale, 8)
    store.note_progress(ours)
    store.note_progress(stale)
    await store.flush(progress=True)
    assert _completed(store.schema) == {"vsfb_ours": 8, "vsfb_stale": 5}
    assert fencing.lost_keys == {stale.key}
    with pytest.raises(LeaseLost):
        await store.save_finished(_finish(stale))
    assert _rows(store.schema, "outbox") == []
    await store.save_finished(_finish(ours))
    assert [i.batch_id for i in await store.pending_deliveries()] == ["vsfb_ours"]


async def test_a_new_watch_on_a_replica_that_does_not_own_it_is_only_inserted(
    store: PostgresStore,
) -> None:
    """With fencing, a watch without a token is written only if it is not there yet: it never
    overwrites the row its owner keeps."""
    assert store.schema is not None
    store.save(_watch("vsfb_1"))
    await store.flush()
    store.fencing = fencing = _Tokens({})
    late = _moved(_watch("vsfb_1"), 1)
    store.save(late)
    store.save(_watch("vsfb_new"))
    await store.flush()
    assert _completed(store.schema) == {"vsfb_1": 5, "vsfb_new": 5}
    assert fencing.lost_keys == {late.key}


async def test_a_server_away_for_a_while_loses_nothing(pg_schema: str) -> None:
    """While the server is unreachable the run loop keeps going and reports it unavailable;
    what was saved meanwhile is written once the server is back."""
    proxy = TcpProxy(*target())
    url = via("127.0.0.1", proxy.port)
    store = PostgresStore(url, schema=pg_schema, flush_seconds=0.05, connect_timeout=1)
    await store.open()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.run)
            store.save(_watch("vsfb_before"))
            await eventually(lambda: _rows(pg_schema), 5)
            proxy.cut()
            store.save(_watch("vsfb_during"))
            await eventually(lambda: store.write_failure is not None)
            assert not store.available
            assert _batch_ids(pg_schema) == ["vsfb_before"]
            proxy.restore()
            await eventually(lambda: store.write_failure is None and store.available, 20)
            assert len(_rows(pg_schema)) == 2
            tg.cancel_scope.cancel()
    finally:
        await store.aclose()
        proxy.close()
    assert _batch_ids(pg_schema) == ["vsfb_before", "vsfb_during"]


@contextmanager
def _locked(schema: str, *tables: str) -> Iterator[None]:
    """Writes to ``tables`` wait for a lock another session holds (reads go on)."""
    with pg_connect(schema) as conn:
        conn.autocommit = False
        conn.execute(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


async def test_the_outbox_row_and_the_finished_state_commit_together(pg_schema: str) -> None:
    """When the outbox row cannot be written (its table locked past the lock timeout), the
    finished state is not written either, nor what was saved with it; once the lock is gone,
    the next flush writes them all, the delivery with its finished watch."""
    store = PostgresStore(PG_URL, schema=pg_schema, outbox=True, lock_timeout=0.2)
    await store.open()
    try:
        store.save(_watch("vsfb_bystander"))
        with _locked(pg_schema, "outbox"), pytest.raises(StoreUnavailable):
            await store.save_finished(_finish(_watch("vsfb_done")))
        assert _rows(pg_schema) == []
        assert store.write_failure is not None
        await store.flush()
        assert _batch_ids(pg_schema) == ["vsfb_bystander", "vsfb_done"]
        assert _batch_ids(pg_schema, "outbox") == ["vsfb_done"]
        assert store.write_failure is None
    finally:
        await store.aclose()


async def test_a_failed_checkpoint_gives_noted_progress_back(pg_schema: str) -> None:
    """Progress whose checkpoint fails is noted again and written by the next checkpoint, as
    last noted; a watch deleted meanwhile stays deleted."""
    store = PostgresStore(PG_URL, schema=pg_schema, lock_timeout=0.2)
    await store.open()
    try:
        moving, gone = _watch("vsfb_moving"), _watch("vsfb_gone")
        store.save(moving)
        store.save(gone)
        await store.flush()
        store.note_progress(_moved(moving, 6))
        store.note_progress(_moved(gone, 6))
        store.note_progress(_watch("vsfb_new"))
        with _locked(pg_schema, "watches"), pytest.raises(StoreUnavailable):
            await store.flush(progress=True)
        assert _completed(pg_schema) == {"vsfb_moving": 5, "vsfb_gone": 5}
        store.delete(gone.key)
        store.note_progress(_moved(moving, 7))
        await store.flush()  # the deletion; the notes came back as notes, not as saved rows
        assert _completed(pg_schema) == {"vsfb_moving": 5}
        await store.flush(progress=True)
        assert _completed(pg_schema) == {"vsfb_moving": 7, "vsfb_new": 5}
    finally:
        await store.aclose()
