"""How one vector store's watch lives, as pure transitions: the store counterpart of
:mod:`watcher.core.lifecycle`, with the same function names, so the engine picks the module by
the watch's kind and does the same I/O for both.

A store never ends the way a batch does: files are added to it at any time. The daemon watches
a store until it expires (``status: expired``) or is gone (a confirmed 404); ``watch vs_...``
(``Watch.until_idle``) ends it once no file of the store is in progress, and then reads its failed
files from ``GET /vector_stores/{id}/files?filter=failed``. Errors, the deadline, listing and the
end are the batch's rules (:mod:`.lifecycle`), with the end announced as a
:class:`~.events.StoreFinished`.
"""

from __future__ import annotations

from dataclasses import replace

from ..api.models import IN_PROGRESS
from ..api.vector_stores import EXPIRED, VectorStore
from ..errors import APIError
from . import lifecycle
from .events import BatchFinished, Event, StoreFinished, StoreProgressed
from .failed_files import FailedFileListing
from .lifecycle.actions import Random, Record, RetrieveStore, Step, Wait
from .lifecycle.common import poll_settings
from .lifecycle.ending import _end, _end_decided
from .policy import Outcome, Progress, eta_seconds, next_poll
from .settings import EngineSettings
from .states import Phase, State
from .watch import Watch

_RETRIEVE_STORE = RetrieveStore()


def due(watch: Watch, *, wall: float, settings: EngineSettings) -> Step:
    """The store's turn has come: poll it, or go on ending it, or end it at its deadline (a
    store cannot be cancelled)."""
    if watch.phase is Phase.LISTING:
        return _as_store(_end_decided(watch, wall=wall, settings=settings))
    if watch.deadline_at is not None and wall >= watch.deadline_at:
        note = "the deadline passed while files of the store were still in progress"
        ending = replace(watch, phase=Phase.LISTING, ending=State.TIMED_OUT, note=note)
        return _as_store(_end_decided(ending, wall=wall, settings=settings))
    return Step(watch, _RETRIEVE_STORE)


def replied(
    watch: Watch,
    store: VectorStore,
    *,
    poll_after: float | None,
    now: float,
    wall: float,
    settings: EngineSettings,
    random: Random,
) -> Step:
    """A good reply to a retrieve of this very store (the client makes sure)."""
    events: list[Event] = []
    first_reply = watch.first_seen_at is None
    counts = store.file_counts
    changed = counts != watch.file_counts or store.status != watch.status
    w = replace(
        watch,
        store=store,
        failures=0,
        not_found_seen=0,
        rejections=0,
        last_poll_at=wall,
        first_seen_at=wall if first_reply else watch.first_seen_at,
        last_change=now if first_reply else watch.last_change,
        created_at=store.created_at,
    )
    record = Record.NOTHING
    if changed:
        point = Progress(now, counts.finished)
        restarted = w.file_counts is not None and counts.finished < w.file_counts.finished
        first_point = point if w.progress_first is None or restarted else w.progress_first
        eta = eta_seconds(first_point, point, counts.expected) if counts.in_progress else None
        w = replace(
            w,
            progress_first=first_point,
            progress_last=point,
            eta_seconds=eta,
            last_change=now,
            file_counts=counts,
            status=store.status,
        )
        events.append(
            StoreProgressed(
                vector_store_id=w.vector_store_id,
                batch_id=w.batch_id,
                status=store.status,
                file_counts=counts,
            )
        )
        # Its counts move for as long as files are added: every change is worth keeping.
        record = Record.SAVE if first_reply else Record.PROGRESS
    ending = _ending(w, store)
    if ending is not None:
        w = replace(w, phase=Phase.LISTING, ending=ending)
        if ending is State.EXPIRED:
            step = _end(w, State.EXPIRED, note="the vector store has expired", wall=wall)
        else:
            step = _end_decided(w, wall=wall, settings=settings)
        step = _as_store(step)
        return replace(step, events=(*events, *step.events), record=record)
    window = w.window.add(Progress(now, counts.finished))
    remaining = window.remaining_seconds(counts.expected, now) if counts.in_progress else None
    decision = next_poll(
        poll_settings(w, settings),
        outcome=Outcome.OK,
        poll_after=poll_after,
        since_progress=now - w.last_change,
        until_deadline=None if w.deadline_at is None else w.deadline_at - wall,
        remaining=remaining,
        random=random,
    )
    w = replace(w, window=window)
    return Step(
        w, Wait(decision.delay, decision.reason, remaining=remaining), tuple(events), record
    )


def failed(
    watch: Watch,
    error: APIError,
    *,
    now: float,
    wall: float,
    settings: EngineSettings,
    random: Random,
) -> Step:
    """A retrieve that did not give us the store: the batch's rules (retry, backoff, a 404
    believed on the second look, rejections, refused credentials)."""
    step = lifecycle.failed(watch, error, now=now, wall=wall, settings=settings, random=random)
    return _as_store(step)


def listed(watch: Watch, listing: FailedFileListing, *, wall: float) -> Step:
    """The store's failed files are read: the watch ends."""
    return _as_store(lifecycle.listed(watch, listing, wall=wall))


def listing_failed(
    watch: Watch, error: APIError, *, wall: float, settings: EngineSettings, random: Random
) -> Step:
    step = lifecycle.listing_failed(watch, error, wall=wall, settings=settings, random=random)
    return _as_store(step)


def _ending(watch: Watch, store: VectorStore) -> State | None:
    if store.status == EXPIRED:
        return State.EXPIRED
    idle = store.file_counts.in_progress == 0 and store.status != IN_PROGRESS
    if watch.until_idle and idle:
        return State.COMPLETED
    return None


def _as_store(step: Step) -> Step:
    """The step with a batch's end announced as a store's."""
    if not any(isinstance(e, BatchFinished) for e in step.events):
        return step
    events = tuple(
        StoreFinished(vector_store_id=e.vector_store_id, batch_id=e.batch_id, result=e.result)
        if isinstance(e, BatchFinished)
        else e
        for e in step.events
    )
    return replace(step, events=events)
