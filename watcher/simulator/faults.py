"""Faults the simulator can be told to produce, and the book that decides when they fire.

A :class:`Fault` says what goes wrong (its :class:`FaultKind`) and when: on every matching
request, on the next ``times`` of them, with a ``probability`` (drawn from the simulator's
seeded RNG), or both (each matching request fires with the probability until ``times`` fired).
It may be limited to one endpoint. How each kind looks on the wire is the HTTP app's business
(:mod:`watcher.simulator.app`); this module only chooses.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

Endpoint = Literal[
    "retrieve",
    "list",
    "cancel",
    "list_stores",
    "retrieve_store",
    "list_store_files",
    "file",
    "store_file",
    "detach_file",
    "create_batch",
]
ENDPOINTS: Final[tuple[Endpoint, ...]] = get_args(Endpoint)


class FaultKind(enum.StrEnum):
    RATE_LIMIT = "rate_limit"
    """429 with ``Retry-After`` (whole seconds) and ``retry-after-ms``."""
    RATE_LIMIT_BARE = "rate_limit_bare"
    """429 with neither header."""
    SERVER_ERROR = "server_error"
    """``status`` (500, 502, 503, …) with an OpenAI-style JSON error body."""
    HTML_ERROR = "html_error"
    """``status`` (502 unless told) with a proxy's HTML page and no ``x-request-id``."""
    TRUNCATED_JSON = "truncated_json"
    """The real reply's status, with its JSON body cut in the middle (Content-Length matches)."""
    DROP = "drop"
    """The connection is closed without any response."""
    CUT_BODY = "cut_body"
    """The real reply's headers, half its body, then the connection closes."""
    SLOW = "slow"
    """The real reply, ``delay_seconds`` late."""
    UNKNOWN_STATUS = "unknown_status"
    """The batch reply with ``status`` replaced by ``value`` (e.g. ``paused``)."""
    VANISH = "vanish"
    """The batch is gone: 404 from this request on."""
    PAGINATION_LOOP = "pagination_loop"
    """The list ignores its cursors: the same first page, ``has_more: true``, forever."""
    EMPTY_PAGE = "empty_page"
    """The list answers an empty page with ``has_more: true``."""
    WRONG_ID = "wrong_id"
    """The batch reply names another batch, ``vsfb_invented`` (mock servers invent ids)."""
    IGNORE_FILTER = "ignore_filter"
    """The list ignores ``filter`` and lists every file, whatever its status."""
    EXPIRE = "expire"
    """400 "... has expired", as llama-stack answers for a batch past its seven days."""
    LATE_REPLY = "late_reply"
    """The request takes effect at once (a batch is made), but a successful reply comes
    ``delay_seconds`` late, if the client still waits: what a client cut off then never saw."""


#: Kinds that only make sense on some endpoints; they never fire (nor count) elsewhere.
_ONLY_ON: Final[Mapping[FaultKind, frozenset[Endpoint]]] = {
    FaultKind.UNKNOWN_STATUS: frozenset({"retrieve", "cancel", "retrieve_store", "create_batch"}),
    FaultKind.PAGINATION_LOOP: frozenset({"list", "list_stores", "list_store_files"}),
    FaultKind.EMPTY_PAGE: frozenset({"list", "list_stores", "list_store_files"}),
    FaultKind.WRONG_ID: frozenset({"retrieve", "cancel", "retrieve_store", "create_batch"}),
    FaultKind.IGNORE_FILTER: frozenset({"list", "list_store_files"}),
    FaultKind.VANISH: frozenset({"retrieve", "list", "cancel"}),
    FaultKind.EXPIRE: frozenset({"retrieve", "list", "cancel"}),
}
_DEFAULT_STATUS: Final = {FaultKind.SERVER_ERROR: 500, FaultKind.HTML_ERROR: 502}


@dataclass(frozen=True, slots=True)
class Fault:
    """What goes wrong, and on which requests."""

    kind: FaultKind
    endpoint: Endpoint | None = None
    times: int | None = None
    probability: float | None = None
    #: HTTP status for ``server_error`` (default 500) and ``html_error`` (default 502).
    status: int | None = None
    retry_after_seconds: float = 1.0
    delay_seconds: float = 1.0
    #: The batch status ``unknown_status`` reports.
    value: str = "paused"

    def __post_init__(self) -> None:
        problems = []
        kind: object = self.kind  # a JSON caller may pass anything
        if not isinstance(kind, FaultKind):
            problems.append(f"kind: {kind!r} is not one of {[k.value for k in FaultKind]}")
        if self.endpoint is not None and self.endpoint not in ENDPOINTS:
            problems.append(f"endpoint: {self.endpoint!r} is not one of {list(ENDPOINTS)}")
        if self.times is not None and (not _is_int(self.times) or self.times < 1):
            problems.append(f"times: {self.times!r} is not an integer >= 1")
        if self.probability is not None and not (
            _is_number(self.probability) and 0 <= self.probability <= 1
        ):
            problems.append(f"probability: {self.probability!r} is not in [0, 1]")
        if self.status is not None and (not _is_int(self.status) or not 400 <= self.status <= 599):
            problems.append(f"status: {self.status!r} is not an HTTP error status")
        for name in ("retry_after_seconds", "delay_seconds"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                problems.append(f"{name}: {value!r} is not a finite number >= 0")
        if not isinstance(self.value, str) or not self.value:
            problems.append(f"value: {self.value!r} is not a non-empty string")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def http_status(self) -> int:
        return self.status or _DEFAULT_STATUS.get(self.kind, 500)

    def applies_to(self, endpoint: Endpoint) -> bool:
        if self.endpoint is not None and self.endpoint != endpoint:
            return False
        only = _ONLY_ON.get(self.kind)
        return only is None or endpoint in only

    @classmethod
    def from_json(cls, obj: object) -> Fault:
        """A fault from its JSON form (the field names). Raises ``ValueError``."""
        if not isinstance(obj, Mapping):
            raise ValueError("a fault must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"unknown fault fields: {unknown}")
        fields = dict(obj)
        try:
            fields["kind"] = FaultKind(str(fields.get("kind")))
        except ValueError:
            raise ValueError(
                f"kind: {fields.get('kind')!r} is not one of {[k.value for k in FaultKind]}"
            ) from None
        return cls(**fields)

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(slots=True)
class ArmedFault:
    """A fault waiting in the book: how often it may still fire, how often it did."""

    id: int
    fault: Fault
    batch_id: str | None
    remaining: int | None
    fired: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "batch_id": self.batch_id,
            "remaining": self.remaining,
            "fired": self.fired,
            **self.fault.as_json(),
        }


class FaultBook:
    """The armed faults. A batch's own faults are asked before the global ones; the first that
    fires wins. Safe to arm from another thread than the one serving requests."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._lock = threading.Lock()
        self._next_id = 1
        self._global: list[ArmedFault] = []
        self._by_batch: dict[str, list[ArmedFault]] = {}

    def arm(self, fault: Fault, batch_id: str | None = None) -> ArmedFault:
        with self._lock:
            armed = ArmedFault(self._next_id, fault, batch_id, fault.times)
            self._next_id += 1
            if batch_id is None:
                self._global.append(armed)
            else:
                self._by_batch.setdefault(batch_id, []).append(armed)
            return armed

    def clear(self, batch_id: str | None = None) -> int:
        """Disarm the faults of one batch, or all of them; returns how many."""
        with self._lock:
            if batch_id is not None:
                return len(self._by_batch.pop(batch_id, []))
            count = len(self._global) + sum(map(len, self._by_batch.values()))
            self._global.clear()
            self._by_batch.clear()
            return count

    def draw(self, endpoint: Endpoint, batch_id: str | None) -> Fault | None:
        """The fault this request gets, if any (and count it as fired)."""
        if not self._global and not self._by_batch:
            return None
        with self._lock:
            if batch_id is not None and batch_id in self._by_batch:
                own = self._by_batch[batch_id]
                fault = self._fire(own, endpoint)
                if not own:
                    del self._by_batch[batch_id]
                if fault is not None:
                    return fault
            return self._fire(self._global, endpoint)

    def _fire(self, armed: list[ArmedFault], endpoint: Endpoint) -> Fault | None:
        for n, entry in enumerate(armed):
            fault = entry.fault
            if not fault.applies_to(endpoint):
                continue
            if fault.probability is not None and self._rng.random() >= fault.probability:
                continue
            entry.fired += 1
            if entry.remaining is not None:
                entry.remaining -= 1
                if entry.remaining == 0:
                    del armed[n]
            return fault
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            entries = [*self._global, *(a for v in self._by_batch.values() for a in v)]
            return [a.as_json() for a in sorted(entries, key=lambda a: a.id)]
