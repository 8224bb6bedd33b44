"""What clients did to the simulator: counts that tests and benchmarks assert on."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The endpoint name for requests that match no API route.
UNKNOWN_ENDPOINT = "unknown"
#: How many recent requests the log keeps.
LOG_SIZE = 10_000


@dataclass(slots=True)
class RequestRecord:
    """One API request as the simulator saw it. ``status`` is None when no complete reply
    went out (a dropped connection); ``fault`` names the fault it got, if any."""

    at: float
    request_id: str
    method: str
    path: str
    query: str
    endpoint: str
    batch_id: str | None
    status: int | None = None
    fault: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class SimStats:
    """Request counts since the start (or the last :meth:`reset`), and a log of recent requests.

    ``retrieves_after_terminal`` counts retrieves of a batch made after a reply had already
    shown that batch terminal: requests a well-behaved watcher never needs to make.
    Requests per second are counted in wall-clock seconds, whatever the simulator's clock.
    """

    def __init__(
        self, wall_clock: Callable[[], float] = time.time, *, log_size: int = LOG_SIZE
    ) -> None:
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        #: The most recent API requests, oldest first.
        self.log: deque[RequestRecord] = deque(maxlen=log_size)
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.by_endpoint: Counter[str] = Counter()
            self.by_batch: Counter[tuple[str, str]] = Counter()
            self.statuses: Counter[int] = Counter()
            self.faults: Counter[str] = Counter()
            self.retrieves_after_terminal = 0
            self.retrieves_after_terminal_by_batch: Counter[str] = Counter()
            self.max_limit = 0
            self.rate_limited = 0
            self.max_requests_per_second = 0
            self._second = -1
            self._in_second = 0
            self.log.clear()

    def log_request(self, record: RequestRecord) -> None:
        with self._lock:
            self.log.append(record)

    def recent(self, limit: int | None = None, batch_id: str | None = None) -> list[RequestRecord]:
        """The last ``limit`` logged requests (of one batch, if given), oldest first."""
        with self._lock:
            records = [r for r in self.log if batch_id is None or r.batch_id == batch_id]
        return records[-limit:] if limit else records

    def record_request(
        self, endpoint: str, batch_id: str | None, *, after_terminal: bool = False
    ) -> None:
        second = int(self._wall_clock())
        with self._lock:
            self.requests += 1
            self.by_endpoint[endpoint] += 1
            if batch_id is not None:
                self.by_batch[batch_id, endpoint] += 1
            if after_terminal:
                self.retrieves_after_terminal += 1
                if batch_id is not None:
                    self.retrieves_after_terminal_by_batch[batch_id] += 1
            if second != self._second:
                self._second, self._in_second = second, 0
            self._in_second += 1
            self.max_requests_per_second = max(self.max_requests_per_second, self._in_second)

    def record_status(self, status: int) -> None:
        with self._lock:
            self.statuses[status] += 1
            if status == 429:
                self.rate_limited += 1

    def record_limit(self, limit: int) -> None:
        with self._lock:
            self.max_limit = max(self.max_limit, limit)

    def record_fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def requests_for(self, batch_id: str, endpoint: str | None = None) -> int:
        """Requests made for one batch, on one endpoint or all."""
        with self._lock:
            if endpoint is not None:
                return self.by_batch[batch_id, endpoint]
            return sum(n for (b, _), n in self.by_batch.items() if b == batch_id)

    def as_json(self, *, per_batch: bool = True) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {
                "requests": self.requests,
                "by_endpoint": dict(self.by_endpoint),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "faults": dict(self.faults),
                "retrieves_after_terminal": self.retrieves_after_terminal,
                "max_limit": self.max_limit,
                "rate_limited": self.rate_limited,
                "max_requests_per_second": self.max_requests_per_second,
            }
            if per_batch:
                by_batch: dict[str, dict[str, int]] = {}
                for (batch_id, endpoint), n in self.by_batch.items():
                    by_batch.setdefault(batch_id, {})[endpoint] = n
                out["by_batch"] = by_batch
                out["retrieves_after_terminal_by_batch"] = dict(
                    self.retrieves_after_terminal_by_batch
                )
            return out
