"""The watch lifecycle, rule by rule, with plain values: no sockets, no sleeps, no clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from watcher.api.models import FileBatch, FileCounts, LastError
from watcher.core import lifecycle
from watcher.core.events import (
    BatchCancelRequested,
    BatchFinished,
    BatchProgressed,
    BatchResumed,
    BatchRetried,
    BatchStalled,
    FileFailedEvent,
    PollFailed,
    StatusUnknown,
    StuckFilesListed,
)
from watcher.core.failed_files import NOTHING_LISTED, FailedFileListing
from watcher.core.lifecycle import (
    Cancel,
    CreateRetry,
    Finish,
    Hold,
    ListFailedFiles,
    ListStuckFiles,
    Record,
    Retrieve,
    Step,
    Wait,
)
from watcher.core.policy import PollSettings, Reason
from watcher.core.results import FailedFile, FileName, StuckFile
from watcher.core.retry import RetryPolicy
from watcher.core.settings import EngineSettings
from watcher.core.states import Phase, State
from watcher.core.watch import Watch, WatchOptions
from watcher.errors import (
    APIError,
    AuthError,
    Expired,
    NotFound,
    RateLimited,
    Transient,
    WrongBatch,
)

VS, BATCH = "vs_1", "vsfb_1"
WALL = 1_700_000_000.0
S = EngineSettings(
    poll=PollSettings(interval=5.0, min_interval=0.5, max_interval=300.0, slow_down=False),
    stall_after_seconds=60.0,
)


def half() -> float:
    return 0.5


def new(**options: float | bool) -> Watch:
    """A watch registered at WALL, started at monotonic time 0."""
    watch = Watch.new(VS, BATCH, registered_at=WALL, options=WatchOptions(**options))  # type: ignore[arg-type]
    return lifecycle.start(watch, now=0.0).watch


def batch(status: str = "in_progress", *, batch_id: str = BATCH, **counts: int) -> FileBatch:
    return FileBatch(batch_id, VS, status, FileCounts(**counts), created_at=1_699_999_000)


def reply(watch: Watch, b: FileBatch, now: float, *, poll_after: float | None = None) -> Step:
    return lifecycle.replied(
        watch, b, poll_after=poll_after, now=now, wall=WALL + now, settings=S, random=half
    )


def fail(watch: Watch, error: APIError, now: float, settings: EngineSettings = S) -> Step:
    return lifecycle.failed(watch, error, now=now, wall=WALL + now, settings=settings, random=half)


def stuck(
    step: Step, files: list[tuple[str, FileName]], now: float, error: APIError | None = None
) -> Step:
    """Feed the page of stuck files the step asked for back into the lifecycle."""
    assert isinstance(step.action, ListStuckFiles)
    return lifecycle.stuck_listed(
        step.watch, step.action.then, files, error=error, now=now, wall=WALL + now, settings=S
    )


def test_a_new_watch_is_polled_at_once_then_retrieved() -> None:
    """Starting a watch asks for a poll now; its turn asks to retrieve the batch."""
    watch = Watch.new(VS, BATCH, registered_at=WALL)
    step = lifecycle.start(watch, now=12.0)
    assert step.action == Wait(0.0, Reason.INTERVAL)
    assert step.watch.last_change == 12.0
    assert lifecycle.due(step.watch, wall=WALL, settings=S).action == Retrieve()


def test_the_first_reply_is_saved_and_later_progress_only_noted() -> None:
    """The first reply is recorded at once (elapsed time starts there); later moves are
    progress to checkpoint; an unchanged reply records nothing."""
    first = reply(new(), batch(in_progress=10, total=10), now=1.0)
    assert first.record is Record.SAVE
    assert first.watch.first_seen_at == WALL + 1.0
    assert [type(e) for e in first.events] == [BatchProgressed]
    assert first.action == Wait(5.0, Reason.INTERVAL)

    moved = reply(first.watch, batch(in_progress=6, completed=4, total=10), now=6.0)
    assert moved.record is Record.PROGRESS
    assert moved.watch.eta_seconds == pytest.approx(7.5)  # 4 files in 5 s, 6 to go

    same = reply(moved.watch, batch(in_progress=6, completed=4, total=10), now=11.0)
    assert (same.record, same.events) == (Record.NOTHING, ())
    assert same.watch.last_change == 6.0


def test_the_servers_hint_sets_the_next_poll() -> None:
    """``openai-poll-after-ms`` decides the wait, within the bounds."""
    step = reply(new(), batch(in_progress=3, total=3), now=1.0, poll_after=2.0)
    assert step.action == Wait(2.0, Reason.SERVER_HINT)


def test_a_completed_batch_without_failures_finishes_clean_without_listing() -> None:
    """A batch that completes with no failed file ends at once, clean, with one
    batch_completed event and nothing to list."""
    step = reply(new(), batch("completed", completed=3, total=3), now=4.0)
    assert step.action == Finish()
    assert step.watch.phase is Phase.FINISHED
    result = step.watch.result
    assert result is not None
    assert result.status is State.COMPLETED
    assert result.clean
    assert result.elapsed_seconds == 0.0  # first seen and ended on the same reply
    assert [type(e) for e in step.events] == [BatchProgressed, BatchFinished]


def test_failed_files_are_listed_then_announced_after_the_ending() -> None:
    """A batch that ends with failed files asks for the list (expecting the final count);
    the listing ends the watch with one file_failed per kept file, before batch_completed."""
    seen = reply(new(), batch(in_progress=5, total=5), now=1.0).watch
    ended = reply(seen, batch("completed", completed=3, failed=2, total=5), now=9.0)
    assert ended.action == ListFailedFiles(expected=2)
    assert ended.watch.phase is Phase.LISTING
    assert ended.watch.ending is State.COMPLETED
    files = (FailedFile("file-a", LastError("invalid_file", "bad")), FailedFile("file-b", None))
    listing = FailedFileListing(kept=files, by_code={"invalid_file": 1, "unknown": 1}, listed=2)
    done = lifecycle.listed(ended.watch, listing, wall=WALL + 10.0)
    assert done.action == Finish()
    assert [type(e) for e in done.events] == [FileFailedEvent, FileFailedEvent, BatchFinished]
    result = done.watch.result
    assert result is not None
    assert (result.failed_files_listed, result.failed_files_truncated) == (2, False)
    assert result.elapsed_seconds == 9.0
    assert not result.clean


@pytest.mark.parametrize(
    ("status", "counts", "ending"),
    [
        ("cancelled", {"in_progress": 40, "completed": 10, "total": 50}, State.CANCELLED),
        ("failed", {"completed": 10, "total": 10}, State.FAILED),
    ],
)
def test_every_terminal_status_is_an_end_whatever_the_counts(
    status: str, counts: dict[str, int], ending: State
) -> None:
    """A cancelled batch that still counts files in progress (llama-stack), or a failed one,
    ends its watch: there is no waiting for in_progress to reach 0."""
    step = reply(new(), batch(status, **counts), now=1.0)
    assert step.watch.ending is ending
    assert step.watch.phase is not Phase.WATCHING
    if ending is State.FAILED:
        assert step.action == ListFailedFiles(expected=0)  # a failed batch is always listed
    else:
        assert step.action == Finish()


def test_cancelling_and_unknown_statuses_are_not_terminal_and_reported_once() -> None:
    """``cancelling`` (and any status the API adds) is kept and reported once; polling goes on."""
    first = reply(new(), batch("cancelling", in_progress=2, total=2), now=1.0)
    assert [type(e) for e in first.events] == [BatchProgressed, StatusUnknown]
    assert isinstance(first.action, Wait)
    again = reply(first.watch, batch("cancelling", in_progress=1, completed=1, total=2), 6.0)
    assert StatusUnknown not in [type(e) for e in again.events]
    assert again.watch.phase is Phase.WATCHING


def test_a_stall_is_flagged_once_without_an_eta_and_cleared_by_progress() -> None:
    """No progress for ``stall_after_seconds`` flags the batch stalled once (and drops its
    ETA); the next progress resumes it."""
    w = reply(new(), batch(in_progress=5, completed=5, total=10), now=0.0).watch
    w = reply(w, batch(in_progress=4, completed=6, total=10), now=10.0).watch
    assert w.eta_seconds is not None
    quiet = reply(w, batch(in_progress=4, completed=6, total=10), now=69.0)
    assert not quiet.watch.stalled
    stalled = reply(quiet.watch, batch(in_progress=4, completed=6, total=10), now=70.0)
    assert [type(e) for e in stalled.events] == [BatchStalled]
    assert stalled.watch.stalled
    assert stalled.watch.eta_seconds is None
    assert stalled.watch.state is State.STALLED
    still = reply(stalled.watch, batch(in_progress=4, completed=6, total=10), now=80.0)
    assert still.events == ()
    resumed = reply(still.watch, batch(in_progress=3, completed=7, total=10), now=90.0)
    assert [type(e) for e in resumed.events] == [BatchResumed, BatchProgressed]
    assert not resumed.watch.stalled


def test_a_per_watch_stall_threshold_of_zero_turns_it_off() -> None:
    """A watch's own ``stall_after_seconds = 0`` never flags it."""
    w = reply(new(stall_after_seconds=0), batch(in_progress=1, total=1), now=0.0).watch
    assert not reply(w, batch(in_progress=1, total=1), now=10_000.0).watch.stalled


def test_the_deadline_ends_the_watch_and_cancels_only_when_asked() -> None:
    """At its deadline a watch times out; with cancel_on_timeout it cancels the batch first,
    and the note says how that went."""
    plain = new(deadline_seconds=60.0)
    assert lifecycle.due(plain, wall=WALL + 59.0, settings=S).action == Retrieve()
    timed_out = lifecycle.due(plain, wall=WALL + 60.0, settings=S)
    assert timed_out.action == Finish()
    assert timed_out.watch.result is not None
    assert timed_out.watch.result.status is State.TIMED_OUT
    assert "deadline" in timed_out.watch.result.note

    cancelling = lifecycle.due(
        new(deadline_seconds=60.0, cancel_on_timeout=True), wall=WALL + 61.0, settings=S
    )
    assert cancelling.action == Cancel()
    refused = lifecycle.cancelled(
        cancelling.watch, error=APIError("no"), wall=WALL + 62.0, settings=S
    )
    assert isinstance(refused.events[0], BatchCancelRequested)
    assert not refused.events[0].ok
    assert refused.watch.result is not None
    assert refused.watch.result.note.endswith("cancelling it failed")


def test_a_timed_out_batch_with_failed_files_lists_them_without_a_final_count() -> None:
    """The failed files of a batch still running at its deadline are read, but its count may
    still move: no gap is judged."""
    w = reply(new(deadline_seconds=60.0), batch(in_progress=5, failed=1, total=6), 1.0).watch
    step = lifecycle.due(w, wall=WALL + 60.0, settings=S)
    assert step.action == ListStuckFiles()
    step = stuck(step, [], now=60.0)
    assert step.action == ListFailedFiles(expected=None)


def test_the_next_poll_never_passes_the_deadline() -> None:
    """With 2 s left before the deadline, the next poll comes in 2 s, not 5."""
    w = new(deadline_seconds=10.0)
    step = reply(w, batch(in_progress=1, total=1), now=8.0)
    assert step.action == Wait(2.0, Reason.DEADLINE)


def test_not_found_is_believed_only_the_second_time() -> None:
    """A first 404 is looked at again soon; the second ends the watch ``not_found`` without
    listing anything."""
    once = fail(new(), NotFound("retrieve: not found", status=404), now=1.0)
    assert once.action == Wait(2.0, Reason.CONFIRM_NOT_FOUND)
    assert [type(e) for e in once.events] == [PollFailed]
    twice = fail(once.watch, NotFound("retrieve: not found", status=404), now=3.0)
    assert twice.action == Finish()
    assert twice.watch.result is not None
    assert twice.watch.result.status is State.NOT_FOUND


def test_a_good_reply_between_two_404s_starts_the_count_again() -> None:
    """404, a good reply, 404: still only one sighting."""
    w = fail(new(), NotFound("gone", status=404), now=1.0).watch
    w = reply(w, batch(in_progress=1, total=1), now=2.0).watch
    assert isinstance(fail(w, NotFound("gone", status=404), now=3.0).action, Wait)


def test_an_expired_batch_ends_expired_at_once() -> None:
    """A batch the server says has expired ends ``expired``, not rejected nor not found."""
    step = fail(new(), Expired("retrieve: expired: ... has expired", status=400), now=1.0)
    assert step.action == Finish()
    assert step.watch.result is not None
    assert step.watch.result.status is State.EXPIRED
    assert "expired" in step.watch.result.note


def test_refused_credentials_hold_the_watch() -> None:
    """A 401 or 403 asks the engine to hold the watches the credentials concern, and keeps
    the error as the watch's last."""
    error = AuthError("the API refused the API key", status=401)
    step = fail(new(), error, now=1.0)
    assert step.action == Hold(error)
    assert step.watch.last_error == str(error)
    assert step.watch.failures == 0


def test_a_request_rejected_three_times_ends_the_watch() -> None:
    """A plain 4xx is retried with backoff twice, and the third ends the watch ``rejected``
    with the server's reason."""
    w = new()
    error = APIError("retrieve: the API rejected the request (400): missing api-version")
    for now in (1.0, 2.0):
        step = fail(w, error, now=now)
        assert isinstance(step.action, Wait)
        assert step.action.reason is Reason.BACKOFF
        w = step.watch
    ended = fail(w, error, now=3.0)
    assert ended.watch.result is not None
    assert ended.watch.result.status is State.REJECTED
    assert "missing api-version" in ended.watch.result.note


def test_a_reply_for_another_batch_is_a_rejection_that_ends() -> None:
    """A reply for another batch (mock servers invent ids) is not believed; the third ends
    the watch ``rejected``, saying why."""
    w = new()
    error = WrongBatch("asked for batch vs_1/vsfb_1, the reply is for batch vs_1/vsfb_invented")
    for now in (1.0, 2.0):
        step = fail(w, error, now)
        assert isinstance(step.action, Wait)
        w = step.watch
    ended = fail(w, error, 3.0)
    assert ended.watch.result is not None
    assert ended.watch.result.status is State.REJECTED
    assert "vsfb_invented" in ended.watch.result.note


def test_a_429_pauses_everyone_for_the_servers_wait() -> None:
    """A 429 with Retry-After waits at least that long, and asks the engine to pause every
    request as long."""
    step = fail(new(), RateLimited("rate limited", retry_after=7.0), now=1.0)
    assert isinstance(step.action, Wait)
    assert step.action.reason is Reason.RETRY_AFTER
    assert step.action.delay >= 7.0
    assert step.action.pause_all == 7.0


def test_transient_errors_back_off_and_are_reported() -> None:
    """Consecutive transient errors wait longer each time (full jitter at 0.5 of the cap)."""
    w = new()
    delays = []
    for now in (1.0, 2.0, 3.0):
        step = fail(w, Transient("server error 503", status=503, request_id="req_1"), now)
        assert isinstance(step.action, Wait)
        delays.append(step.action.delay)
        [event] = step.events
        assert isinstance(event, PollFailed)
        assert (event.http_status, event.request_id) == (503, "req_1")
        w = step.watch
    assert delays == [2.5, 5.0, 10.0]
    assert w.failures == 3


def test_listing_errors_are_retried_then_the_watch_ends_incomplete() -> None:
    """A failing file list is retried ``max_list_attempts - 1`` times, then the watch ends
    with what is known, marked incomplete."""
    settings = replace(S, max_list_attempts=3)
    w = reply(new(), batch("completed", completed=1, failed=1, total=2), now=1.0).watch
    for _ in range(2):
        step = lifecycle.listing_failed(
            w, Transient("list: 502", status=502), wall=WALL, settings=settings, random=half
        )
        assert isinstance(step.action, Wait)
        assert lifecycle.due(step.watch, wall=WALL, settings=settings).action == (
            ListFailedFiles(expected=1)
        )
        w = step.watch
    ended = lifecycle.listing_failed(
        w, Transient("list: 502", status=502), wall=WALL, settings=settings, random=half
    )
    assert ended.watch.result is not None
    assert not ended.watch.result.failed_files_complete
    assert "could not be read" in ended.watch.result.note


def test_a_per_watch_interval_keeps_the_bounds_around_it() -> None:
    """A watch's own interval replaces the engine's, and widens the bounds if it must."""
    step = reply(new(interval_seconds=600.0), batch(in_progress=1, total=1), now=1.0)
    assert step.action == Wait(600.0, Reason.INTERVAL)


def test_a_crash_costs_one_backed_off_poll() -> None:
    """A bug in a turn counts as a failure and waits a backed-off while, never ends the watch."""
    watch, wait = lifecycle.crashed(new(), settings=S, random=half)
    assert watch.failures == 1
    assert watch.phase is Phase.WATCHING
    assert wait.reason is Reason.BACKOFF


def test_reopen_watches_a_rejected_watch_again() -> None:
    """A rejected watch reopened (after a restart) is watched again from scratch."""
    ended = fail(new(), APIError("nope"), now=1.0, settings=replace(S, rejections_to_end=1))
    again = lifecycle.reopen(ended.watch)
    assert (again.phase, again.result, again.rejections) == (Phase.WATCHING, None, 0)
    assert lifecycle.due(again, wall=WALL, settings=S).action == Retrieve()


def test_nothing_listed_ends_complete_with_no_files() -> None:
    """Ending with nothing to list keeps the result complete and empty."""
    w = replace(new(), phase=Phase.LISTING, ending=State.CANCELLED)
    result = lifecycle.listed(w, NOTHING_LISTED, wall=WALL).watch.result
    assert result is not None
    assert (result.failed_files, result.failed_files_complete) == ((), True)


def test_evolve_is_replace() -> None:
    """A watch's fast copy-with-changes gives what ``dataclasses.replace`` gives, field for
    field, and leaves the original as it was."""
    w = reply(new(deadline_seconds=60.0), batch(in_progress=1, total=2), now=1.0).watch
    changes = {"failures": 3, "last_error": "x", "stalled": True}
    assert w.evolve(changes) == replace(w, **changes)
    assert (w.failures, w.last_error, w.stalled) == (0, None, False)


# -- stuck files -----------------------------------------------------------------------------


def test_a_stall_reads_the_stuck_files_then_waits_as_it_would_have() -> None:
    """Flagging a stall asks for the files in progress; with them kept, the wait goes on."""
    quiet = reply(new(), batch(in_progress=4, completed=6, total=10), now=1.0)
    stalled = reply(quiet.watch, batch(in_progress=4, completed=6, total=10), now=70.0)
    assert isinstance(stalled.action, ListStuckFiles)
    assert isinstance(stalled.action.then, Wait)
    named = [("file-a", FileName("a.pdf", 10)), ("file-b", FileName(error="gone"))]
    after = stuck(stalled, named, now=70.0)
    assert after.action == stalled.action.then
    assert after.watch.stuck_files == (
        StuckFile("file-a", FileName("a.pdf", 10), 69.0),
        StuckFile("file-b", FileName(error="gone"), 69.0),
    )
    assert [type(e) for e in after.events] == [StuckFilesListed]
    assert after.watch.as_dict()["stuck_files"][1] == {
        "id": "file-b",
        "filename": None,
        "bytes": None,
        "filename_error": "gone",
        "stalled_seconds": 69.0,
    }
    resumed = reply(after.watch, batch(in_progress=3, completed=7, total=10), now=80.0)
    assert resumed.watch.stuck_files == ()


def test_the_deadline_reads_the_stuck_files_into_the_result() -> None:
    """At the deadline the files in progress are read first; the result names them."""
    w = reply(new(deadline_seconds=60.0), batch(in_progress=5, completed=1, total=6), 1.0).watch
    step = lifecycle.due(w, wall=WALL + 60.0, settings=S)
    assert step.action == ListStuckFiles()
    ended = stuck(step, [("file-x", FileName("x.md", 3))], now=60.0)
    assert isinstance(ended.action, Finish)
    assert ended.watch.result is not None
    assert ended.watch.result.status is State.TIMED_OUT
    assert ended.watch.result.stuck_files == (StuckFile("file-x", FileName("x.md", 3), 59.0),)
    assert ended.watch.result.as_dict()["stuck_files"][0]["filename"] == "x.md"


def test_stuck_files_that_cannot_be_read_are_noted_and_the_end_goes_on() -> None:
    """An error reading the stuck files at the deadline is said in the note, never hidden."""
    w = reply(
        new(deadline_seconds=60.0, cancel_on_timeout=True),
        batch(in_progress=5, total=5),
        1.0,
    ).watch
    step = lifecycle.due(w, wall=WALL + 60.0, settings=S)
    after = stuck(step, [], now=60.0, error=Transient("list_files: server error 502"))
    assert after.action == Cancel()
    assert "the stuck files could not be read" in after.watch.note


def test_no_stuck_files_are_read_when_nothing_is_in_progress() -> None:
    """A batch never seen, or with no file in progress, ends at its deadline without a read."""
    step = lifecycle.due(new(deadline_seconds=60.0), wall=WALL + 60.0, settings=S)
    assert not isinstance(step.action, ListStuckFiles)


# -- the automatic retry -------------------------------------------------------------------------

POLICY = RetryPolicy(codes=("server_error",), max_attempts=2)
SERVER_ERRORS = FailedFileListing(
    kept=(FailedFile("file-1", LastError("server_error", "boom")),),
    by_code={"server_error": 1, "invalid_file": 2},
    listed=3,
)


def ended(policy: RetryPolicy | None = POLICY, **fields: object) -> Watch:
    """A watch whose batch just completed with 3 failed files."""
    w = reply(new(), batch("completed", completed=7, failed=3, total=10), 1.0).watch
    w = replace(w, options=replace(w.options, retry=policy))
    return replace(w, **fields)  # type: ignore[arg-type]


def test_a_batch_with_failed_files_of_the_policy_codes_is_retried_first() -> None:
    """With a policy and failed files of its codes, the end waits for the retry: the attempt is
    marked on the watch (to be recorded before the request), the result is ready."""
    step = lifecycle.listed(ended(), SERVER_ERRORS, wall=WALL + 2)
    action = step.action
    assert isinstance(action, CreateRetry)
    assert action.attempt == 1
    assert action.codes == ("server_error",)
    assert not action.sent_before
    assert action.result.failed_files_listed == 3
    assert step.watch.retry_sending == 1
    assert step.watch.phase is Phase.LISTING
    assert step.events == ()  # nothing is announced before the retry is settled


@pytest.mark.parametrize(
    ("watch", "listing"),
    [
        (ended(policy=None), SERVER_ERRORS),
        (ended(), replace(SERVER_ERRORS, by_code={"invalid_file": 3})),
        (ended(retry_attempt=2), SERVER_ERRORS),
    ],
    ids=["no-policy", "other-codes", "attempts-spent"],
)
def test_no_retry_without_a_policy_its_codes_or_attempts_left(
    watch: Watch, listing: FailedFileListing
) -> None:
    """No policy, no failed file of its codes, or max_attempts reached: the watch just ends."""
    step = lifecycle.listed(watch, listing, wall=WALL + 2)
    assert isinstance(step.action, Finish)
    assert step.watch.result is not None
    assert step.watch.result.retried_as == ()


def test_a_retry_made_links_the_batches_and_is_announced() -> None:
    """Once made, the watch ends with ``retried_as`` and a ``batch_retried`` event."""
    step = lifecycle.listed(ended(retry_of="vsfb_0", retry_attempt=1), SERVER_ERRORS, wall=WALL)
    assert isinstance(step.action, CreateRetry)
    assert step.action.attempt == 2
    done = lifecycle.retried(
        step.watch, step.action, ["vsfb_new"], {"server_error": 1}, wall=WALL + 3
    )
    assert isinstance(done.action, Finish)
    assert done.watch.retry_sending is None
    assert done.watch.result is not None
    data = done.watch.result.as_dict()
    assert data["retried_as"] == ["vsfb_new"]
    assert data["retry_of"] == "vsfb_0"
    retried_event, *_, finished = done.events
    assert isinstance(retried_event, BatchRetried)
    assert retried_event.files_by_code == {"server_error": 1}
    assert isinstance(finished, BatchFinished)


def test_after_a_restart_the_same_attempt_is_sent_again_marked_as_maybe_sent() -> None:
    """A watch restored with its attempt recorded asks for the same attempt (the same key),
    saying a request may have gone out already."""
    step = lifecycle.listed(ended(retry_sending=1), SERVER_ERRORS, wall=WALL)
    assert step.action == CreateRetry(
        1,
        ("server_error",),
        step.action.result,
        sent_before=True,  # type: ignore[union-attr]
    )


def test_a_passing_error_retries_the_same_attempt_later() -> None:
    """A 5xx on the request waits with backoff; the next turn lists again and resends."""
    step = lifecycle.listed(ended(), SERVER_ERRORS, wall=WALL)
    assert isinstance(step.action, CreateRetry)
    error = Transient("create_batch: server error 503", status=503)
    again = lifecycle.retry_failed(
        step.watch, step.action, error, wall=WALL, settings=S, random=half
    )
    assert isinstance(again.action, Wait)
    assert again.watch.phase is Phase.LISTING
    assert isinstance(lifecycle.due(again.watch, wall=WALL, settings=S).action, ListFailedFiles)


@pytest.mark.parametrize("unknown", [False, True])
def test_a_retry_that_cannot_be_made_or_known_ends_the_watch_saying_so(unknown: bool) -> None:
    """A refusal ends the watch with a note; when a batch may exist but the API cannot tell,
    the note says it cannot be known and nothing more is sent."""
    step = lifecycle.listed(ended(), SERVER_ERRORS, wall=WALL)
    assert isinstance(step.action, CreateRetry)
    error = APIError("create_batch: the API rejected the request (400)", status=400)
    done = lifecycle.retry_failed(
        step.watch, step.action, error, unknown=unknown, wall=WALL, settings=S, random=half
    )
    assert isinstance(done.action, Finish)
    assert done.watch.result is not None
    note = done.watch.result.note
    assert ("cannot be known" in note) is unknown
    assert ("sending the failed files again failed" in note) is not unknown
    assert done.watch.result.retried_as == ()
