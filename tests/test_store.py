"""The SQLite state store's own behaviour: the file it makes, how it writes, what it refuses.
What every backend promises is in ``test_store_contract.py``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import psutil
import pytest
from factories import finished, stored_watch
from structlog.testing import capture_logs

from watcher.errors import ConfigError, StoreUnavailable
from watcher.store.sqlite import SCHEMA_VERSION, SQLiteStore


def _rows(path: Path, table: str = "watches") -> list[sqlite3.Row]:
    """What another connection sees on disk (committed data only)."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - a fixed name
    finally:
        db.close()


def _held(path: Path) -> list[str]:
    """The files of ``path``'s store this process still holds open."""
    return [f.path for f in psutil.Process().open_files() if Path(f.path) == path]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An open, empty store that keeps an outbox."""
    s = SQLiteStore(tmp_path / "sub" / "state.sqlite3", outbox=True, busy_seconds=0.05)
    assert await s.open() == []
    yield s
    await s.aclose()


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection that holds the write lock of ``tmp_path/sub/state.sqlite3`` (created
    empty) until the test ends, as a backup tool or a second daemon would."""
    path = tmp_path / "sub" / "state.sqlite3"
    path.parent.mkdir(exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("BEGIN EXCLUSIVE")
    yield db
    db.close()


async def test_open_creates_the_file_and_its_directory(tmp_path: Path) -> None:
    """Opening a store that does not exist creates it (and its directory), empty, in WAL mode."""
    path = tmp_path / "a" / "b" / "state.sqlite3"
    store = SQLiteStore(path)
    assert await store.open() == []
    assert store.location == str(path)
    await store.aclose()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert version == (str(SCHEMA_VERSION),)
    finally:
        db.close()


async def test_saves_are_written_in_one_transaction_per_flush(store: SQLiteStore) -> None:
    """A flush writes everything saved since the last in one transaction; a flush with nothing
    new writes nothing."""
    for n in range(3):
        store.save(stored_watch(f"vsfb_{n}"))
    assert store.writes == 0
    await store.flush()
    assert store.writes == 1
    assert len(_rows(store.path)) == 3
    await store.flush()
    await store.flush(progress=True)
    assert store.writes == 1


async def test_a_finished_watch_and_its_delivery_are_one_row_each(store: SQLiteStore) -> None:
    """A finished watch is one row with its result's JSON, and one outbox row with the same."""
    await store.save_finished(finished(stored_watch("vsfb_done")))
    [row] = _rows(store.path)
    result = json.loads(row["result"])
    assert result["failed_files_by_code"] == {"unsupported_file": 1, "parsing_timeout": 1}
    [delivery] = _rows(store.path, "outbox")
    assert json.loads(delivery["payload"]) == result


# -- what is refused at start -------------------------------------------------------------------


async def test_a_damaged_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    """A file of garbage bytes is refused with a ConfigError that names ``state.path``."""
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"\x00\xffnot a database at all\x13\x37" * 500)
    store = SQLiteStore(path)
    with pytest.raises(ConfigError) as caught:
        await store.open()
    [problem] = caught.value.problems
    assert problem.startswith("state.path:")
    assert str(path) in problem
    assert not store.is_open
    assert _held(path) == [], "the refused file is still open"


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A store written by a newer batch-watcher (higher schema version) is refused."""
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    await store.aclose()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match=r"^state\.path: .*newer") as caught:
        await SQLiteStore(path).open()
    assert str(SCHEMA_VERSION + 1) in str(caught.value)
    assert _held(path) == [], "the refused file is still open"


async def test_a_store_locked_by_another_process_is_refused_at_start(
    tmp_path: Path, locked: sqlite3.Connection
) -> None:
    """A store another connection holds the write lock of cannot be written: it is refused at
    start (exit 2), naming ``state.path`` and the lock, not at the first write."""
    path = tmp_path / "sub" / "state.sqlite3"
    store = SQLiteStore(path, busy_seconds=0.05)
    with pytest.raises(ConfigError) as caught:
        await store.open()
    [problem] = caught.value.problems
    assert problem.startswith(f"state.path: cannot use {str(path)!r}")
    assert "locked" in problem
    assert "another process" in problem
    assert not store.is_open
    locked.close()
    assert _held(path) == [], "the refused file is still open"


# -- damaged rows -------------------------------------------------------------------------------

_GOOD = {
    "vector_store_id": "vs_1",
    "batch_id": "vsfb_1",
    "labels": "{}",
    "options": "{}",
    "registered_at": 1.0,
    "progress": json.dumps({"status": "in_progress", "file_counts": {"completed": 1}}),
    "result": None,
    "finished_at": None,
}
_RESULT = {
    "vector_store_id": "vs_1",
    "batch_id": "vsfb_1",
    "status": "completed",
    "file_counts": None,
    "failed_files": [],
    "failed_files_by_code": {},
    "failed_files_listed": 0,
    "failed_files_truncated": False,
    "failed_files_complete": True,
    "elapsed_seconds": 1.0,
    "finished_at": 2.0,
    "labels": {},
    "note": "",
}


def _insert(path: Path, **changes: object) -> None:
    row = {**_GOOD, **changes}
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO watches VALUES (:vector_store_id, :batch_id, :labels, :options, "
        ":registered_at, :progress, :result, :finished_at)",
        row,
    )
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"progress": "null"}, "progress is null, not a JSON object"),
        ({"progress": "{nope"}, "progress is not valid JSON"),
        (
            {"progress": json.dumps({"file_counts": {"completed": -3}})},
            "progress.file_counts.completed is out of range",
        ),
        (
            {"progress": json.dumps({"status": {"evil": True}})},
            'progress.status is {"evil": true}, not a non-empty string',
        ),
        ({"progress": json.dumps({"created_at": "soon"})}, "progress.created_at"),
        ({"progress": json.dumps({"last_poll_at": -1})}, "progress.last_poll_at"),
        ({"labels": "[1, 2]"}, "labels is [1, 2], not a JSON object"),
        ({"labels": json.dumps({"team": 7})}, "labels"),
        ({"options": json.dumps({"nope": 1})}, 'options."nope" is no option'),
        ({"options": json.dumps({"interval_seconds": "fast"})}, "options.interval_seconds"),
        ({"registered_at": "yesterday"}, "registered_at"),
        ({"batch_id": "vsfb/../../x"}, "batch_id"),
        ({"result": json.dumps(_RESULT)}, "there is a result, but finished_at is not set"),
        ({"finished_at": 2.0}, "finished_at is set, but there is no result"),
        ({"result": "42", "finished_at": 2.0}, "result is 42, not a JSON object"),
        (
            {"result": json.dumps({**_RESULT, "status": ["x"]}), "finished_at": 2.0},
            "result.status",
        ),
        (
            {"result": json.dumps({**_RESULT, "failed_files": [{"id": "f"}]}), "finished_at": 2.0},
            "result.failed_files[0].last_error",
        ),
        (
            {"result": json.dumps({**_RESULT, "batch_id": "other"}), "finished_at": 2.0},
            "result is for another watch",
        ),
        (
            {
                "result": json.dumps({**_RESULT, "failed_files_by_code": {"x": -1}}),
                "finished_at": 2,
            },
            "failed_files_by_code",
        ),
    ],
)
async def test_a_damaged_row_is_refused_naming_it(
    tmp_path: Path, changes: dict[str, object], said: str
) -> None:
    """A row the store could not have written (JSON that is not an object, a negative count, a
    status stored as an object, a result without its time…) is refused at start with a
    ConfigError naming ``state.path``, the row and the field: never a traceback, nor a watch
    that makes ``/metrics`` fail later."""
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    await store.aclose()
    _insert(path, **changes)
    again = SQLiteStore(path)
    with pytest.raises(ConfigError) as caught:
        await again.open()
    first, *_, last = caught.value.problems
    batch_id = changes.get("batch_id", "vsfb_1")
    assert first.startswith(f'state.path: {str(path)!r}: the watch "vs_1"/{json.dumps(batch_id)}')
    assert said in first
    assert "1 damaged watch rows" in last
    assert "DELETE FROM watches" in last
    assert not again.is_open
    assert _held(path) == []


async def test_every_damaged_row_is_named_at_once(tmp_path: Path) -> None:
    """Several damaged rows are all named in one refusal, beside the good ones left alone;
    past twenty, the rest are counted."""
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    store.save(stored_watch("vsfb_good"))
    await store.aclose()
    for n in range(25):
        _insert(path, batch_id=f"vsfb_bad_{n:02d}", progress="null")
    with pytest.raises(ConfigError) as caught:
        await SQLiteStore(path).open()
    problems = caught.value.problems
    assert len(problems) == 22
    assert all("vsfb_bad_" in p for p in problems[:20])
    assert "and 5 more damaged rows" in problems[20]
    assert "25 damaged watch rows" in problems[21]
    assert not any("vsfb_good" in p for p in problems)


# -- writes that fail ---------------------------------------------------------------------------


async def test_a_lock_held_by_another_process_fails_a_write_and_says_so(
    store: SQLiteStore,
) -> None:
    """A write that waits past ``busy_seconds`` for another connection's lock raises
    StoreUnavailable saying so, logs ``state_write_failed`` (no traceback), and the first write
    after the lock is released logs ``state_write_recovered``."""
    store.save(stored_watch())
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with capture_logs() as logs:
        with pytest.raises(StoreUnavailable, match="locked") as caught:
            await store.flush()
        holder.execute("ROLLBACK")
        holder.close()
        await store.flush()
    assert "another process" in str(caught.value)
    failed, recovered = [e for e in logs if e["event"].startswith("state_write")]
    assert failed["event"] == "state_write_failed"
    assert failed["log_level"] == "warning"
    assert failed["saved"] == 1
    assert "exc_info" not in failed
    assert recovered["event"] == "state_write_recovered"
    assert recovered["attempts"] == 1
    assert len(_rows(store.path)) == 1


async def test_a_read_only_store_fails_writes_until_it_is_writable(store: SQLiteStore) -> None:
    """A store that turns read-only under a running daemon (here: SQLite's ``query_only``, as
    root ignores file modes) fails each write with StoreUnavailable and keeps what it could not
    write until it can."""
    store.save(stored_watch())
    store._conn().execute("PRAGMA query_only = ON")
    with pytest.raises(StoreUnavailable, match="readonly"):
        await store.flush()
    assert store.write_failure is not None
    assert "readonly" in store.write_failure.error
    store._conn().execute("PRAGMA query_only = OFF")
    await store.flush()
    assert store.write_failure is None
    assert len(_rows(store.path)) == 1


async def test_a_watch_deleted_while_its_write_fails_stays_deleted(store: SQLiteStore) -> None:
    """A finished watch deleted while the write that carries it is failing is not written back
    by the next flush, nor is its delivery."""
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    store.save(stored_watch("vsfb_keep"))
    failed: list[BaseException] = []

    async def finish() -> None:
        try:
            await store.save_finished(finished(stored_watch("vsfb_gone")))
        except StoreUnavailable as exc:
            failed.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(finish)
        with anyio.fail_after(5):
            while True:  # the write has taken what was noted, and waits for the lock
                if not store._pending.dirty:
                    break
                await anyio.lowlevel.checkpoint()
        store.delete(("vs_1", "vsfb_gone"))
    assert failed
    holder.execute("ROLLBACK")
    holder.close()
    await store.flush()
    assert [r["batch_id"] for r in _rows(store.path)] == ["vsfb_keep"]
    assert _rows(store.path, "outbox") == []
