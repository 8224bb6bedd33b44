"""Rules the transitions share: retries with backoff, a watch's own polling knobs, and small
helpers."""

from __future__ import annotations

from dataclasses import replace

from ...errors import (
    APIError,
    ProtocolError,
    RateLimited,
    Transient,
)
from ..events import (
    PollFailed,
)
from ..policy import Outcome, PollSettings, next_poll
from ..settings import EngineSettings
from ..states import Phase
from ..watch import Watch
from .actions import (
    Random,
    Step,
    Wait,
)


def _passing(error: APIError) -> bool:
    return isinstance(error, Transient | RateLimited) or type(error) is ProtocolError


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
