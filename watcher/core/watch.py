"""One watched batch, or one watched vector store: what we know of it, as an immutable record.

A store's watch has no batch: its ``batch_id`` is :data:`STORE` (the empty string), so its key,
``(vector_store_id, "")``, never meets a batch's. Its ``file_counts`` and ``status`` are the
store's; ``store`` keeps the rest of what the store showed.

The lifecycle (:mod:`watcher.core.lifecycle`) turns one :class:`Watch` into the next; the engine
keeps the latest. Readers — the metrics collector, the HTTP app, the state store, the status page
— get the record itself: it never changes under them, so it can be read from any thread.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from ..api.models import IN_PROGRESS, FileCounts
from ..api.vector_stores import VectorStore
from .policy import Progress, ProgressWindow
from .results import BatchResult, StuckFile
from .retry import RetryPolicy
from .states import Phase, State

Key = tuple[str, str]

#: The ``batch_id`` of a vector store's watch.
STORE = ""

_NO_LABELS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """Per-watch overrides of the engine's defaults; ``None`` keeps the default."""

    interval_seconds: float | None = None
    deadline_seconds: float | None = None
    cancel_on_timeout: bool | None = None
    stall_after_seconds: float | None = None
    #: Send failed files of some codes again, automatically (None: never).
    retry: RetryPolicy | None = None

    def as_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}
        if self.retry is not None:
            data["retry"] = self.retry.as_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WatchOptions:
        """The inverse of :meth:`as_dict` (for the state store)."""
        retry = data.get("retry")
        fields = {k: v for k, v in data.items() if k != "retry"}
        return cls(**fields, retry=RetryPolicy.from_dict(retry) if retry else None)


@dataclass(frozen=True, slots=True)
class Watch:
    """A watch at one moment. Times named ``*_at`` are wall-clock (Unix) seconds, but for
    ``last_change``, which is on the engine's monotonic clock."""

    vector_store_id: str
    batch_id: str
    registered_at: float
    labels: Mapping[str, str] = field(default_factory=lambda: _NO_LABELS)
    options: WatchOptions = field(default_factory=WatchOptions)
    deadline_at: float | None = None
    phase: Phase = Phase.WATCHING
    #: The batch as the API last showed it.
    status: str | None = None
    file_counts: FileCounts | None = None
    created_at: int | None = None
    first_seen_at: float | None = None  # the first good reply
    last_poll_at: float | None = None  # the last good reply
    #: When the counts or the status last changed (or the watch started), on the monotonic clock.
    last_change: float = 0.0
    progress_first: Progress | None = None
    progress_last: Progress | None = None
    eta_seconds: float | None = None
    #: Recent progress, which the adaptive poll schedule estimates the end from.
    window: ProgressWindow = field(default_factory=ProgressWindow)
    stalled: bool = False
    #: Files still in progress when the batch was flagged stalled or its deadline passed.
    stuck_files: tuple[StuckFile, ...] = ()
    #: Consecutive failed requests, and the last error seen (kept after a success, with its time).
    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    not_found_seen: int = 0
    rejections: int = 0
    unknown_status_seen: str | None = None
    #: Once the end is decided (phase LISTING): how, and what to say about it.
    ending: State | None = None
    note: str = ""
    result: BatchResult | None = None
    finished_at: float | None = None
    #: A store's watch: the store as the API last showed it.
    store: VectorStore | None = None
    #: A store's watch ends once no file of the store is in progress (``watch vs_...``); else
    #: it watches the store until the store expires or is gone (the daemon).
    until_idle: bool = False
    #: The batch this one retries (its failed files were sent again as this batch), and which
    #: retry along the chain it is (0: not a retry).
    retry_of: str | None = None
    retry_attempt: int = 0
    #: The retry attempt whose request may have been sent (recorded before sending it): after a
    #: restart, the same request is sent again with the same Idempotency-Key, never a new one.
    retry_sending: int | None = None

    @classmethod
    def new(
        cls,
        vector_store_id: str,
        batch_id: str,
        *,
        registered_at: float,
        labels: Mapping[str, str] | None = None,
        options: WatchOptions | None = None,
    ) -> Watch:
        options = options or WatchOptions()
        deadline = options.deadline_seconds
        return cls(
            sys.intern(vector_store_id),  # one string per store, not one per watch
            batch_id,
            registered_at,
            labels=MappingProxyType(dict(labels)) if labels else _NO_LABELS,
            options=options,
            deadline_at=registered_at + deadline if deadline else None,
        )

    @property
    def is_store(self) -> bool:
        """Whether this watches a whole vector store rather than one of its batches."""
        return self.batch_id == STORE

    def evolve(self, changes: Mapping[str, Any]) -> Watch:
        """``dataclasses.replace(self, **changes)``, a few times faster: a good reply makes a
        new record on every poll."""
        return _evolve(self, changes)

    @property
    def key(self) -> Key:
        return (self.vector_store_id, self.batch_id)

    @property
    def state(self) -> State:
        """One word for dashboards: watching, stalled, or how the watch ended."""
        if self.result is not None:
            return self.result.status
        return State.STALLED if self.stalled else State.WATCHING

    @property
    def display_status(self) -> str:
        """The batch's status as the metrics show it: the API's, or how the watch ended."""
        if self.result is not None:
            return self.result.status.value
        return self.status or IN_PROGRESS

    def as_dict(self) -> dict[str, Any]:
        """The watch as the control API and the status page show it."""
        data: dict[str, Any] = {
            "vector_store_id": self.vector_store_id,
            "batch_id": self.batch_id,
            "labels": dict(self.labels),
            "options": self.options.as_dict(),
            "state": self.state.value,
            "phase": self.phase.value,
            "status": self.display_status,
            "api_status": self.status,
            "file_counts": self.file_counts.as_dict() if self.file_counts else None,
            "stalled": self.stalled,
            "stuck_files": [f.as_dict() for f in self.stuck_files],
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
            "registered_at": self.registered_at,
            "first_seen_at": self.first_seen_at,
            "last_poll_at": self.last_poll_at,
            "finished_at": self.finished_at,
            "deadline_at": self.deadline_at,
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }
        data["retry_of"] = self.retry_of
        if self.result is not None:
            data["result"] = self.result.as_dict()
        if self.is_store:
            data["store"] = None if self.store is None else self.store.as_dict()
        return data


def _compile_evolve() -> Callable[[Watch, Mapping[str, Any]], Watch]:
    """A copy-with-changes for :class:`Watch` that sets each slot through its descriptor:
    a frozen dataclass's ``__init__`` (which ``replace`` calls) goes through
    ``object.__setattr__`` for each of its fields, and ``replace`` first reads them all into a
    dict."""
    names = [f.name for f in fields(Watch)]
    scope: dict[str, Any] = {"new": object.__new__, "cls": Watch}
    lines = ["def evolve(w, changes):", "    out = new(cls)"]
    for name in names:
        scope[f"set_{name}"] = getattr(Watch, name).__set__
        lines.append(f"    set_{name}(out, changes[{name!r}] if {name!r} in changes else w.{name})")
    lines.append("    return out")
    exec("\n".join(lines), scope)  # noqa: S102 - code made here, from the field names
    evolve: Callable[[Watch, Mapping[str, Any]], Watch] = scope["evolve"]
    return evolve


_evolve = _compile_evolve()
