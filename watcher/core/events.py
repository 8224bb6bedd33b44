"""What the engine tells the world: typed, immutable events.

Each event has a past-tense ``name`` and a flat ``fields()`` mapping for structured logs. The
engine hands every event to its sinks (the logger, the command's output, the daemon's metrics and
notifier); sinks must be quick and must not raise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..api.models import FileCounts, LastError, parse_file_counts


@dataclass(frozen=True, slots=True)
class FailedFile:
    id: str
    last_error: LastError | None

    def as_dict(self) -> dict[str, Any]:
        error = self.last_error or LastError(code="unknown", message="")
        return {"id": self.id, "last_error": error.as_dict()}


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


@dataclass(frozen=True, slots=True)
class BatchResult:
    """How a watch ended: the summary that logs, ``--output json`` and webhooks share."""

    vector_store_id: str
    batch_id: str
    status: str  # the API's terminal status, or timed_out / not_found
    file_counts: FileCounts | None
    failed_files: tuple[FailedFile, ...]
    failed_by_code: Mapping[str, int]
    failed_files_listed: int  # failed files seen in the list (the kept ones may be fewer)
    failed_files_truncated: bool
    failed_files_complete: bool  # False when the list could not be read to its end
    elapsed_seconds: float  # from first sight to the end
    finished_at: float  # wall-clock time of the end
    labels: Mapping[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def clean(self) -> bool:
        failed = self.file_counts.failed if self.file_counts else 0
        return self.status == "completed" and failed == 0 and not self.failed_files_listed

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchResult:
        """The inverse of :meth:`as_dict` (for the state store)."""
        counts = data.get("file_counts")
        return cls(
            vector_store_id=data["vector_store_id"],
            batch_id=data["batch_id"],
            status=data["status"],
            file_counts=parse_file_counts(counts) if counts is not None else None,
            failed_files=tuple(
                FailedFile(f["id"], LastError(**f["last_error"])) for f in data["failed_files"]
            ),
            failed_by_code=dict(data.get("failed_files_by_code", {})),
            failed_files_listed=int(data.get("failed_files_listed", 0)),
            failed_files_truncated=bool(data.get("failed_files_truncated", False)),
            failed_files_complete=bool(data.get("failed_files_complete", True)),
            elapsed_seconds=float(data.get("elapsed_seconds", 0.0)),
            finished_at=float(data.get("finished_at", 0.0)),
            labels=dict(data.get("labels", {})),
            note=str(data.get("note", "")),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "vector_store_id": self.vector_store_id,
            "batch_id": self.batch_id,
            "status": self.status,
            "file_counts": self.file_counts.as_dict() if self.file_counts else None,
            "failed_files": [f.as_dict() for f in self.failed_files],
            "failed_files_by_code": dict(self.failed_by_code),
            "failed_files_listed": self.failed_files_listed,
            "failed_files_truncated": self.failed_files_truncated,
            "failed_files_complete": self.failed_files_complete,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "finished_at": round(self.finished_at, 3),
            "labels": dict(self.labels),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchFinished(Event):
    """One per watch, when it ends; ``name`` says how (``batch_completed``, ``batch_failed``,
    ``batch_cancelled``, ``batch_timed_out``, ``batch_not_found``, or ``batch_<status>``)."""

    name: ClassVar[str] = "batch_finished"
    result: BatchResult

    @property
    def event_name(self) -> str:
        return f"batch_{self.result.status}"

    def fields(self) -> dict[str, Any]:
        data = self.result.as_dict()
        del data["failed_files"]  # one file_failed event each already says them
        return data


Sink = Callable[[Event], None]


def event_name(event: Event) -> str:
    return event.event_name if isinstance(event, BatchFinished) else event.name
