"""One watched batch: what we know of it, as the engine keeps it.

A :class:`Watch` is mutable and owned by the engine (one event loop, no locks). Readers — the
metrics collector, the HTTP API, the store — take what they need synchronously, between awaits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..api.models import IN_PROGRESS, FileCounts
from .events import BatchResult
from .policy import Progress

Key = tuple[str, str]


class Phase(StrEnum):
    WATCHING = "watching"  # polling the batch
    LISTING = "listing"  # the batch ended; reading its failed files
    FINISHED = "finished"  # nothing more to do


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """Per-watch overrides of the engine's defaults; ``None`` keeps the default."""

    interval_seconds: float | None = None
    deadline_seconds: float | None = None
    cancel_on_timeout: bool | None = None
    stall_after_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}


class Watch:
    __slots__ = (
        "batch_id",
        "busy",
        "created_at",
        "deadline_at",
        "due",
        "eta_seconds",
        "failures",
        "file_counts",
        "finished_at",
        "first_seen_at",
        "labels",
        "last_change",
        "last_poll_at",
        "not_found_seen",
        "options",
        "pending_note",
        "pending_status",
        "phase",
        "progress_first",
        "progress_last",
        "registered_at",
        "rejections",
        "removed",
        "result",
        "seq",
        "stalled",
        "status",
        "unknown_status_seen",
        "vector_store_id",
    )

    def __init__(
        self,
        vector_store_id: str,
        batch_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        options: WatchOptions | None = None,
        registered_at: float,
    ) -> None:
        self.vector_store_id = vector_store_id
        self.batch_id = batch_id
        self.labels: dict[str, str] = dict(labels or {})
        self.options = options or WatchOptions()
        self.registered_at = registered_at  # wall clock
        self.deadline_at: float | None = (
            registered_at + self.options.deadline_seconds if self.options.deadline_seconds else None
        )
        self.phase = Phase.WATCHING
        self.status: str | None = None
        self.file_counts: FileCounts | None = None
        self.created_at: int | None = None
        self.first_seen_at: float | None = None  # wall clock of the first good reply
        self.last_poll_at: float | None = None  # wall clock of the last good reply
        self.finished_at: float | None = None
        self.last_change: float = 0.0  # monotonic: when the counts last changed
        self.progress_first: Progress | None = None
        self.progress_last: Progress | None = None
        self.eta_seconds: float | None = None
        self.stalled = False
        self.failures = 0
        self.not_found_seen = 0
        self.rejections = 0
        self.unknown_status_seen: str | None = None
        self.result: BatchResult | None = None
        # While LISTING: how the watch is ending, kept across retries of the listing.
        self.pending_status: str | None = None
        self.pending_note = ""
        self.removed = False
        self.busy = False  # a worker is stepping it
        self.due = 0.0
        self.seq = 0

    @property
    def key(self) -> Key:
        return (self.vector_store_id, self.batch_id)

    @property
    def state(self) -> str:
        """One word for dashboards: watching, stalled, or how the watch ended."""
        if self.result is not None:
            return self.result.status
        return "stalled" if self.stalled else "watching"

    @property
    def display_status(self) -> str:
        """The batch's status as the metrics show it: the API's, or timed_out / not_found."""
        if self.result is not None:
            return self.result.status
        return self.status or IN_PROGRESS

    def as_dict(self) -> dict[str, Any]:
        """The watch as the control API and the status page show it."""
        data: dict[str, Any] = {
            "vector_store_id": self.vector_store_id,
            "batch_id": self.batch_id,
            "labels": dict(self.labels),
            "options": self.options.as_dict(),
            "state": self.state,
            "phase": self.phase.value,
            "status": self.display_status,
            "api_status": self.status,
            "file_counts": self.file_counts.as_dict() if self.file_counts else None,
            "stalled": self.stalled,
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
            "registered_at": self.registered_at,
            "first_seen_at": self.first_seen_at,
            "last_poll_at": self.last_poll_at,
            "finished_at": self.finished_at,
            "deadline_at": self.deadline_at,
            "consecutive_failures": self.failures,
        }
        if self.result is not None:
            data["result"] = self.result.as_dict()
        return data
