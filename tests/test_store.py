"""The SQLite state store: what survives a restart, when it is written, and what it refuses."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import psutil
import pytest

from watcher.api.models import FileCounts, LastError
from watcher.core.results import BatchResult, FailedFile
from watcher.core.states import Phase, State
from watcher.core.watch import Watch, WatchOptions
from watcher.errors import ConfigError
from watcher.store.sqlite import SCHEMA_VERSION, StateStore


def _watch(batch_id: str = "vsfb_1", **labels: str) -> Watch:
    watch = Watch.new(
        "vs_1",
        batch_id,
        labels=labels or {"team": "search"},
        options=WatchOptions(
            interval_seconds=2.5,
            deadline_seconds=600.0,
            cancel_on_timeout=True,
            stall_after_seconds=45.0,
        ),
        registered_at=1_700_000_000.25,
    )
    return replace(
        watch,
        status="in_progress",
        file_counts=FileCounts(in_progress=3, completed=5, failed=2, cancelled=0, total=10),
        created_at=1_699_999_990,
        first_seen_at=1_700_000_001.5,
        last_poll_at=1_700_000_007.75,
    )


def _moved(watch: Watch, completed: int) -> Watch:
    """The watch after its batch's counts moved."""
    return replace(watch, file_counts=FileCounts(completed=completed, total=10))


def _finish(watch: Watch) -> Watch:
    counts = FileCounts(in_progress=0, completed=8, failed=2, cancelled=0, total=10)
    result = BatchResult(
        vector_store_id=watch.vector_store_id,
        batch_id=watch.batch_id,
        status=State.COMPLETED,
        file_counts=counts,
        failed_files=(
            FailedFile("file-a", LastError("unsupported_file", 'bad "type" \\ <x>')),
            FailedFile("file-b", LastError("parsing_timeout", "too slow\nsecond line")),
        ),
        failed_by_code={"unsupported_file": 1, "parsing_timeout": 1},
        failed_files_listed=3,
        failed_files_truncated=True,
        failed_files_complete=False,
        elapsed_seconds=12.5,
        finished_at=1_700_000_012.5,
        labels=dict(watch.labels),
        note="the failed-file list is incomplete: page 2",
    )
    return replace(
        watch,
        status="completed",
        file_counts=counts,
        result=result,
        finished_at=1_700_000_012.5,
        phase=Phase.FINISHED,
    )


def _rows(path: Path, table: str = "watches") -> list[sqlite3.Row]:
    """What another connection sees on disk (committed data only)."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - a fixed name
    finally:
        db.close()


def _reopened(path: Path) -> list[Watch]:
    """The watches a new store opens the file with."""
    again = StateStore(path)
    try:
        return again.open()
    finally:
        again.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    """An open, empty store that keeps an outbox."""
    s = StateStore(tmp_path / "sub" / "state.sqlite3", outbox=True)
    assert s.open() == []
    yield s
    s.close()


def test_open_creates_the_file_and_its_directory(tmp_path: Path) -> None:
    """Opening a store that does not exist creates it (and its directory), empty, in WAL mode."""
    path = tmp_path / "a" / "b" / "state.sqlite3"
    store = StateStore(path)
    assert store.open() == []
    assert store.is_open
    store.close()
    assert not store.is_open
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert version == (str(SCHEMA_VERSION),)
    finally:
        db.close()


async def test_every_field_survives_a_restart(store: StateStore) -> None:
    """A watch in progress and a finished one (with failed files) come back field for field."""
    running = _watch("vsfb_running", team="search", corpus="manuals")
    done = _finish(_watch("vsfb_done"))
    store.save(running)
    await store.save_finished(done)
    store.close()

    restored = {w.batch_id: w for w in _reopened(store.path)}

    assert sorted(restored) == ["vsfb_done", "vsfb_running"]
    for original in (running, done):
        copy = restored[original.batch_id]
        assert copy.key == original.key
        assert copy.labels == original.labels
        assert copy.options == original.options
        assert copy.registered_at == original.registered_at
        assert copy.deadline_at == original.deadline_at
        assert copy.status == original.status
        assert copy.file_counts == original.file_counts
        assert copy.created_at == original.created_at
        assert copy.first_seen_at == original.first_seen_at
        assert copy.last_poll_at == original.last_poll_at
        assert copy.finished_at == original.finished_at
        assert copy.phase is original.phase
        assert copy.result == original.result
        assert copy.as_dict() == original.as_dict()
    assert restored["vsfb_running"].result is None
    assert restored["vsfb_done"].phase is Phase.FINISHED


async def test_progress_waits_for_a_flush(store: StateStore) -> None:
    """Progress is only noted until ``flush``, which writes everything noted in one transaction."""
    for n in range(3):
        store.save(_watch(f"vsfb_{n}"))
    assert _rows(store.path) == []
    assert store.writes == 0

    await store.flush()
    assert store.writes == 1
    assert sorted(r["batch_id"] for r in _rows(store.path)) == ["vsfb_0", "vsfb_1", "vsfb_2"]

    await store.flush()  # nothing new: nothing written
    assert store.writes == 1


async def test_only_the_latest_progress_is_written(store: StateStore) -> None:
    """Saving one watch many times between flushes writes its latest state, once."""
    watch = _watch()
    for completed in range(1, 6):
        store.save(_moved(watch, completed))
    await store.flush()
    [row] = _rows(store.path)
    assert json.loads(row["progress"])["file_counts"]["completed"] == 5


async def test_a_finished_watch_is_written_at_once(store: StateStore) -> None:
    """``save_finished`` is on disk when it returns, with any progress noted before it."""
    store.save(_watch("vsfb_other"))
    await store.save_finished(_finish(_watch("vsfb_done")))
    rows = {r["batch_id"]: r for r in _rows(store.path)}
    assert sorted(rows) == ["vsfb_done", "vsfb_other"]
    result = json.loads(rows["vsfb_done"]["result"])
    assert result["status"] == "completed"
    assert result["failed_files_by_code"] == {"unsupported_file": 1, "parsing_timeout": 1}
    assert rows["vsfb_other"]["result"] is None


async def test_the_run_loop_flushes_progress_and_flushes_again_when_cancelled(
    tmp_path: Path,
) -> None:
    """``run`` writes noted progress every ``flush_seconds`` and once more on its way out."""
    store = StateStore(tmp_path / "state.sqlite3", flush_seconds=0.01)
    store.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.run)
        store.save(_watch("vsfb_early"))
        with anyio.fail_after(5):
            while True:
                if _rows(store.path):
                    break
                await anyio.sleep(0.01)
        store.flush_seconds = 3600.0
        await anyio.sleep(0.05)  # run() is now asleep for an hour
        store.save(_watch("vsfb_late"))
        tg.cancel_scope.cancel()
    assert sorted(r["batch_id"] for r in _rows(store.path)) == ["vsfb_early", "vsfb_late"]
    store.close()


def _completed(path: Path) -> dict[str, int]:
    """Each stored watch's ``file_counts.completed``, by batch id, as on disk."""
    return {
        r["batch_id"]: json.loads(r["progress"])["file_counts"]["completed"] for r in _rows(path)
    }


async def test_noted_progress_waits_for_a_checkpoint(store: StateStore) -> None:
    """Noted progress is not written by a flush, only by a checkpoint, as last noted."""
    watch = _watch()
    store.note_progress(watch)
    await store.flush()
    assert _rows(store.path) == []
    assert store.writes == 0

    store.note_progress(_moved(watch, 7))  # moved again: the newer note replaces the older
    await store.flush()
    assert store.writes == 0
    await store.flush(progress=True)
    assert store.writes == 1
    assert _completed(store.path) == {"vsfb_1": 7}

    await store.flush(progress=True)  # nothing noted since: nothing written
    assert store.writes == 1


async def test_the_run_loop_checkpoints_progress_every_progress_seconds(tmp_path: Path) -> None:
    """``run`` leaves noted progress to the checkpoint while it flushes saved watches, writes
    it when ``progress_seconds`` come, and writes what is noted after once more when cancelled."""
    store = StateStore(tmp_path / "state.sqlite3", flush_seconds=0.01, progress_seconds=3600.0)
    store.open()
    noted = _watch("vsfb_noted")
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.run)
        store.note_progress(noted)
        store.save(_watch("vsfb_saved"))
        with anyio.fail_after(5):
            while True:
                if _rows(store.path):
                    break
                await anyio.sleep(0.01)
        # A flush that came after the note wrote the saved watch, and left the note alone.
        assert [r["batch_id"] for r in _rows(store.path)] == ["vsfb_saved"]

        store.progress_seconds = 0.01
        with anyio.fail_after(5):
            while True:
                if len(_rows(store.path)) == 2:
                    break
                await anyio.sleep(0.01)
        store.progress_seconds = 3600.0
        store.note_progress(_moved(noted, 9))
        tg.cancel_scope.cancel()  # no await since the note: only the last flush can write it
    assert _completed(store.path) == {"vsfb_noted": 9, "vsfb_saved": 5}
    store.close()


async def test_a_clean_close_writes_noted_progress(store: StateStore) -> None:
    """Progress noted and never checkpointed is on disk once the store is closed."""
    watch = _watch()
    await store.save_finished(_finish(_watch("vsfb_done")))  # the file holds something already
    store.note_progress(_moved(watch, 6))
    store.close()
    restored = {w.batch_id: w for w in _reopened(store.path)}
    assert sorted(restored) == ["vsfb_1", "vsfb_done"]
    assert restored["vsfb_1"].file_counts == FileCounts(completed=6, total=10)


async def test_a_save_supersedes_noted_progress(store: StateStore) -> None:
    """A save after a progress note writes the watch at once, and leaves no note to write."""
    watch = _watch()
    store.note_progress(_moved(watch, 6))
    store.save(_moved(watch, 8))
    await store.flush()
    assert _completed(store.path) == {"vsfb_1": 8}
    assert store.writes == 1

    await store.flush(progress=True)  # the note before the save is gone
    assert store.writes == 1
    assert _completed(store.path) == {"vsfb_1": 8}


async def test_progress_noted_after_a_save_is_written_over_it(store: StateStore) -> None:
    """When a watch is saved, then noted, a checkpoint writes the noted (newer) state."""
    watch = _watch()
    store.save(watch)
    store.note_progress(_moved(watch, 9))
    await store.flush(progress=True)
    assert store.writes == 1
    assert _completed(store.path) == {"vsfb_1": 9}


async def test_a_delete_supersedes_noted_progress(store: StateStore) -> None:
    """A watch deleted after a progress note is not written back by the next checkpoint."""
    store.save(_watch("vsfb_keep"))
    store.save(_watch("vsfb_gone"))
    await store.flush()
    store.note_progress(_watch("vsfb_gone"))
    store.note_progress(_watch("vsfb_brief"))  # never written at all
    store.delete(("vs_1", "vsfb_gone"))
    store.delete(("vs_1", "vsfb_brief"))
    await store.flush(progress=True)
    assert [r["batch_id"] for r in _rows(store.path)] == ["vsfb_keep"]
    store.close()
    assert [w.batch_id for w in _reopened(store.path)] == ["vsfb_keep"]


async def test_a_watch_finished_after_progress_notes_keeps_its_result(store: StateStore) -> None:
    """A watch noted several times then finished is on disk with its result, and no pending
    note writes it again."""
    watch = _watch()
    for completed in (6, 7):
        store.note_progress(_moved(watch, completed))
    watch = _finish(watch)
    await store.save_finished(watch)
    assert store.writes == 1
    await store.flush(progress=True)
    assert store.writes == 1
    store.close()
    [restored] = _reopened(store.path)
    assert restored.phase is Phase.FINISHED
    assert restored.result == watch.result
    assert [r["batch_id"] for r in _rows(store.path, "outbox")] == ["vsfb_1"]


async def test_delete_removes_the_watch(store: StateStore) -> None:
    """A deleted watch is gone from disk after the next flush, and does not come back."""
    store.save(_watch("vsfb_keep"))
    store.save(_watch("vsfb_gone"))
    await store.flush()
    store.delete(("vs_1", "vsfb_gone"))
    await store.flush()
    assert [r["batch_id"] for r in _rows(store.path)] == ["vsfb_keep"]
    store.close()
    assert [w.batch_id for w in _reopened(store.path)] == ["vsfb_keep"]


async def test_a_watch_deleted_before_its_flush_is_never_written(store: StateStore) -> None:
    """Saving then deleting a watch between two flushes leaves nothing on disk."""
    store.save(_watch("vsfb_brief"))
    store.delete(("vs_1", "vsfb_brief"))
    await store.flush()
    assert _rows(store.path) == []


async def test_a_watch_added_again_after_delete_is_kept(store: StateStore) -> None:
    """Delete then save of the same batch before a flush keeps the watch."""
    store.save(_watch("vsfb_back"))
    await store.flush()
    store.delete(("vs_1", "vsfb_back"))
    store.save(_watch("vsfb_back"))
    await store.flush()
    assert [r["batch_id"] for r in _rows(store.path)] == ["vsfb_back"]


async def test_the_outbox_holds_each_finished_result(store: StateStore) -> None:
    """Each finished batch leaves its JSON in the outbox until it is marked delivered."""
    done = _finish(_watch("vsfb_done"))
    await store.save_finished(done)
    [item] = await store.pending_deliveries()
    assert (item.vector_store_id, item.batch_id) == ("vs_1", "vsfb_done")
    assert done.result is not None
    assert json.loads(item.payload) == done.result.as_dict()
    await store.delivered(item.id)
    assert await store.pending_deliveries() == []


async def test_without_a_webhook_there_is_no_outbox(tmp_path: Path) -> None:
    """A store opened without ``outbox`` writes finished batches but queues no delivery."""
    store = StateStore(tmp_path / "state.sqlite3")
    store.open()
    await store.save_finished(_finish(_watch()))
    assert await store.pending_deliveries() == []
    assert len(_rows(store.path)) == 1
    store.close()


async def test_the_outbox_row_and_the_finished_state_commit_together(store: StateStore) -> None:
    """When the outbox row cannot be written, the finished state is not written either; when the
    finished state is written later, its outbox row is written with it."""
    await store.flush()
    db = sqlite3.connect(store.path)
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'full'); END"
    )
    db.commit()
    store.save(_watch("vsfb_bystander"))
    with pytest.raises(sqlite3.IntegrityError, match="full"):
        await store.save_finished(_finish(_watch("vsfb_done")))
    assert _rows(store.path) == []
    assert _rows(store.path, "outbox") == []

    db.execute("DROP TRIGGER refuse")
    db.commit()
    db.close()
    await store.flush()  # what failed was noted again, and is written now
    assert sorted(r["batch_id"] for r in _rows(store.path)) == ["vsfb_bystander", "vsfb_done"]
    # ... with its delivery: a finished batch on disk always has its webhook payload queued.
    assert [r["batch_id"] for r in _rows(store.path, "outbox")] == ["vsfb_done"]


async def test_a_failed_checkpoint_gives_noted_progress_back(store: StateStore) -> None:
    """Progress whose checkpoint fails is noted again, and written by the next checkpoint as the
    watch is then; a watch deleted meanwhile is not."""
    moving, gone = _watch("vsfb_moving"), _watch("vsfb_gone")
    store.save(moving)
    store.save(gone)
    await store.flush()
    db = sqlite3.connect(store.path)
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON watches BEGIN SELECT RAISE(ABORT, 'full'); END"
    )
    db.commit()
    store.note_progress(_moved(moving, 6))
    store.note_progress(gone)
    store.note_progress(_watch("vsfb_new"))
    with pytest.raises(sqlite3.IntegrityError, match="full"):
        await store.flush(progress=True)
    assert _completed(store.path) == {"vsfb_moving": 5, "vsfb_gone": 5}

    db.execute("DROP TRIGGER refuse")
    db.commit()
    db.close()
    store.delete(("vs_1", "vsfb_gone"))
    store.note_progress(_moved(moving, 7))  # newer than the note that came back
    await store.flush()  # the deletion; the notes came back as notes, not as saved rows
    assert _completed(store.path) == {"vsfb_moving": 5}
    await store.flush(progress=True)
    assert _completed(store.path) == {"vsfb_moving": 7, "vsfb_new": 5}


def test_a_damaged_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    """A file of garbage bytes is refused with a ConfigError that names ``state.path``."""
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"\x00\xffnot a database at all\x13\x37" * 500)
    store = StateStore(path)
    with pytest.raises(ConfigError) as caught:
        store.open()
    [problem] = caught.value.problems
    assert problem.startswith("state.path:")
    assert str(path) in problem
    assert not store.is_open
    held = [f.path for f in psutil.Process().open_files() if Path(f.path) == path]
    assert held == [], "the refused file is still open"


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A store written by a newer batch-watcher (higher schema version) is refused."""
    path = tmp_path / "state.sqlite3"
    store = StateStore(path)
    store.open()
    store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match=r"^state\.path: .*newer") as caught:
        StateStore(path).open()
    assert str(SCHEMA_VERSION + 1) in str(caught.value)
    held = [f.path for f in psutil.Process().open_files() if Path(f.path) == path]
    assert held == [], "the refused file is still open"


def test_a_row_that_does_not_parse_is_refused(tmp_path: Path) -> None:
    """A watches row whose JSON is damaged is refused naming ``state.path``, not a crash later."""
    path = tmp_path / "state.sqlite3"
    store = StateStore(path)
    store.open()
    store.close()
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO watches VALUES ('vs_1', 'vsfb_1', '{}', '{\"nope\": 1}', 0, '{}', NULL, NULL)"
    )
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match=r"^state\.path: "):
        StateStore(path).open()
