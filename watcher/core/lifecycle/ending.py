"""How a watch ends: its stuck and failed files read, a cancel, a retry of its failed files,
and the result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Final

from ...errors import (
    APIError,
    AuthError,
)
from ..events import (
    BatchCancelRequested,
    BatchFinished,
    BatchRetried,
    Event,
    FileFailedEvent,
    StuckFilesListed,
)
from ..failed_files import NOTHING_LISTED, FailedFileListing
from ..results import BatchResult, FileName, StuckFile
from ..settings import EngineSettings
from ..states import BY_TERMINAL_STATUS, Phase, State
from ..watch import Watch
from .actions import (
    _CANCEL,
    _FINISH,
    Action,
    CreateRetry,
    Hold,
    ListFailedFiles,
    Random,
    Step,
)
from .common import (
    _cancel_on_timeout,
    _ids,
    _join,
    _noted,
    _outcome,
    _passing,
    _retry,
)


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


def _end(watch: Watch, ending: State, *, note: str, wall: float) -> Step:
    """End without reading failed files: the batch is gone, or was never ours to read."""
    w = replace(watch, phase=Phase.LISTING, ending=ending, note=_join(watch.note, note))
    return listed(w, NOTHING_LISTED, wall=wall)


#: Endings after which failed files are sent again (a batch still running is not retried).
_RETRIED_ENDINGS: Final = frozenset({State.COMPLETED, State.FAILED})


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
