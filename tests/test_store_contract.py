"""The state-store contract: what every backend promises the daemon (the promises are listed in
:mod:`watcher.store.protocol`). Each test runs against every backend of ``store_backends``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
from factories import finished, moved, stored_watch
from store_backends import BACKENDS, Backend, pending, reopened
from structlog.testing import capture_logs

from watcher.api.models import FileCounts, LastError
from watcher.core.results import FailedFile, FileName, StuckFile
from watcher.core.retry import RetryPolicy
from watcher.core.states import Phase
from watcher.core.watch import Watch, WatchOptions
from watcher.errors import StoreUnavailable
from watcher.store import StateStore


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn, over storage of this test's own."""
    made = BACKENDS[request.param](tmp_path)
    yield made
    made.close()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[StateStore]:
    """An open, empty store that keeps an outbox."""
    s = backend.store(outbox=True)
    assert await s.open() == []
    yield s
    await s.aclose()


def _by_batch(watches: list[Watch]) -> dict[str, Watch]:
    return {w.batch_id: w for w in watches}


async def _completed(backend: Backend) -> dict[str, int]:
    """Each stored watch's ``file_counts.completed``, as a restart finds it."""
    return {
        w.batch_id: w.file_counts.completed if w.file_counts else -1
        for w in await reopened(backend)
    }


async def _wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll an async condition until it holds; fail the test after 5 s."""
    with anyio.move_on_after(5):
        while True:
            if await condition():
                return
            await anyio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# -- 1. round trip ----------------------------------------------------------------------------


async def test_every_field_survives_a_restart(backend: Backend, store: StateStore) -> None:
    """A watch in progress and a finished one (with failed files) come back field for field."""
    running = stored_watch("vsfb_running", team="search", corpus="manuals")
    done = finished(stored_watch("vsfb_done"))
    store.save(running)
    await store.save_finished(done)
    await store.aclose()
    assert not store.is_open

    restored = _by_batch(await reopened(backend))
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


async def test_a_retry_attempt_is_written_before_save_now_returns(
    backend: Backend, store: StateStore
) -> None:
    """``save_now`` writes at once: the retry policy, the chain and the attempt being sent come
    back as they were; a result keeps its file names, stuck files and retry links."""
    policy = RetryPolicy(codes=("server_error", "invalid_file"), max_attempts=3)
    sending = dataclasses.replace(
        stored_watch("vsfb_retry"),
        options=WatchOptions(retry=policy),
        retry_of="vsfb_0",
        retry_attempt=1,
        retry_sending=2,
    )
    await store.save_now(sending)
    [back] = await reopened(backend)
    assert back.options.retry == policy
    assert (back.retry_of, back.retry_attempt, back.retry_sending) == ("vsfb_0", 1, 2)
    done = finished(sending)
    assert done.result is not None
    result = dataclasses.replace(
        done.result,
        failed_files=(
            FailedFile("file-a", LastError("server_error", "x"), FileName("a.pdf", 12)),
            FailedFile("file-b", LastError("server_error", "y"), FileName(error="gone")),
        ),
        stuck_files=(StuckFile("file-s", FileName("s.md", 3), 30.0),),
        retry_of="vsfb_0",
        retried_as=("vsfb_2", "vsfb_3"),
    )
    await store.save_finished(dataclasses.replace(done, result=result))
    [ended] = await reopened(backend)
    assert ended.result == result


async def test_a_bare_watch_survives_a_restart(backend: Backend, store: StateStore) -> None:
    """A watch just registered (no labels, options, reply or counts) comes back as it was."""
    bare = Watch.new("vs_1", "vsfb_bare", registered_at=5.0)
    store.save(bare)
    await store.flush()
    [copy] = await reopened(backend)
    assert copy.as_dict() == bare.as_dict()


async def test_watches_come_back_oldest_registration_first(
    backend: Backend, store: StateStore
) -> None:
    """``open`` returns the watches in the order they were registered, not saved."""
    for n, at in enumerate((30.0, 10.0, 20.0)):
        store.save(Watch.new("vs_1", f"vsfb_{n}", registered_at=at))
    await store.flush()
    assert [w.batch_id for w in await reopened(backend)] == ["vsfb_1", "vsfb_2", "vsfb_0"]


async def test_the_store_is_open_between_open_and_aclose(backend: Backend) -> None:
    """``is_open`` is true from ``open`` to ``aclose``; a second ``aclose`` does nothing."""
    store = backend.store()
    assert not store.is_open
    await store.open()
    assert store.is_open
    assert store.write_failure is None
    await store.aclose()
    assert not store.is_open
    await store.aclose()


# -- 2. two cadences ----------------------------------------------------------------------------


async def test_saved_watches_wait_for_a_flush(backend: Backend, store: StateStore) -> None:
    """A save is only noted until ``flush``, which writes every saved watch."""
    for n in range(3):
        store.save(stored_watch(f"vsfb_{n}"))
    assert await reopened(backend) == []
    await store.flush()
    assert sorted(_by_batch(await reopened(backend))) == ["vsfb_0", "vsfb_1", "vsfb_2"]


async def test_only_the_latest_save_is_written(backend: Backend, store: StateStore) -> None:
    """Saving one watch many times between flushes writes its latest state."""
    watch = stored_watch()
    for completed in range(1, 6):
        store.save(moved(watch, completed))
    await store.flush()
    assert await _completed(backend) == {"vsfb_1": 5}


async def test_noted_progress_waits_for_a_checkpoint(backend: Backend, store: StateStore) -> None:
    """Noted progress is not written by a flush, only by a checkpoint, as last noted."""
    watch = stored_watch()
    store.note_progress(watch)
    await store.flush()
    assert await reopened(backend) == []

    store.note_progress(moved(watch, 7))  # moved again: the newer note replaces the older
    await store.flush()
    assert await reopened(backend) == []
    await store.flush(progress=True)
    assert await _completed(backend) == {"vsfb_1": 7}


async def test_a_save_supersedes_noted_progress(backend: Backend, store: StateStore) -> None:
    """A save after a progress note writes the watch as saved, and leaves no note to write."""
    watch = stored_watch()
    store.note_progress(moved(watch, 7))
    store.save(moved(watch, 8))
    await store.flush()
    assert await _completed(backend) == {"vsfb_1": 8}

    await store.flush(progress=True)  # no note is left to write back
    assert await _completed(backend) == {"vsfb_1": 8}


async def test_progress_noted_after_a_save_is_written_over_it(
    backend: Backend, store: StateStore
) -> None:
    """When a watch is saved, then noted, a checkpoint writes the noted (newer) state."""
    watch = stored_watch()
    store.save(watch)
    store.note_progress(moved(watch, 9))
    await store.flush(progress=True)
    assert await _completed(backend) == {"vsfb_1": 9}


async def test_the_run_loop_flushes_and_flushes_again_when_cancelled(backend: Backend) -> None:
    """``run`` writes saved watches every ``flush_seconds``, and once more on its way out."""
    store = backend.store(flush_seconds=0.01)
    await store.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.run)
        store.save(stored_watch("vsfb_early"))
        await _wait_for(lambda: _has(backend, 1), "the early watch written")
        tg.cancel_scope.cancel()
        store.save(stored_watch("vsfb_late"))  # no await since: only the last flush writes it
    assert sorted(_by_batch(await reopened(backend))) == ["vsfb_early", "vsfb_late"]
    await store.aclose()


async def _has(backend: Backend, n: int) -> bool:
    return len(await reopened(backend)) >= n


async def test_the_run_loop_checkpoints_progress_every_progress_seconds(backend: Backend) -> None:
    """``run`` leaves noted progress to the checkpoint while it flushes saved watches, and
    writes it when ``progress_seconds`` come."""
    # With the checkpoint an hour away, however slow the machine, only the saved watch is
    # written while the test looks (noted progress is written when the store closes).
    store = backend.store(flush_seconds=0.01, progress_seconds=3600)
    await store.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.run)
        store.note_progress(stored_watch("vsfb_noted"))
        store.save(stored_watch("vsfb_saved"))
        await _wait_for(lambda: _has(backend, 1), "the saved watch written")
        assert sorted(_by_batch(await reopened(backend))) == ["vsfb_saved"]
        tg.cancel_scope.cancel()
    await store.aclose()
    # With the checkpoint 0.3 s away, the noted watch is written while the store runs on.
    store = backend.store(flush_seconds=0.01, progress_seconds=0.3)
    await store.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.run)
        store.note_progress(stored_watch("vsfb_noted_later"))
        await _wait_for(lambda: _has(backend, 3), "the noted watch checkpointed")
        tg.cancel_scope.cancel()
    await store.aclose()


async def test_a_clean_close_writes_noted_progress(backend: Backend, store: StateStore) -> None:
    """Progress noted and never checkpointed is written when the store is closed."""
    await store.save_finished(finished(stored_watch("vsfb_done")))
    store.note_progress(moved(stored_watch(), 6))
    await store.aclose()
    restored = _by_batch(await reopened(backend))
    assert sorted(restored) == ["vsfb_1", "vsfb_done"]
    assert restored["vsfb_1"].file_counts == FileCounts(completed=6, total=10)


# -- deletions ----------------------------------------------------------------------------------


async def test_a_delete_removes_the_watch_for_good(backend: Backend, store: StateStore) -> None:
    """A deleted watch is gone after the next flush, and a restart does not bring it back."""
    store.save(stored_watch("vsfb_keep"))
    await store.save_finished(finished(stored_watch("vsfb_gone_done")))
    store.save(stored_watch("vsfb_gone"))
    await store.flush()
    store.delete(("vs_1", "vsfb_gone"))
    store.delete(("vs_1", "vsfb_gone_done"))
    await store.flush()
    assert [w.batch_id for w in await reopened(backend)] == ["vsfb_keep"]


async def test_a_delete_supersedes_noted_progress(backend: Backend, store: StateStore) -> None:
    """A watch deleted after a progress note is not written back by the next checkpoint."""
    store.save(stored_watch("vsfb_keep"))
    store.save(stored_watch("vsfb_gone"))
    await store.flush()
    store.note_progress(stored_watch("vsfb_gone"))
    store.note_progress(stored_watch("vsfb_brief"))  # never written at all
    store.delete(("vs_1", "vsfb_gone"))
    store.delete(("vs_1", "vsfb_brief"))
    await store.flush(progress=True)
    assert [w.batch_id for w in await reopened(backend)] == ["vsfb_keep"]


async def test_a_watch_deleted_before_its_flush_is_never_written(
    backend: Backend, store: StateStore
) -> None:
    """Saving then deleting a watch between two flushes leaves nothing stored."""
    store.save(stored_watch("vsfb_brief"))
    store.delete(("vs_1", "vsfb_brief"))
    await store.flush()
    assert await reopened(backend) == []


async def test_a_watch_saved_again_after_its_delete_is_kept(
    backend: Backend, store: StateStore
) -> None:
    """Delete then save of the same batch before a flush keeps the watch."""
    store.save(stored_watch("vsfb_back"))
    await store.flush()
    store.delete(("vs_1", "vsfb_back"))
    store.save(stored_watch("vsfb_back"))
    await store.flush()
    assert [w.batch_id for w in await reopened(backend)] == ["vsfb_back"]


# -- 3. finished is durable; 4. the outbox --------------------------------------------------------


async def test_a_finished_watch_is_written_at_once_with_what_was_saved(
    backend: Backend, store: StateStore
) -> None:
    """``save_finished`` has written the watch, with its result, when it returns; so is what
    was saved before it."""
    store.save(stored_watch("vsfb_other"))
    done = finished(stored_watch("vsfb_done"))
    await store.save_finished(done)
    restored = _by_batch(await reopened(backend))
    assert sorted(restored) == ["vsfb_done", "vsfb_other"]
    assert restored["vsfb_done"].result == done.result
    assert restored["vsfb_other"].result is None


async def test_a_watch_finished_after_progress_notes_keeps_its_result(
    backend: Backend, store: StateStore
) -> None:
    """A watch noted several times then finished is stored with its result and its delivery,
    and no pending note writes it back unfinished."""
    watch = stored_watch()
    for completed in (6, 7):
        store.note_progress(moved(watch, completed))
    done = finished(watch)
    await store.save_finished(done)
    await store.flush(progress=True)
    await store.aclose()
    [restored] = await reopened(backend)
    assert restored.phase is Phase.FINISHED
    assert restored.result == done.result
    assert [item.batch_id for item in await pending(backend)] == ["vsfb_1"]


async def test_the_outbox_keeps_each_delivery_until_delivered_across_restarts(
    backend: Backend, store: StateStore
) -> None:
    """Each finished batch leaves its payload in the outbox, in the order they finished; a
    restart finds the ones not yet marked delivered, and only those."""
    batches = ("vsfb_c", "vsfb_a", "vsfb_b")
    for batch_id in batches:
        await store.save_finished(finished(stored_watch(batch_id)))
    items = await store.pending_deliveries()
    assert [i.batch_id for i in items] == list(batches)
    assert all(i.vector_store_id == "vs_1" for i in items)
    assert len({i.id for i in items}) == 3
    done = finished(stored_watch("vsfb_c"))
    assert done.result is not None
    assert json.loads(items[0].payload) == done.result.as_dict()
    assert [i.batch_id for i in await store.pending_deliveries(limit=2)] == ["vsfb_c", "vsfb_a"]
    await store.delivered(items[0].id)
    await store.aclose()

    assert [i.batch_id for i in await pending(backend)] == ["vsfb_a", "vsfb_b"]


async def test_without_an_outbox_no_delivery_is_kept(backend: Backend) -> None:
    """A store opened without ``outbox`` writes finished batches but queues no delivery."""
    store = backend.store()
    await store.open()
    await store.save_finished(finished(stored_watch()))
    assert await store.pending_deliveries() == []
    await store.aclose()
    assert len(await reopened(backend)) == 1


# -- 5. a write that fails loses nothing ----------------------------------------------------------


async def test_a_finished_watch_that_cannot_be_written_is_written_later_with_its_delivery(
    backend: Backend, store: StateStore
) -> None:
    """When the store cannot write, ``save_finished`` raises StoreUnavailable and nothing of
    it is stored; the store says why until a write succeeds, and the next flush writes the
    finished watch together with its delivery."""
    store.save(stored_watch("vsfb_bystander"))
    with backend.refuse_writes():
        with pytest.raises(StoreUnavailable):
            await store.save_finished(finished(stored_watch("vsfb_done")))
        failure = store.write_failure
        assert failure is not None
        assert failure.attempts == 1
        assert failure.error
        with pytest.raises(StoreUnavailable):
            await store.flush()
        assert store.write_failure is not None
        assert store.write_failure.attempts == 2
        assert store.write_failure.since == failure.since
    assert await reopened(backend) == []
    assert await pending(backend) == []

    await store.flush()
    assert store.write_failure is None
    restored = _by_batch(await reopened(backend))
    assert sorted(restored) == ["vsfb_bystander", "vsfb_done"]
    assert restored["vsfb_done"].phase is Phase.FINISHED
    assert [i.batch_id for i in await pending(backend)] == ["vsfb_done"]


async def test_a_finished_watch_deleted_before_it_could_be_written_is_never_delivered(
    backend: Backend, store: StateStore
) -> None:
    """A finished watch whose write failed was never announced: deleted before a write
    succeeds, it leaves neither a row nor a delivery; a delivery written before stays."""
    await store.save_finished(finished(stored_watch("vsfb_announced")))
    with backend.refuse_writes(), pytest.raises(StoreUnavailable):
        await store.save_finished(finished(stored_watch("vsfb_unannounced")))
    store.delete(("vs_1", "vsfb_unannounced"))
    store.delete(("vs_1", "vsfb_announced"))
    await store.flush()
    assert await reopened(backend) == []
    assert [i.batch_id for i in await pending(backend)] == ["vsfb_announced"]


async def test_a_failed_checkpoint_gives_noted_progress_back(
    backend: Backend, store: StateStore
) -> None:
    """Progress whose checkpoint fails is noted again, unless noted anew meanwhile, and
    written by the next checkpoint; a watch deleted meanwhile is not."""
    moving, gone = stored_watch("vsfb_moving"), stored_watch("vsfb_gone")
    store.save(moving)
    store.save(gone)
    store.save(stored_watch("vsfb_still"))
    await store.flush()
    store.note_progress(moved(moving, 6))
    store.note_progress(moved(stored_watch("vsfb_still"), 6))
    store.note_progress(gone)
    store.note_progress(stored_watch("vsfb_new"))
    with backend.refuse_writes(), pytest.raises(StoreUnavailable):
        await store.flush(progress=True)
    assert await _completed(backend) == {"vsfb_moving": 5, "vsfb_gone": 5, "vsfb_still": 5}

    store.delete(("vs_1", "vsfb_gone"))
    store.note_progress(moved(moving, 7))
    await store.flush()  # the deletion; the notes came back as notes, not as saved rows
    assert await _completed(backend) == {"vsfb_moving": 5, "vsfb_still": 5}
    await store.flush(progress=True)
    want = {"vsfb_moving": 7, "vsfb_still": 6, "vsfb_new": 5}
    assert await _completed(backend) == want


async def test_a_failed_delete_is_written_later(backend: Backend, store: StateStore) -> None:
    """A deletion that could not be written stays noted, and the next flush writes it."""
    store.save(stored_watch("vsfb_gone"))
    await store.flush()
    store.delete(("vs_1", "vsfb_gone"))
    with backend.refuse_writes(), pytest.raises(StoreUnavailable):
        await store.flush()
    await store.flush()
    assert await reopened(backend) == []


async def test_the_run_loop_outlasts_a_store_that_cannot_write(backend: Backend) -> None:
    """While the store cannot write, ``run`` keeps retrying (it never raises); once it can,
    what was saved meanwhile is written and the failure is cleared."""
    store = backend.store(flush_seconds=0.01)
    await store.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.run)
        with backend.refuse_writes():
            store.save(stored_watch("vsfb_meanwhile"))
            await _wait_for(_failed(store, 3), "three writes failed")
        await _wait_for(lambda: _has(backend, 1), "the watch written once the store can write")
        await _wait_for(_cleared(store), "the failure cleared")
        tg.cancel_scope.cancel()
    await store.aclose()


def _failed(store: StateStore, attempts: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        failure = store.write_failure
        return failure is not None and failure.attempts >= attempts

    return check


def _cleared(store: StateStore) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return store.write_failure is None

    return check


async def test_the_outbox_cannot_be_marked_while_the_store_cannot_write(
    backend: Backend, store: StateStore
) -> None:
    """Marking a delivery done fails with StoreUnavailable while the store cannot write, and
    the delivery stays in the outbox (at least once)."""
    await store.save_finished(finished(stored_watch()))
    [item] = await store.pending_deliveries()
    with backend.refuse_writes(), pytest.raises(StoreUnavailable):
        await store.delivered(item.id)
    assert [i.id for i in await store.pending_deliveries()] == [item.id]
    await store.delivered(item.id)
    assert await store.pending_deliveries() == []


# -- 6. refused at open; 7. closing ---------------------------------------------------------------


async def test_closing_a_store_that_cannot_write_says_what_it_lost(backend: Backend) -> None:
    """``aclose`` on a store that cannot write logs what it could not write, and closes."""
    store = backend.store()
    await store.open()
    store.save(stored_watch())
    backend.break_for_good()
    with capture_logs() as logs:
        await store.aclose()
    assert not store.is_open
    [lost] = [e for e in logs if e["event"] == "state_not_written"]
    assert lost["saved"] == 1
    assert lost["log_level"] == "error"
