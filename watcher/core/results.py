"""How a watch ended, as logs, ``--output json``, the state store and webhooks tell it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api.models import FileCounts, LastError, parse_file_counts
from .states import State


@dataclass(frozen=True, slots=True)
class FileName:
    """What ``GET /files/{id}`` told of a file: its name and size, or why it could not."""

    filename: str | None = None
    bytes: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"filename": self.filename, "bytes": self.bytes}
        if self.error is not None:
            data["filename_error"] = self.error
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileName:
        return cls(data.get("filename"), data.get("bytes"), data.get("filename_error"))


#: A file not (yet) looked up.
UNNAMED = FileName()


@dataclass(frozen=True, slots=True)
class FailedFile:
    id: str
    last_error: LastError | None
    name: FileName = UNNAMED

    def as_dict(self) -> dict[str, Any]:
        error = self.last_error or LastError(code="unknown", message="")
        return {"id": self.id, **self.name.as_dict(), "last_error": error.as_dict()}


@dataclass(frozen=True, slots=True)
class StuckFile:
    """A file still in progress when its batch was flagged stalled or its deadline passed."""

    id: str
    name: FileName
    #: How long the batch had made no progress when the file was listed.
    stalled_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.name.as_dict(),
            "stalled_seconds": round(self.stalled_seconds, 1),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StuckFile:
        return cls(data["id"], FileName.from_dict(data), float(data.get("stalled_seconds", 0.0)))


@dataclass(frozen=True, slots=True)
class BatchResult:
    """How a watch ended: the summary that logs, ``--output json`` and webhooks share."""

    vector_store_id: str
    batch_id: str
    status: State  # how the watch ended
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
    stuck_files: tuple[StuckFile, ...] = ()
    #: The batch this one retried, and the batches its failed files were sent again as.
    retry_of: str | None = None
    retried_as: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        failed = self.file_counts.failed if self.file_counts else 0
        return self.status is State.COMPLETED and failed == 0 and not self.failed_files_listed

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchResult:
        """The inverse of :meth:`as_dict` (for the state store)."""
        counts = data.get("file_counts")
        return cls(
            vector_store_id=data["vector_store_id"],
            batch_id=data["batch_id"],
            status=State(data["status"]),
            file_counts=parse_file_counts(counts) if counts is not None else None,
            failed_files=tuple(
                FailedFile(f["id"], LastError(**f["last_error"]), FileName.from_dict(f))
                for f in data["failed_files"]
            ),
            failed_by_code=dict(data.get("failed_files_by_code", {})),
            failed_files_listed=int(data.get("failed_files_listed", 0)),
            failed_files_truncated=bool(data.get("failed_files_truncated", False)),
            failed_files_complete=bool(data.get("failed_files_complete", True)),
            elapsed_seconds=float(data.get("elapsed_seconds", 0.0)),
            finished_at=float(data.get("finished_at", 0.0)),
            labels=dict(data.get("labels", {})),
            note=str(data.get("note", "")),
            stuck_files=tuple(StuckFile.from_dict(f) for f in data.get("stuck_files", ())),
            retry_of=data.get("retry_of"),
            retried_as=tuple(data.get("retried_as", ())),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "vector_store_id": self.vector_store_id,
            "batch_id": self.batch_id,
            "status": self.status.value,
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
            "stuck_files": [f.as_dict() for f in self.stuck_files],
            "retry_of": self.retry_of,
            "retried_as": list(self.retried_as),
        }
