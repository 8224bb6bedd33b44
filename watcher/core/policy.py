"""When is the next poll, and why: a pure function of watch state, clock and last reply.

The engine around it only sleeps and calls the network; every decision about waiting is here, so
it is tested with plain numbers and no sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from ..config.model import DEFAULTS


class Reason(StrEnum):
    """Why the next poll waits as long as it does."""

    INTERVAL = "interval"
    SERVER_HINT = "server_hint"
    SLOW_DOWN = "slow_down"
    BACKOFF = "backoff"
    RETRY_AFTER = "retry_after"
    CONFIRM_NOT_FOUND = "confirm_not_found"
    DEADLINE = "deadline"


class Outcome(StrEnum):
    """What the last poll came to, as far as waiting is concerned."""

    OK = "ok"
    TRANSIENT = "transient"  # 5xx, timeouts, malformed replies: back off
    RATE_LIMITED = "rate_limited"  # 429: the server's wait, or back off
    NOT_FOUND = "not_found"  # seen once: look again soon before believing it


@dataclass(frozen=True, slots=True)
class PollSettings:
    """The knobs of the polling policy, in seconds."""

    interval: float = DEFAULTS.poll.interval_seconds
    min_interval: float = DEFAULTS.poll.min_interval_seconds
    max_interval: float = DEFAULTS.poll.max_interval_seconds
    slow_down: bool = DEFAULTS.poll.slow_down
    slow_down_after: float = 60.0  # no progress for this long: start polling less often
    slow_down_max_factor: float = 4.0


@dataclass(frozen=True, slots=True)
class Decision:
    delay: float
    reason: Reason


def next_poll(
    settings: PollSettings,
    *,
    outcome: Outcome,
    failures: int = 0,
    poll_after: float | None = None,
    retry_after: float | None = None,
    since_progress: float = 0.0,
    until_deadline: float | None = None,
    random: Callable[[], float],
) -> Decision:
    """How long to wait before polling this watch again.

    ``failures`` counts consecutive failed polls including this one; ``poll_after`` is the
    server's ``openai-poll-after-ms`` hint from the last reply; ``retry_after`` is the server's
    wait on a 429; ``since_progress`` is how long the batch's counts have not changed;
    ``until_deadline`` is the time left before the watch's deadline; ``random`` returns a float
    in [0, 1) and provides the jitter.
    """
    decision = _wait(settings, outcome, failures, poll_after, retry_after, since_progress, random)
    if until_deadline is not None and until_deadline < decision.delay:
        return Decision(max(0.0, until_deadline), Reason.DEADLINE)
    return decision


def _wait(
    s: PollSettings,
    outcome: Outcome,
    failures: int,
    poll_after: float | None,
    retry_after: float | None,
    since_progress: float,
    random: Callable[[], float],
) -> Decision:
    if outcome is Outcome.NOT_FOUND:
        return Decision(_clamp(min(s.interval, 2.0), s), Reason.CONFIRM_NOT_FOUND)
    if outcome is Outcome.RATE_LIMITED and retry_after is not None:
        # At least the server's wait (up to max_interval: a day-long Retry-After is not obeyed),
        # plus a little jitter so that watches do not return together.
        wait = _clamp(retry_after, s)
        spread = min(1.0, 0.1 * wait) * random()
        return Decision(wait + spread, Reason.RETRY_AFTER)
    if outcome in (Outcome.TRANSIENT, Outcome.RATE_LIMITED):
        return Decision(backoff(s, max(failures, 1), random), Reason.BACKOFF)
    if poll_after is not None:
        base, reason = _clamp(poll_after, s), Reason.SERVER_HINT
    else:
        base, reason = s.interval, Reason.INTERVAL
    if s.slow_down and since_progress > s.slow_down_after:
        factor = min(since_progress / s.slow_down_after, s.slow_down_max_factor)
        slowed = min(base * factor, s.max_interval)
        if slowed > base:
            return Decision(slowed, Reason.SLOW_DOWN)
    return Decision(base, reason)


def backoff(s: PollSettings, failures: int, random: Callable[[], float]) -> float:
    """Exponential backoff with full jitter: uniform in [min_interval, min(cap, interval·2^(n-1))].

    Full jitter spreads the retries of many watches that failed together (one outage) over the
    whole window instead of bunching them at its edge.
    """
    ceiling = min(s.max_interval, s.interval * 2.0 ** min(failures - 1, 32))
    return max(s.min_interval, ceiling * random())


def _clamp(seconds: float, s: PollSettings) -> float:
    return min(max(seconds, s.min_interval), s.max_interval)


@dataclass(frozen=True, slots=True)
class Progress:
    """A point on a batch's progress curve: when, and how many files had finished."""

    at: float
    finished: int


def eta_seconds(first: Progress, last: Progress, expected: int) -> float | None:
    """Seconds until every expected file has finished, at the rate seen between two points.

    ``None`` while there is no rate to go by (no progress yet, or no time passed).
    """
    remaining = expected - last.finished
    if remaining <= 0:
        return 0.0
    elapsed = last.at - first.at
    done = last.finished - first.finished
    if elapsed <= 0 or done <= 0:
        return None
    return remaining * elapsed / done
