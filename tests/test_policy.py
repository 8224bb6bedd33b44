"""The polling policy, driven with plain numbers: no clock, no sleeping."""

from __future__ import annotations

import pytest

from watcher.core.policy import (
    Decision,
    Outcome,
    PollSettings,
    Progress,
    Reason,
    backoff,
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
