"""The polling policy, driven with plain numbers: no clock, no sleeping."""

from __future__ import annotations

import pytest

from watcher.core.policy import (
    LEAD,
    NEAR,
    TRUST_AHEAD,
    UNKNOWN_END,
    WINDOW_POINTS,
    WINDOW_SECONDS,
    Decision,
    Outcome,
    PollSettings,
    Progress,
    ProgressWindow,
    Reason,
    adaptive_wait,
    backoff,
    ended_likelihood,
    eta_seconds,
    next_poll,
)

S = PollSettings(interval=5.0, min_interval=0.5, max_interval=300.0, slow_down_after=60.0)


def fixed(value: float):  # type: ignore[no-untyped-def]
    return lambda: value


def test_ok_reply_waits_the_interval() -> None:
    """A plain successful poll waits the configured interval."""
    assert next_poll(S, outcome=Outcome.OK, random=fixed(0.5)) == Decision(5.0, Reason.INTERVAL)


@pytest.mark.parametrize(
    ("hint", "expected"),
    [(2.0, 2.0), (20.0, 20.0), (0.01, 0.5), (10_000.0, 300.0)],
)
def test_server_hint_replaces_interval_within_bounds(hint: float, expected: float) -> None:
    """The server's poll-after hint is honoured, clamped to [min_interval, max_interval]."""
    decision = next_poll(S, outcome=Outcome.OK, poll_after=hint, random=fixed(0.5))
    assert decision == Decision(expected, Reason.SERVER_HINT)


def test_slow_down_grows_with_time_without_progress_and_is_capped() -> None:
    """A batch that has not moved is polled less often, up to the factor cap."""
    at_2min = next_poll(S, outcome=Outcome.OK, since_progress=120.0, random=fixed(0.5))
    at_1h = next_poll(S, outcome=Outcome.OK, since_progress=3600.0, random=fixed(0.5))
    assert at_2min == Decision(10.0, Reason.SLOW_DOWN)
    assert at_1h == Decision(20.0, Reason.SLOW_DOWN)


def test_slow_down_off_keeps_the_interval() -> None:
    """With slow_down disabled the interval stays put however long the batch is quiet."""
    s = PollSettings(interval=5.0, slow_down=False)
    assert next_poll(s, outcome=Outcome.OK, since_progress=1e6, random=fixed(0.5)).delay == 5.0


def test_backoff_is_full_jitter_over_an_exponential_window() -> None:
    """The n-th consecutive failure waits uniformly within [min, interval·2^(n-1)], capped."""
    assert backoff(S, 1, fixed(0.999999)) == pytest.approx(5.0, rel=1e-5)
    assert backoff(S, 3, fixed(0.5)) == 10.0
    assert backoff(S, 4, fixed(0.0)) == 0.5  # never below the floor
    assert backoff(S, 50, fixed(0.999999)) == pytest.approx(300.0, rel=1e-5)


def test_transient_failures_back_off() -> None:
    """A transient failure schedules a jittered backoff, not the interval."""
    decision = next_poll(S, outcome=Outcome.TRANSIENT, failures=2, random=fixed(0.25))
    assert decision == Decision(2.5, Reason.BACKOFF)


def test_retry_after_is_a_floor_with_positive_jitter() -> None:
    """On 429 with a wait, the next poll is at least that wait, plus at most 10% (≤1 s)."""
    low = next_poll(S, outcome=Outcome.RATE_LIMITED, retry_after=7.0, random=fixed(0.0))
    high = next_poll(S, outcome=Outcome.RATE_LIMITED, retry_after=7.0, random=fixed(0.999))
    assert low == Decision(7.0, Reason.RETRY_AFTER)
    assert 7.0 < high.delay < 7.7


def test_rate_limited_without_wait_backs_off() -> None:
    """A 429 without Retry-After falls back to exponential backoff."""
    decision = next_poll(S, outcome=Outcome.RATE_LIMITED, failures=1, random=fixed(0.5))
    assert decision == Decision(2.5, Reason.BACKOFF)


def test_not_found_is_confirmed_soon() -> None:
    """A first 404 is checked again within two seconds rather than a full interval."""
    decision = next_poll(S, outcome=Outcome.NOT_FOUND, random=fixed(0.5))
    assert decision == Decision(2.0, Reason.CONFIRM_NOT_FOUND)


def test_deadline_cuts_any_wait() -> None:
    """No wait runs past the watch's deadline; a passed deadline means now."""
    soon = next_poll(S, outcome=Outcome.OK, until_deadline=1.5, random=fixed(0.5))
    passed = next_poll(S, outcome=Outcome.TRANSIENT, failures=9, until_deadline=-3, random=fixed(1))
    assert soon == Decision(1.5, Reason.DEADLINE)
    assert passed == Decision(0.0, Reason.DEADLINE)


def test_eta_from_the_rate_of_finished_files() -> None:
    """ETA is remaining files at the observed rate; unknown until there is a rate."""
    assert eta_seconds(Progress(0, 0), Progress(10, 20), 100) == pytest.approx(40.0)
    assert eta_seconds(Progress(0, 0), Progress(0, 0), 100) is None
    assert eta_seconds(Progress(0, 5), Progress(10, 5), 100) is None
    assert eta_seconds(Progress(0, 0), Progress(10, 100), 100) == 0.0


def test_an_absurd_retry_after_is_capped_at_max_interval() -> None:
    """A day-long Retry-After is not obeyed: the watch looks again after max_interval."""
    decision = next_poll(S, outcome=Outcome.RATE_LIMITED, retry_after=86400.0, random=fixed(0.0))
    assert decision == Decision(300.0, Reason.RETRY_AFTER)


# -- adaptive polling ------------------------------------------------------------------------


def window(*points: tuple[float, int]) -> ProgressWindow:
    w = ProgressWindow()
    for at, finished in points:
        w = w.add(Progress(at, finished))
    return w


def test_window_keeps_the_moments_the_count_moved() -> None:
    """A reply with the same count adds nothing: the newest point is when the batch last moved."""
    w = window((0, 0), (5, 10), (10, 10), (15, 10))
    assert w.points == (Progress(0, 0), Progress(5, 10))
    assert w.since == 0


def test_window_drops_old_points_but_keeps_two() -> None:
    """Points older than the window's span go (the two newest stay), and at most a few stay."""
    old = window((0, 0), (10, 5), (10 + WINDOW_SECONDS + 1, 6))
    assert [p.at for p in old.points] == [10, 10 + WINDOW_SECONDS + 1]
    many = window(*((t, t) for t in range(1, 20)))
    assert len(many.points) == WINDOW_POINTS
    assert many.since == 1


def test_a_count_that_goes_back_starts_the_window_afresh() -> None:
    """Counts that fall (a server that restarted the batch) start a new curve."""
    w = window((0, 0), (10, 50), (20, 5))
    assert w.points == (Progress(20, 5),)
    assert w.since == 20


def test_rate_is_the_fastest_of_the_windows_rates() -> None:
    """The rate from each older point to the newest, the fastest one: a pause looks short."""
    # 10 files in the first 10 s, then a pause, then 10 more by 60 s.
    w = window((0, 0), (10, 10), (60, 20))
    assert w.rate() == pytest.approx(20 / 60)  # not 10 / 50 over the pause alone
    assert window((0, 0), (10, 10), (20, 40)).rate() == pytest.approx(3.0)
    assert window((0, 0)).rate() is None
    assert ProgressWindow().rate() is None


def test_remaining_is_what_is_left_at_the_rate_less_the_quiet_time() -> None:
    """Files left over the rate, from the newest point, less the time since it; negative when
    overdue; nothing to go by without a rate."""
    w = window((0, 0), (100, 50))  # 0.5 files/s, 50 left: 100 s from t = 100
    assert w.remaining_seconds(100, now=100) == pytest.approx(100.0)
    assert w.remaining_seconds(100, now=130) == pytest.approx(70.0)
    assert w.remaining_seconds(100, now=230) == pytest.approx(-30.0)
    assert w.remaining_seconds(50, now=130) == 0.0
    assert window((0, 0)).remaining_seconds(100, now=10) is None


def test_remaining_is_trusted_only_as_far_ahead_as_it_was_seen() -> None:
    """A rate seen for 5 s says nothing about the next ten minutes: the estimate is capped."""
    w = window((0, 0), (5, 2))  # 0.4 files/s, 998 left: 2,495 s by the rate
    assert w.remaining_seconds(1000, now=5) == pytest.approx(TRUST_AHEAD * 5)


S_ADAPTIVE = PollSettings(interval=5.0, min_interval=0.5, max_interval=300.0)


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        (100.0, LEAD * 100.0),  # far: a share of the time left
        (10_000.0, 300.0),  # never beyond max_interval
        (2.0, NEAR * 5.0),  # near: NEAR · interval apart
        (0.0, NEAR * 5.0),  # due now
        (-10.0, NEAR * 5.0 + 1.0),  # overdue: growing with the time overdue
        (-1_000.0, 5.0),  # ...up to the interval, never beyond
    ],
)
def test_adaptive_wait_follows_the_time_left(remaining: float, expected: float) -> None:
    """Rare polls while the end is far, NEAR · interval apart near it, up to interval overdue."""
    assert adaptive_wait(S_ADAPTIVE, remaining) == pytest.approx(expected)


def test_adaptive_wait_never_goes_below_min_interval() -> None:
    """With a short interval, the near spacing is held at min_interval."""
    s = PollSettings(interval=1.0, min_interval=0.5)
    assert adaptive_wait(s, 0.1) == 0.5
    assert adaptive_wait(s, None) is None


def test_ok_reply_with_an_estimate_waits_by_it() -> None:
    """With an estimate of the time left, an OK reply waits by the estimate."""
    far = next_poll(S, outcome=Outcome.OK, remaining=200.0, random=fixed(0.5))
    near = next_poll(S, outcome=Outcome.OK, remaining=1.0, random=fixed(0.5))
    assert far == Decision(LEAD * 200.0, Reason.ESTIMATE)
    assert near == Decision(NEAR * 5.0, Reason.ESTIMATE)


def test_without_an_estimate_or_switched_off_the_interval_stays() -> None:
    """No estimate, or ``adaptive = false``: the plain interval."""
    off = PollSettings(interval=5.0, adaptive=False)
    assert next_poll(S, outcome=Outcome.OK, remaining=None, random=fixed(0.5)).delay == 5.0
    assert next_poll(off, outcome=Outcome.OK, remaining=200.0, random=fixed(0.5)) == Decision(
        5.0, Reason.INTERVAL
    )


def test_the_server_hint_comes_before_the_estimate() -> None:
    """openai-poll-after-ms wins over the estimate, whichever is longer."""
    decision = next_poll(S, outcome=Outcome.OK, poll_after=3.0, remaining=200.0, random=fixed(0))
    assert decision == Decision(3.0, Reason.SERVER_HINT)


def test_failures_and_deadlines_keep_their_precedence_over_the_estimate() -> None:
    """Backoff, a 429's wait and the deadline are not changed by an estimate."""
    failed = next_poll(S, outcome=Outcome.TRANSIENT, failures=2, remaining=1.0, random=fixed(0.25))
    limited = next_poll(
        S, outcome=Outcome.RATE_LIMITED, retry_after=7.0, remaining=1.0, random=fixed(0)
    )
    cut = next_poll(S, outcome=Outcome.OK, remaining=200.0, until_deadline=4.0, random=fixed(0))
    assert failed == Decision(2.5, Reason.BACKOFF)
    assert limited == Decision(7.0, Reason.RETRY_AFTER)
    assert cut == Decision(4.0, Reason.DEADLINE)


def test_slowing_down_a_quiet_batch_lengthens_an_estimate_that_is_due() -> None:
    """A batch quiet for two minutes is slowed down from the interval even if overdue."""
    decision = next_poll(
        S, outcome=Outcome.OK, since_progress=120.0, remaining=-120.0, random=fixed(0)
    )
    assert decision == Decision(10.0, Reason.SLOW_DOWN)


def test_likelihood_of_an_end_grows_with_the_time_since_the_poll() -> None:
    """Half likely at the estimate, 0.9 at twice it, and more likely the longer since the poll."""
    assert ended_likelihood(60.0, 0.0, 5.0) == 0.0
    assert ended_likelihood(60.0, 60.0, 5.0) == pytest.approx(0.5)
    assert ended_likelihood(60.0, 120.0, 5.0) == pytest.approx(0.9, abs=1e-3)
    assert ended_likelihood(60.0, 30.0, 5.0) < ended_likelihood(60.0, 45.0, 5.0)


def test_likelihood_ranks_a_near_end_above_a_far_one() -> None:
    """At the same time since the poll, the batch estimated to end sooner ranks first; an
    estimate overdue by o counts as o to go, at least half an interval; no estimate, as
    UNKNOWN_END intervals."""
    assert ended_likelihood(10.0, 5.0, 5.0) > ended_likelihood(100.0, 5.0, 5.0)
    assert ended_likelihood(-30.0, 30.0, 5.0) == pytest.approx(0.5)
    assert ended_likelihood(-1.0, 2.5, 5.0) == pytest.approx(0.5)
    assert ended_likelihood(None, UNKNOWN_END * 5.0, 5.0) == pytest.approx(0.5)
