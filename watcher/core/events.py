"""What the engine tells the world: typed, immutable events.

Each event has a past-tense ``name`` and a flat ``fields()`` mapping for structured logs. The
engine hands every event to its sinks (the logger, the command's output, the daemon's metrics and
notifier); sinks must be quick and must not raise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..api.models import FileCounts
from .results import BatchResult, FailedFile, StuckFile


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    name: ClassVar[str] = "event"
    level: ClassVar[str] = "info"

    vector_store_id: str
    batch_id: str

    def fields(self) -> dict[str, Any]:
        return {"vector_store_id": self.vector_store_id, "batch_id": self.batch_id}


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchStarted(Event):
    name: ClassVar[str] = "watch_started"
    labels: Mapping[str, str] = field(default_factory=dict)
    resumed: bool = False

    def fields(self) -> dict[str, Any]:
        return {**Event.fields(self), "labels": dict(self.labels), "resumed": self.resumed}


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchRemoved(Event):
    name: ClassVar[str] = "watch_removed"


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchForgotten(WatchRemoved):
    """No longer watched here, yet not deleted (fleet mode: another replica owns it now); the
    sinks drop what they keep of it as for a removal."""

    name: ClassVar[str] = "watch_forgotten"
    level: ClassVar[str] = "debug"


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchProgressed(Event):
    name: ClassVar[str] = "batch_progressed"
    level: ClassVar[str] = "debug"
    status: str
    file_counts: FileCounts
    eta_seconds: float | None

    def fields(self) -> dict[str, Any]:
        return {
            **Event.fields(self),
            "status": self.status,
            "file_counts": self.file_counts.as_dict(),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchStalled(Event):
    name: ClassVar[str] = "batch_stalled"
    level: ClassVar[str] = "warning"
    file_counts: FileCounts
    stalled_seconds: float

    def fields(self) -> dict[str, Any]:
        return {
            **Event.fields(self),
            "file_counts": self.file_counts.as_dict(),
            "stalled_seconds": round(self.stalled_seconds, 1),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StuckFilesListed(Event):
    """The files still in progress, read when the batch stalled or its deadline passed."""

    name: ClassVar[str] = "stuck_files_listed"
    level: ClassVar[str] = "warning"
    stuck_files: tuple[StuckFile, ...]

    def fields(self) -> dict[str, Any]:
        return {**Event.fields(self), "stuck_files": [f.as_dict() for f in self.stuck_files]}


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResumed(Event):
    name: ClassVar[str] = "batch_resumed"
    file_counts: FileCounts

    def fields(self) -> dict[str, Any]:
        return {**Event.fields(self), "file_counts": self.file_counts.as_dict()}


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusUnknown(Event):
    """The API sent a status we do not know; it is kept, and not taken as terminal."""

    name: ClassVar[str] = "status_unknown"
    level: ClassVar[str] = "warning"
    status: str

    def fields(self) -> dict[str, Any]:
        return {**Event.fields(self), "status": self.status}


@dataclass(frozen=True, slots=True, kw_only=True)
class PollFailed(Event):
    name: ClassVar[str] = "poll_failed"
    level: ClassVar[str] = "warning"
    error: str  # the error class: Transient, RateLimited, ProtocolError, ...
    message: str
    http_status: int | None
    request_id: str | None
    retry_in: float

    def fields(self) -> dict[str, Any]:
        return {
            **Event.fields(self),
            "error": self.error,
            "message": self.message,
            "http_status": self.http_status,
            "request_id": self.request_id,
            "retry_in": round(self.retry_in, 3),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthFailed(Event):
    """The API refused our credentials; polling with them stops until they work again."""

    name: ClassVar[str] = "auth_failed"
    level: ClassVar[str] = "error"
    message: str
    http_status: int | None
    request_id: str | None

    def fields(self) -> dict[str, Any]:
        return {
            **Event.fields(self),
            "message": self.message,
            "http_status": self.http_status,
            "request_id": self.request_id,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRecovered(Event):
    name: ClassVar[str] = "auth_recovered"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileFailedEvent(Event):
    name: ClassVar[str] = "file_failed"
    level: ClassVar[str] = "warning"
    file: FailedFile

    def fields(self) -> dict[str, Any]:
        error = self.file.last_error
        return {
            **Event.fields(self),
            "file_id": self.file.id,
            "code": error.code if error else "unknown",
            "message": error.message if error else "",
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchCancelRequested(Event):
    name: ClassVar[str] = "batch_cancel_requested"
    level: ClassVar[str] = "warning"
    ok: bool
    message: str = ""

    def fields(self) -> dict[str, Any]:
        return {**Event.fields(self), "ok": self.ok, "message": self.message}


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchRetried(Event):
    """The daemon sent the batch's failed files again, as ``retried_as``."""

    name: ClassVar[str] = "batch_retried"
    retried_as: tuple[str, ...]
    attempt: int
    #: Files sent again, by the ``last_error.code`` they failed with.
    files_by_code: Mapping[str, int]

    def fields(self) -> dict[str, Any]:
        return {
            **Event.fields(self),
            "retried_as": list(self.retried_as),
            "attempt": self.attempt,
            "files_by_code": dict(self.files_by_code),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchFinished(Event):
    """One per watch, when it ends; ``name`` says how: ``batch_<state>`` (``batch_completed``,
    ``batch_failed``, ``batch_timed_out``, ...)."""

    name: ClassVar[str] = "batch_finished"
    result: BatchResult

    @property
    def event_name(self) -> str:
        return f"batch_{self.result.status.value}"

    def fields(self) -> dict[str, Any]:
        data = self.result.as_dict()
        del data["failed_files"]  # one file_failed event each already says them
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreProgressed(Event):
    """A watched vector store's status or file counts moved (``batch_id`` is empty)."""

    name: ClassVar[str] = "store_progressed"
    level: ClassVar[str] = "debug"
    status: str
    file_counts: FileCounts

    def fields(self) -> dict[str, Any]:
        return {
            **Event.fields(self),
            "status": self.status,
            "file_counts": self.file_counts.as_dict(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreFinished(Event):
    """One per store watch, when it ends: ``store_<state>`` (``store_completed`` once no file
    is in progress, for ``watch``; ``store_expired``, ``store_not_found``, ...)."""

    name: ClassVar[str] = "store_finished"
    result: BatchResult

    @property
    def event_name(self) -> str:
        return f"store_{self.result.status.value}"

    def fields(self) -> dict[str, Any]:
        data = self.result.as_dict()
        del data["failed_files"]
        return data


Sink = Callable[[Event], None]


def event_name(event: Event) -> str:
    if isinstance(event, BatchFinished | StoreFinished):
        return event.event_name
    return event.name
