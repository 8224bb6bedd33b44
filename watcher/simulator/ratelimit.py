"""The simulator's global request rate limit: a fixed window, reported in OpenAI's headers."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``requests`` API requests per ``window_seconds``."""

    requests: int
    window_seconds: float

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not isinstance(self.requests, int):
            raise ValueError(f"requests: {self.requests!r} is not an integer")
        if self.requests < 1:
            raise ValueError(f"requests: {self.requests} is not >= 1")
        if not isinstance(self.window_seconds, int | float) or not (
            math.isfinite(self.window_seconds) and self.window_seconds > 0
        ):
            raise ValueError(f"window_seconds: {self.window_seconds!r} is not a number > 0")


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit-requests", str(self.limit).encode()),
            (b"x-ratelimit-remaining-requests", str(self.remaining).encode()),
            (b"x-ratelimit-reset-requests", format_duration(self.reset_seconds).encode()),
        ]


class RateLimiter:
    """Counts requests in fixed windows of the simulator's clock."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._window_start: float | None = None
        self._count = 0

    def hit(self, now: float) -> RateDecision:
        """Count one request made at ``now`` and say whether it is allowed."""
        window = self.limit.window_seconds
        with self._lock:
            if self._window_start is None or now >= self._window_start + window:
                self._window_start = now
                self._count = 0
            allowed = self._count < self.limit.requests
            if allowed:
                self._count += 1
            reset = self._window_start + window - now
            remaining = self.limit.requests - self._count
        return RateDecision(allowed, self.limit.requests, remaining, reset)


def format_duration(seconds: float) -> str:
    """A duration the way OpenAI writes it: ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs
