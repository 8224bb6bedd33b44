"""What the API's response headers tell the scheduler: request id, poll hint, rate limits, waits.

Pure functions of header values; the client calls :func:`read_meta` once per response.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_MAX_WAIT = 24 * 3600.0  # a wait longer than a day is not a wait we believe


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The request rate limit as the ``x-ratelimit-*-requests`` headers state it."""

    limit: int | None = None
    remaining: int | None = None
    reset_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ResponseMeta:
    """Facts about one HTTP exchange that matter beyond its body."""

    status: int
    request_id: str | None = None
    poll_after: float | None = None  # the server's poll-interval hint, seconds
    rate_limit: RateLimit | None = None


def parse_duration(value: str) -> float | None:
    """Read a Go-style duration (``6m0s``, ``1s``, ``20ms``, ``1h2m3.5s``) or plain seconds."""
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                return None
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text):
            return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, _MAX_WAIT)


def parse_retry_after(
    headers: Mapping[str, str], *, now: Callable[[], float] | None = None
) -> float | None:
    """The server's wait after a 429 or 503, in seconds: ``retry-after-ms`` first, then
    ``Retry-After`` as seconds or as an HTTP date. ``None`` when it gave none we can read."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return min(ms / 1000.0, _MAX_WAIT)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        current = now() if now is not None else time.time()
        seconds = max(0.0, when.timestamp() - current)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, _MAX_WAIT)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    limit = _int(headers.get("x-ratelimit-limit-requests"))
    remaining = _int(headers.get("x-ratelimit-remaining-requests"))
    reset_raw = headers.get("x-ratelimit-reset-requests")
    reset = parse_duration(reset_raw) if reset_raw is not None else None
    if limit is None and remaining is None and reset is None:
        return None
    return RateLimit(limit=limit, remaining=remaining, reset_seconds=reset)


def parse_poll_after(value: str | None) -> float | None:
    """``openai-poll-after-ms`` in seconds; nonsense is ignored rather than obeyed."""
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        return None
    if not math.isfinite(ms) or ms < 0:
        return None
    return min(ms / 1000.0, _MAX_WAIT)


_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")


def read_meta(status: int, headers: Mapping[str, str]) -> ResponseMeta:
    request_id = headers.get("x-request-id")
    if request_id is not None and not _REQUEST_ID.fullmatch(request_id):
        # A hostile value could break a log line; keep what identifies, drop the rest.
        request_id = re.sub(r"[^A-Za-z0-9_.:\-]", "?", request_id[:128]) or None
    return ResponseMeta(
        status=status,
        request_id=request_id,
        poll_after=parse_poll_after(headers.get("openai-poll-after-ms")),
        rate_limit=parse_rate_limit(headers),
    )
