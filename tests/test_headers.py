"""Reading the API's response headers."""

from __future__ import annotations

import pytest

from watcher.api.headers import (
    RateLimit,
    parse_duration,
    parse_poll_after,
    parse_rate_limit,
    parse_retry_after,
    read_meta,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("7", 7.0),
        ("", None),
        ("soon", None),
        ("5x", None),
        ("1s garbage", None),
        ("-3", None),
        ("nan", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    """Go-style durations and plain seconds are read; anything else is None."""
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_ms_wins_over_seconds() -> None:
    """retry-after-ms is the more precise header and is preferred."""
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5


def test_retry_after_seconds_and_http_date() -> None:
    """Retry-After may be seconds or an HTTP date, read against the given clock."""
    assert parse_retry_after({"retry-after": "12"}) == 12.0
    date = "Wed, 21 Oct 2015 07:28:30 GMT"
    now = 1445412480.0  # 07:28:00 that day
    assert parse_retry_after({"retry-after": date}, now=lambda: now) == pytest.approx(30.0)


@pytest.mark.parametrize(
    "headers",
    [{}, {"retry-after": "tomorrow"}, {"retry-after-ms": "-5"}, {"retry-after": "-1"}],
)
def test_unreadable_retry_after_is_none(headers: dict[str, str]) -> None:
    """A missing or nonsensical wait gives None, so the policy backs off on its own."""
    assert parse_retry_after(headers) is None


def test_absurd_waits_are_capped_at_a_day() -> None:
    """A server asking for a year's wait gets a day at most."""
    assert parse_retry_after({"retry-after": "31536000"}) == 86400.0


def test_rate_limit_headers() -> None:
    """The x-ratelimit-*-requests trio is parsed; absent headers give None."""
    headers = {
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-reset-requests": "12ms",
    }
    assert parse_rate_limit(headers) == RateLimit(5000, 4999, pytest.approx(0.012))
    assert parse_rate_limit({}) is None
    assert parse_rate_limit({"x-ratelimit-remaining-requests": "-1"}) is None


def test_poll_after_hint() -> None:
    """openai-poll-after-ms is read in seconds; junk is ignored."""
    assert parse_poll_after("2500") == 2.5
    assert parse_poll_after("fast") is None
    assert parse_poll_after(None) is None


def test_hostile_request_id_is_defused() -> None:
    """A request id with newlines or quotes cannot break a log line."""
    meta = read_meta(500, {"x-request-id": 'req_1\n{"forged": true}'})
    assert meta.request_id is not None
    assert "\n" not in meta.request_id
    assert '"' not in meta.request_id
    assert meta.request_id.startswith("req_1")
