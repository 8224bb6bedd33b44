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
    ESTIMATE = "estimate"  # adaptive: from the estimated time until the batch ends
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
    adaptive: bool = True  # schedule from the estimated time until the end (see adaptive_wait)


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
    remaining: float | None = None,
    random: Callable[[], float],
) -> Decision:
    """How long to wait before polling this watch again.

    ``failures`` counts consecutive failed polls including this one; ``poll_after`` is the
    server's ``openai-poll-after-ms`` hint from the last reply; ``retry_after`` is the server's
    wait on a 429; ``since_progress`` is how long the batch's counts have not changed;
    ``until_deadline`` is the time left before the watch's deadline; ``remaining`` is the
    estimated time until the batch ends (:meth:`ProgressWindow.remaining_seconds`), which the
    adaptive policy schedules from; ``random`` returns a float in [0, 1) and provides the jitter.

    Precedence: a failed poll's backoff or 429 wait, then the server's hint, then the estimate,
    then the interval; slowing down a quiet batch can only lengthen the wait; the deadline
    shortens any of them.
    """
    decision = _wait(
        settings, outcome, failures, poll_after, retry_after, since_progress, remaining, random
    )
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
    remaining: float | None,
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
    estimate = adaptive_wait(s, remaining) if s.adaptive and poll_after is None else None
    if poll_after is not None:
        base, reason = _clamp(poll_after, s), Reason.SERVER_HINT
    elif estimate is not None:
        base, reason = estimate, Reason.ESTIMATE
    else:
        base, reason = s.interval, Reason.INTERVAL
    if s.slow_down and since_progress > s.slow_down_after:
        factor = min(since_progress / s.slow_down_after, s.slow_down_max_factor)
        slowed = min((s.interval if reason is Reason.ESTIMATE else base) * factor, s.max_interval)
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


# -- adaptive polling ------------------------------------------------------------------------

#: How far back a rate is taken: older points say little about how fast the batch goes now.
WINDOW_SECONDS = 120.0
#: The most points a window keeps (a watch costs this many small tuples at most).
WINDOW_POINTS = 4
#: Far from the end, wait this share of the estimated time left: the batch may go up to
#: 1 / LEAD times faster than it did before its end comes before the poll that should see it near.
LEAD = 0.5
#: Near the end, polls come this share of ``interval`` apart, so that the end is seen within
#: about that long, on average half of it.
NEAR = 0.3
#: A rate is trusted at most this many times as far ahead as the batch has been watched: a
#: rate seen for 5 s may be a slow start, and a wait of minutes on it would miss the end by
#: minutes.
TRUST_AHEAD = 1.5
#: Once the estimated end has passed, the wait grows from ``NEAR · interval`` by this share of
#: the time overdue, up to ``interval``.
OVERDUE_GROWTH = 0.1
#: Without an estimate, a batch's end is taken as this many intervals after a poll.
UNKNOWN_END = 2.0


@dataclass(frozen=True, slots=True)
class ProgressWindow:
    """The recent points of a batch's progress curve, oldest first: what its rate is taken from.

    The engine offers it every good reply; it keeps the moments the count moved, so the time
    since the newest point is how long the batch has been quiet. :meth:`add` returns a new
    window.
    """

    points: tuple[Progress, ...] = ()
    since: float | None = None  # when the first point of this curve was seen

    def add(self, point: Progress) -> ProgressWindow:
        """This window with ``point`` added if its count moved, and points older than
        ``WINDOW_SECONDS`` (but the two newest) or beyond ``WINDOW_POINTS`` dropped. Counts that
        go back start afresh."""
        if self.points:
            newest = self.points[-1].finished
            if point.finished == newest:
                return self
            if point.finished < newest:
                return ProgressWindow((point,), point.at)
        points = (*self.points, point)[-WINDOW_POINTS:]
        horizon = point.at - WINDOW_SECONDS
        first = 0
        while first < len(points) - 2 and points[first + 1].at <= horizon:
            first += 1
        return ProgressWindow(points[first:], point.at if self.since is None else self.since)

    def rate(self) -> float | None:
        """Files per second: the fastest of the rates from each older point to the newest, so
        that a pause inside the window or a batch that speeds up makes the end look sooner, not
        later. ``None`` without two points or with no progress in the window."""
        if len(self.points) < 2:
            return None
        last = self.points[-1]
        best = 0.0
        for point in self.points[:-1]:
            elapsed = last.at - point.at
            if elapsed > 0:
                best = max(best, (last.finished - point.finished) / elapsed)
        return best or None

    def remaining_seconds(self, expected: int, now: float) -> float | None:
        """Seconds from ``now`` until ``expected`` files have finished at :meth:`rate`, but no
        more than ``TRUST_AHEAD`` times as long as this curve has been watched; negative when
        the end is overdue. ``None`` while there is no rate to go by."""
        if not self.points:
            return None
        last = self.points[-1]
        left = expected - last.finished
        if left <= 0:
            return 0.0
        rate = self.rate()
        if rate is None:
            return None
        ahead = left / rate - (now - last.at)
        watched = now - (self.points[0].at if self.since is None else self.since)
        return min(ahead, TRUST_AHEAD * watched) if ahead > 0 else ahead


def adaptive_wait(s: PollSettings, remaining: float | None) -> float | None:
    """The wait before the next poll of a batch that should end in ``remaining`` seconds.

    ``LEAD`` of the time left while the end is far, never less than ``NEAR · interval`` (nor
    more than ``max_interval``): polls come rarely while the counts say the end is far, closer
    as it nears, and ``NEAR · interval`` apart once it is due. ``None`` without an estimate: the
    caller keeps the interval.
    """
    if remaining is None:
        return None
    near = max(s.min_interval, s.interval * NEAR)
    if remaining <= 0:
        # Overdue: the estimate was early (stragglers, a pause); it says less the longer it is.
        return _clamp(min(s.interval, near - OVERDUE_GROWTH * remaining), s)
    return _clamp(max(near, LEAD * remaining), s)


def ended_likelihood(remaining: float | None, since_poll: float, interval: float) -> float:
    """How likely a batch has ended ``since_poll`` seconds after a poll that estimated
    ``remaining`` seconds to its end (``None``: no estimate), in [0, 1).

    What the shared budget ranks due watches by: the next request goes to the watch most likely
    to have ended. With an estimate, the end is taken as log-logistic around it (half likely at
    the estimate, 0.9 at twice it); without one, the same around ``UNKNOWN_END`` intervals.
    An estimate overdue by ``o`` counts as ``o`` to go, and never less than half an interval.
    """
    if since_poll <= 0:
        return 0.0
    if remaining is None:
        return _log_logistic(UNKNOWN_END * interval, since_poll)
    # Overdue by o, the end is taken as about o away again: the longer a batch has outlived
    # its estimate, the less the estimate says (and the less its next second is worth).
    return _log_logistic(max(abs(remaining), 0.5 * interval), since_poll)


def _log_logistic(median: float, t: float) -> float:
    """P(end <= t) for an end log-logistic around ``median``: 0.5 there, 0.9 at twice it."""
    ratio: float = (median / t) ** 3.17
    return 1.0 / (1.0 + ratio)
