"""How one watch lives, from registration to its end, as pure transitions.

Each function takes the watch as it is, what just happened (its turn came, a reply, an API error,
a cancellation, a listing of failed files), the time and the settings, and returns a
:class:`Step`: the watch as it is now, the events to announce, and the one thing the engine must
do next (:data:`Action`). Nothing here sleeps, reads a clock, draws a random number of its own or
touches the network: the engine around it does, and stays thin. ``now`` is the engine's
monotonic clock, ``wall`` Unix time.

The path of a watch::

    Wait ─▶ due() ─▶ Retrieve ─▶ replied() ─▶ Wait … ─▶ (terminal, deadline, not found, rejected)
                                   failed()           ─▶ [ListStuckFiles ─▶ stuck_listed()]
                                                      ─▶ [Cancel ─▶ cancelled()]
                                                      ─▶ [ListFailedFiles ─▶ listed()]
                                                      ─▶ [CreateRetry ─▶ retried()]
                                                      ─▶ Finish
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Final

from ..api.models import IN_PROGRESS, KNOWN_STATUSES, FileBatch
from ..errors import (
    APIError,
    AuthError,
    Expired,
    NotFound,
    ProtocolError,
    RateLimited,
    Transient,
    WrongBatch,
)
from .events import (
    BatchCancelRequested,
    BatchFinished,
    BatchProgressed,
    BatchResumed,
    BatchRetried,
    BatchStalled,
    Event,
    FileFailedEvent,
    PollFailed,
    StatusUnknown,
    StuckFilesListed,
)
from .failed_files import NOTHING_LISTED, FailedFileListing
from .policy import Outcome, PollSettings, Progress, Reason, backoff, eta_seconds, next_poll
from .results import BatchResult, FileName, StuckFile
from .settings import EngineSettings
from .states import BY_TERMINAL_STATUS, Phase, State
from .watch import Watch

Random = Callable[[], float]


# -- what the engine does next -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wait:
    """Call :func:`due` again after ``delay`` seconds. ``pause_all``: the server asked every
    request to wait this long (a 429), not only this watch's. ``remaining``: after a good
    reply, the estimate of the time left to the batch's end (``None``: none yet); the shared
    budget serves the watches most likely to have ended first."""

    delay: float
    reason: Reason
    pause_all: float | None = None
    remaining: float | None = None


@dataclass(frozen=True, slots=True)
class Retrieve:
    """Retrieve the batch now; then :func:`replied` or :func:`failed`."""


@dataclass(frozen=True, slots=True)
class RetrieveStore:
    """Retrieve the vector store now (a store's watch, :mod:`.store_lifecycle`); then its
    ``replied`` or ``failed``."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel the batch now; then :func:`cancelled`."""


@dataclass(frozen=True, slots=True)
class ListFailedFiles:
    """Read the batch's failed files now; then :func:`listed` or :func:`listing_failed`."""

    expected: int | None  # the final count of failed files, when the batch's counts are final


@dataclass(frozen=True, slots=True)
class ListStuckFiles:
    """Read one page of the batch's files still in progress, with their names; then
    :func:`stuck_listed`. ``then``: what to do after (None: the deadline passed, go on ending)."""

    then: Action | None = None
    limit: int = 20


@dataclass(frozen=True, slots=True)
class CreateRetry:
    """Send the batch's failed files of ``codes`` again as new batches: first record the watch
    (its ``retry_sending``) durably, then send; then :func:`retried` or :func:`retry_failed`.
    ``result``: how the watch ends once that is done. ``sent_before``: a request of this
    attempt may have been sent already (before a restart, or before an error)."""

    attempt: int
    codes: tuple[str, ...]
    result: BatchResult
    sent_before: bool = False


@dataclass(frozen=True, slots=True)
class Finish:
    """Record the ended watch durably, then announce the step's events (never the other way)."""


@dataclass(frozen=True, slots=True)
class Hold:
    """The API refused the credentials: hold the watches they concern until a probe passes."""

    error: AuthError


Action = (
    Wait
    | Retrieve
    | RetrieveStore
    | Cancel
    | ListFailedFiles
    | ListStuckFiles
    | CreateRetry
    | Finish
    | Hold
)


class Record(Enum):
    """What the state store should do with the step's watch (besides :class:`Finish`)."""

    NOTHING = 0
    PROGRESS = 1  # counts or status moved: written at the next checkpoint, may be lost
    SAVE = 2  # the first reply: written within a second (a result's elapsed time starts there)


@dataclass(frozen=True, slots=True)
class Step:
    watch: Watch
    action: Action
    events: tuple[Event, ...] = ()
    record: Record = Record.NOTHING


_RETRIEVE = Retrieve()
_CANCEL = Cancel()
_FINISH = Finish()


# -- transitions ---------------------------------------------------------------------------------


def start(watch: Watch, *, now: float) -> Step:
    """A watch added (or restored): poll it at once."""
    return Step(replace(watch, last_change=now), Wait(0.0, Reason.INTERVAL))


def due(watch: Watch, *, wall: float, settings: EngineSettings) -> Step:
    """The watch's turn has come: poll it, or go on ending it, or end it at its deadline."""
    if watch.phase is Phase.LISTING:
        return _end_decided(watch, wall=wall, settings=settings)
    if watch.deadline_at is not None and wall >= watch.deadline_at:
        note = "the deadline passed before the batch finished"
        ending = replace(watch, phase=Phase.LISTING, ending=State.TIMED_OUT, note=note)
        if _may_have_stuck_files(watch):
            return Step(ending, ListStuckFiles())
        return _deadline_passed(ending, wall=wall, settings=settings)
    return Step(watch, _RETRIEVE)


def stuck_listed(
    watch: Watch,
    then: Action | None,
    files: Sequence[tuple[str, FileName]],
    *,
    error: APIError | None = None,
    now: float,
    wall: float,
    settings: EngineSettings,
) -> Step:
    """The files still in progress are read (``error``: they could not be): keep them, with how
    long the batch has made no progress, and go on."""
    quiet = max(0.0, now - watch.last_change)
    stuck = tuple(StuckFile(fid, name, quiet) for fid, name in files)
    note = watch.note
    if error is not None and watch.phase is Phase.LISTING:
        note = _join(note, f"the stuck files could not be read: {error}")
    w = replace(watch, stuck_files=stuck, note=note)
    events: tuple[Event, ...] = ()
    if stuck:
        events = (StuckFilesListed(**_ids(w), stuck_files=stuck),)
    if then is not None:
        return Step(w, then, events)
    step = _deadline_passed(w, wall=wall, settings=settings)
    return replace(step, events=(*events, *step.events))


def replied(
    watch: Watch,
    batch: FileBatch,
    *,
    poll_after: float | None,
    now: float,
    wall: float,
    settings: EngineSettings,
    random: Random,
) -> Step:
    """A good reply to a retrieve (for this very batch: the client makes sure)."""
    # Every change goes into one dict and one replace: this runs for every poll.
    events: list[Event] = []
    first_reply = watch.first_seen_at is None
    counts = batch.file_counts
    last_change = now if first_reply else watch.last_change
    stalled = watch.stalled
    eta = watch.eta_seconds
    changes: dict[str, Any] = {
        "failures": 0,
        "not_found_seen": 0,
        "rejections": 0,
        "last_poll_at": wall,
        "created_at": batch.created_at,
    }
    if first_reply:
        changes["first_seen_at"] = wall
    record = Record.NOTHING
    if counts != watch.file_counts or batch.status != watch.status:
        point = Progress(now, counts.finished)
        old = watch.file_counts
        restarted = old is not None and counts.finished < old.finished
        first_point = point if watch.progress_first is None or restarted else watch.progress_first
        eta = eta_seconds(first_point, point, counts.expected)
        if stalled:
            events.append(BatchResumed(**_ids(watch), file_counts=counts))
            stalled = False
            changes["stuck_files"] = ()
        last_change = now
        changes.update(
            progress_first=first_point,
            progress_last=point,
            file_counts=counts,
            status=batch.status,
        )
        events.append(
            BatchProgressed(**_ids(watch), status=batch.status, file_counts=counts, eta_seconds=eta)
        )
        record = Record.SAVE if first_reply else Record.PROGRESS
    if batch.status not in KNOWN_STATUSES and watch.unknown_status_seen != batch.status:
        changes["unknown_status_seen"] = batch.status
        events.append(StatusUnknown(**_ids(watch), status=batch.status))
    ending = BY_TERMINAL_STATUS.get(batch.status)
    if ending is not None:
        w = replace(
            watch,
            **changes,
            last_change=last_change,
            stalled=stalled,
            eta_seconds=eta,
            phase=Phase.LISTING,
            ending=ending,
        )
        step = _end_decided(w, wall=wall, settings=settings)
        return replace(step, events=(*events, *step.events), record=record)
    quiet = now - last_change
    stall_after = _stall_after(watch, settings)
    if stall_after and not stalled and batch.status == IN_PROGRESS and quiet >= stall_after:
        stalled, eta = True, None
        events.append(BatchStalled(**_ids(watch), file_counts=counts, stalled_seconds=quiet))
    window = watch.window.add(Progress(now, counts.finished))
    remaining = window.remaining_seconds(counts.expected, now)
    decision = next_poll(
        poll_settings(watch, settings),
        outcome=Outcome.OK,
        poll_after=poll_after,
        since_progress=quiet,
        until_deadline=_until_deadline(watch, wall),
        remaining=remaining,
        random=random,
    )
    changes.update(last_change=last_change, stalled=stalled, eta_seconds=eta, window=window)
    w = watch.evolve(changes)
    wait = Wait(decision.delay, decision.reason, remaining=remaining)
    if any(isinstance(e, BatchStalled) for e in events):
        return Step(w, ListStuckFiles(then=wait), tuple(events), record)
    return Step(w, wait, tuple(events), record)


def failed(
    watch: Watch,
    error: APIError,
    *,
    now: float,
    wall: float,
    settings: EngineSettings,
    random: Random,
) -> Step:
    """A retrieve that did not give us the batch."""
    if isinstance(error, Expired):
        return _end(watch, State.EXPIRED, note=str(error), wall=wall)
    if isinstance(error, NotFound):
        w = replace(watch, not_found_seen=watch.not_found_seen + 1)
        if w.not_found_seen >= settings.not_found_confirmations:
            return _end(w, State.NOT_FOUND, note=str(error), wall=wall)
        return _retry(w, error, Outcome.NOT_FOUND, wall=wall, settings=settings, random=random)
    if isinstance(error, AuthError):
        return Step(_noted(watch, error, wall), Hold(error))
    if type(error) is APIError or isinstance(error, WrongBatch):
        # A plain 4xx (the API rejects the request itself), or a reply for another batch.
        return _rejected(watch, error, wall=wall, settings=settings, random=random)
    return _retry(watch, error, _outcome(error), wall=wall, settings=settings, random=random)


def cancelled(
    watch: Watch, *, error: APIError | None, wall: float, settings: EngineSettings
) -> Step:
    """The cancel asked for at the deadline was sent: ``error`` is None if the API took it."""
    ok = error is None
    event = BatchCancelRequested(**_ids(watch), ok=ok, message="" if ok else str(error))
    note = _join(watch.note, "it was cancelled" if ok else "cancelling it failed")
    step = _end_decided(replace(watch, note=note), wall=wall, settings=settings)
    return replace(step, events=(event, *step.events))


def listed(watch: Watch, listing: FailedFileListing, *, wall: float) -> Step:
    """The failed files are read (or there were none to read): the watch ends, or first sends
    its failed files again if its retry policy asks."""
    ending = watch.ending or State.FAILED
    first = watch.first_seen_at if watch.first_seen_at is not None else watch.registered_at
    result = BatchResult(
        vector_store_id=watch.vector_store_id,
        batch_id=watch.batch_id,
        status=ending,
        file_counts=watch.file_counts,
        failed_files=listing.kept,
        failed_by_code=listing.by_code,
        failed_files_listed=listing.listed,
        failed_files_truncated=listing.listed > len(listing.kept),
        failed_files_complete=listing.complete,
        elapsed_seconds=max(0.0, wall - first),
        finished_at=wall,
        labels=watch.labels,
        note=_join(watch.note, listing.note),
        stuck_files=watch.stuck_files,
        retry_of=watch.retry_of,
    )
    policy = watch.options.retry
    attempt = watch.retry_attempt + 1
    if (
        policy is not None
        and attempt <= policy.max_attempts
        and ending in _RETRIED_ENDINGS
        and any(listing.by_code.get(code, 0) for code in policy.codes)
    ):
        sent_before = watch.retry_sending == attempt
        w = replace(watch, retry_sending=attempt, stalled=False, eta_seconds=None)
        return Step(w, CreateRetry(attempt, policy.codes, result, sent_before=sent_before))
    return _finished(watch, result, wall=wall)


def retried(
    watch: Watch,
    action: CreateRetry,
    batch_ids: Sequence[str],
    files_by_code: Mapping[str, int],
    *,
    wall: float,
    note: str = "",
) -> Step:
    """The failed files went out again as ``batch_ids`` (the engine watches them): the watch
    ends, linked to them."""
    result = replace(
        action.result, retried_as=tuple(batch_ids), note=_join(action.result.note, note)
    )
    step = _finished(replace(watch, retry_sending=None), result, wall=wall)
    if not batch_ids:
        return step
    event = BatchRetried(
        **_ids(watch),
        retried_as=tuple(batch_ids),
        attempt=action.attempt,
        files_by_code=dict(files_by_code),
    )
    return replace(step, events=(event, *step.events))


def retry_failed(
    watch: Watch,
    action: CreateRetry,
    error: APIError,
    *,
    unknown: bool = False,
    wall: float,
    settings: EngineSettings,
    random: Random,
) -> Step:
    """Sending the failed files again failed. A passing error is tried again (the same attempt,
    the same Idempotency-Key) after a backoff; else the watch ends and says so. ``unknown``: a
    request of this attempt may have made a batch and the API cannot tell: nothing more is
    sent, and the note says it cannot be known."""
    if isinstance(error, AuthError):
        return Step(_noted(watch, error, wall), Hold(error))
    if unknown:
        note = (
            f"whether retry attempt {action.attempt} made a batch cannot be known: a request "
            f"with its Idempotency-Key may have been sent, and the API now says {error}; no "
            "other was sent"
        )
    elif _passing(error) and watch.failures + 1 < settings.max_list_attempts:
        return _retry(watch, error, _outcome(error), wall=wall, settings=settings, random=random)
    else:
        note = f"sending the failed files again failed: {error}"
    result = replace(action.result, note=_join(action.result.note, note))
    return _finished(_noted(watch, error, wall), result, wall=wall)


def _finished(watch: Watch, result: BatchResult, *, wall: float) -> Step:
    w = replace(
        watch,
        phase=Phase.FINISHED,
        result=result,
        finished_at=wall,
        stalled=False,
        eta_seconds=None,
    )
    events: list[Event] = [FileFailedEvent(**_ids(w), file=f) for f in result.failed_files]
    events.append(BatchFinished(**_ids(w), result=result))
    return Step(w, _FINISH, tuple(events))


def listing_failed(
    watch: Watch, error: APIError, *, wall: float, settings: EngineSettings, random: Random
) -> Step:
    """Reading the failed files failed: retry with backoff, or end with what is known."""
    if isinstance(error, AuthError):
        return Step(_noted(watch, error, wall), Hold(error))
    if watch.failures + 1 < settings.max_list_attempts:
        return _retry(watch, error, _outcome(error), wall=wall, settings=settings, random=random)
    incomplete = FailedFileListing(
        complete=False, note=f"the failed-file list could not be read: {error}"
    )
    return listed(watch, incomplete, wall=wall)


def crashed(watch: Watch, *, settings: EngineSettings, random: Random) -> tuple[Watch, Wait]:
    """A bug cost this turn: it must cost one poll, never the watch."""
    w = replace(watch, failures=watch.failures + 1)
    return w, Wait(backoff(poll_settings(w, settings), 3, random), Reason.BACKOFF)


def reopen(watch: Watch) -> Watch:
    """Watch an ended watch again (a rejected one, after a restart with a new configuration)."""
    return replace(
        watch,
        phase=Phase.WATCHING,
        result=None,
        finished_at=None,
        ending=None,
        note="",
        rejections=0,
        failures=0,
    )


# -- the rules behind them -----------------------------------------------------------------------


def _end(watch: Watch, ending: State, *, note: str, wall: float) -> Step:
    """End without reading failed files: the batch is gone, or was never ours to read."""
    w = replace(watch, phase=Phase.LISTING, ending=ending, note=_join(watch.note, note))
    return listed(w, NOTHING_LISTED, wall=wall)


#: Endings after which failed files are sent again (a batch still running is not retried).
_RETRIED_ENDINGS: Final = frozenset({State.COMPLETED, State.FAILED})


def _passing(error: APIError) -> bool:
    return isinstance(error, Transient | RateLimited) or type(error) is ProtocolError


def _may_have_stuck_files(watch: Watch) -> bool:
    counts = watch.file_counts
    return counts is not None and counts.in_progress > 0


def _deadline_passed(watch: Watch, *, wall: float, settings: EngineSettings) -> Step:
    """The deadline passed (the stuck files are read): cancel the batch if asked, then end."""
    if _cancel_on_timeout(watch, settings):
        return Step(watch, _CANCEL)
    return _end_decided(watch, wall=wall, settings=settings)


def _end_decided(watch: Watch, *, wall: float, settings: EngineSettings) -> Step:
    """The end is decided: read the failed files if there may be any, else finish."""
    counts = watch.file_counts
    may_have_failed = (counts is not None and counts.failed > 0) or watch.ending is State.FAILED
    if not may_have_failed:
        return listed(watch, NOTHING_LISTED, wall=wall)
    final = watch.ending in BY_TERMINAL_STATUS.values() and counts is not None
    return Step(watch, ListFailedFiles(expected=counts.failed if final and counts else None))


def _rejected(
    watch: Watch,
    error: APIError,
    *,
    wall: float,
    settings: EngineSettings,
    random: Random,
) -> Step:
    w = replace(watch, rejections=watch.rejections + 1)
    if w.rejections >= settings.rejections_to_end:
        return _end(w, State.REJECTED, note=str(error), wall=wall)
    return _retry(w, error, Outcome.TRANSIENT, wall=wall, settings=settings, random=random)


def _retry(
    watch: Watch,
    error: APIError,
    outcome: Outcome,
    *,
    wall: float,
    settings: EngineSettings,
    random: Random,
) -> Step:
    w = _noted(replace(watch, failures=watch.failures + 1), error, wall)
    retry_after = error.retry_after if isinstance(error, RateLimited) else None
    decision = next_poll(
        poll_settings(w, settings),
        outcome=outcome,
        failures=w.failures,
        retry_after=retry_after,
        # Listing comes after the end is decided; a deadline that has passed would make every
        # retry of the list immediate, with no backoff at all.
        until_deadline=None if w.phase is Phase.LISTING else _until_deadline(w, wall),
        random=random,
    )
    pause = None
    if isinstance(error, RateLimited):
        # A 429 speaks for the key, not for one batch: everyone waits.
        pause = retry_after if retry_after is not None else decision.delay
    event = PollFailed(
        **_ids(w),
        error=type(error).__name__,
        message=str(error.message),
        http_status=error.status,
        request_id=error.request_id,
        retry_in=decision.delay,
    )
    return Step(w, Wait(decision.delay, decision.reason, pause), (event,))


def _noted(watch: Watch, error: APIError, wall: float) -> Watch:
    return replace(watch, last_error=str(error), last_error_at=wall)


def poll_settings(watch: Watch, settings: EngineSettings) -> PollSettings:
    """The polling policy's knobs for this watch: the engine's, with its own interval."""
    interval = watch.options.interval_seconds
    s = settings.poll
    if interval is None or interval == s.interval:
        return s
    return replace(
        s,
        interval=interval,
        min_interval=min(s.min_interval, interval),
        max_interval=max(s.max_interval, interval),
    )


def _stall_after(watch: Watch, settings: EngineSettings) -> float | None:
    value = watch.options.stall_after_seconds
    return settings.stall_after_seconds if value is None else value


def _cancel_on_timeout(watch: Watch, settings: EngineSettings) -> bool:
    cancel = watch.options.cancel_on_timeout
    return settings.cancel_on_timeout if cancel is None else cancel


def _until_deadline(watch: Watch, wall: float) -> float | None:
    return None if watch.deadline_at is None else watch.deadline_at - wall


def _outcome(error: APIError) -> Outcome:
    return Outcome.RATE_LIMITED if isinstance(error, RateLimited) else Outcome.TRANSIENT


def _ids(watch: Watch) -> dict[str, str]:
    return {"vector_store_id": watch.vector_store_id, "batch_id": watch.batch_id}


def _join(a: str, b: str) -> str:
    if not a or not b:
        return a or b
    return f"{a}; {b}"
