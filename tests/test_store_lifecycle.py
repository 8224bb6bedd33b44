"""A vector store's watch, rule by rule, with plain values: no sockets, no sleeps, no clock."""

from __future__ import annotations

from dataclasses import replace

from watcher.api.models import FileCounts, LastError
from watcher.api.vector_stores import VectorStore
from watcher.core import store_lifecycle
from watcher.core.events import (
    BatchFinished,
    FileFailedEvent,
    PollFailed,
    StoreFinished,
    StoreProgressed,
)
from watcher.core.failed_files import FailedFileListing
from watcher.core.lifecycle import Finish, ListFailedFiles, Record, RetrieveStore, Wait
from watcher.core.policy import PollSettings
from watcher.core.results import FailedFile
from watcher.core.settings import EngineSettings
from watcher.core.states import Phase, State
from watcher.core.watch import STORE, Watch, WatchOptions
from watcher.errors import NotFound, Transient

VS = "vs_1"
WALL = 1_700_000_000.0
S = EngineSettings(
    poll=PollSettings(interval=5.0, min_interval=0.5, max_interval=300.0, slow_down=False),
    stall_after_seconds=60.0,
)


def half() -> float:
    return 0.5


def new(*, until_idle: bool = False, deadline: float | None = None) -> Watch:
    watch = Watch.new(
        VS, STORE, registered_at=WALL, options=WatchOptions(deadline_seconds=deadline)
    )
    return replace(watch, until_idle=until_idle)


def store(status: str, in_progress: int = 0, completed: int = 0, failed: int = 0) -> VectorStore:
    total = in_progress + completed + failed
    counts = FileCounts(in_progress=in_progress, completed=completed, failed=failed, total=total)
    return VectorStore(
        VS, status, counts, name="docs", usage_bytes=10, expires_at=None, last_active_at=5
    )


def reply(watch: Watch, s: VectorStore, now: float = 0.0) -> store_lifecycle.Step:
    return store_lifecycle.replied(
        watch, s, poll_after=None, now=now, wall=WALL + now, settings=S, random=half
    )


def test_a_store_is_retrieved_when_due() -> None:
    """A store's turn asks the engine to retrieve the store, not a batch."""
    step = store_lifecycle.due(new(), wall=WALL, settings=S)
    assert isinstance(step.action, RetrieveStore)
    assert new().is_store


def test_the_daemon_keeps_watching_a_store_with_nothing_in_progress() -> None:
    """A lasting store watch records the store and waits for the next poll, even when idle."""
    step = reply(new(), store("completed", completed=3))
    assert isinstance(step.action, Wait)
    assert step.watch.phase is Phase.WATCHING
    assert step.watch.store is not None
    assert step.watch.store.name == "docs"
    assert step.record is Record.SAVE
    [progressed] = step.events
    assert isinstance(progressed, StoreProgressed)
    assert progressed.file_counts.completed == 3
    again = reply(step.watch, store("completed", completed=3), now=5.0)
    assert again.events == ()
    assert again.record is Record.NOTHING


def test_watch_ends_a_store_once_nothing_is_in_progress() -> None:
    """With until_idle, a store ends completed once no file is in progress, and then its
    failed files are read with the final count as the expected one."""
    busy = reply(new(until_idle=True), store("in_progress", in_progress=2, completed=1))
    assert isinstance(busy.action, Wait)
    done = reply(busy.watch, store("completed", completed=2, failed=1), now=5.0)
    assert done.action == ListFailedFiles(expected=1)
    assert done.watch.ending is State.COMPLETED
    listing = FailedFileListing(
        kept=(FailedFile("file-1", LastError("invalid_file", "bad")),),
        by_code={"invalid_file": 1},
        listed=1,
    )
    end = store_lifecycle.listed(done.watch, listing, wall=WALL + 6)
    assert isinstance(end.action, Finish)
    assert [type(e) for e in end.events] == [FileFailedEvent, StoreFinished]
    finished = end.events[-1]
    assert isinstance(finished, StoreFinished)
    assert finished.event_name == "store_completed"
    assert finished.result.failed_files_listed == 1


def test_an_expired_store_ends_expired_without_a_listing() -> None:
    """A store that says expired ends the watch as expired, daemon or not, with no file list."""
    for until_idle in (False, True):
        step = reply(new(until_idle=until_idle), store("expired", completed=4, failed=2))
        assert isinstance(step.action, Finish)
        assert step.watch.result is not None
        assert step.watch.result.status is State.EXPIRED
        assert not any(isinstance(e, BatchFinished) for e in step.events)
        assert any(isinstance(e, StoreFinished) for e in step.events)


def test_a_store_deadline_ends_it_timed_out() -> None:
    """Past its deadline a store's watch ends timed_out, reading the failed files so far."""
    watch = replace(new(until_idle=True, deadline=60.0), file_counts=FileCounts(failed=1))
    step = store_lifecycle.due(watch, wall=WALL + 61, settings=S)
    assert step.action == ListFailedFiles(expected=None)
    assert step.watch.ending is State.TIMED_OUT


def test_store_errors_follow_the_batch_rules() -> None:
    """A transient error is retried with backoff; a 404 believed on the second look ends the
    watch not_found, announced as a store's end."""
    retry = store_lifecycle.failed(
        new(), Transient("503"), now=0.0, wall=WALL, settings=S, random=half
    )
    assert isinstance(retry.action, Wait)
    assert isinstance(retry.events[0], PollFailed)
    first = store_lifecycle.failed(
        new(), NotFound("gone", status=404), now=0.0, wall=WALL, settings=S, random=half
    )
    assert isinstance(first.action, Wait)
    second = store_lifecycle.failed(
        first.watch, NotFound("gone", status=404), now=1.0, wall=WALL, settings=S, random=half
    )
    assert isinstance(second.action, Finish)
    [finished] = [e for e in second.events if isinstance(e, StoreFinished)]
    assert finished.event_name == "store_not_found"
