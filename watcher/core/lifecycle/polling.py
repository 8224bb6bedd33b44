"""A watch while it is polled: its turn, a reply, an error."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...api.models import IN_PROGRESS, KNOWN_STATUSES, FileBatch
from ...errors import (
    APIError,
    AuthError,
    Expired,
    NotFound,
    WrongBatch,
)
from ..events import (
    BatchProgressed,
    BatchResumed,
    BatchStalled,
    Event,
    StatusUnknown,
)
from ..policy import Outcome, Progress, Reason, backoff, eta_seconds, next_poll
from ..settings import EngineSettings
from ..states import BY_TERMINAL_STATUS, Phase, State
from ..watch import Watch
from .actions import (
    _RETRIEVE,
    Hold,
    ListStuckFiles,
    Random,
    Record,
    Step,
    Wait,
)
from .common import (
    _ids,
    _noted,
    _outcome,
    _retry,
    _stall_after,
    _until_deadline,
    poll_settings,
)
from .ending import (
    _deadline_passed,
    _end,
    _end_decided,
    _may_have_stuck_files,
)


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
    point = Progress(now, counts.finished)
    if counts != watch.file_counts or batch.status != watch.status:
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
            BatchProgressed(
                vector_store_id=watch.vector_store_id,
                batch_id=watch.batch_id,
                status=batch.status,
                file_counts=counts,
                eta_seconds=eta,
            )
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
    window = watch.window.add(point)
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
    if stalled and not watch.stalled:  # flagged stalled by this reply: name the stuck files
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


def crashed(watch: Watch, *, settings: EngineSettings, random: Random) -> tuple[Watch, Wait]:
    """A bug cost this turn: it must cost one poll, never the watch."""
    w = replace(watch, failures=watch.failures + 1)
    return w, Wait(backoff(poll_settings(w, settings), 3, random), Reason.BACKOFF)


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
