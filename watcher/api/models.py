"""What the API's objects look like, and how we read them.

Parsing is tolerant where the API is known to be inconsistent (both ``object`` spellings, missing
``file_counts`` keys, statuses and error codes we have never seen) and strict where a wrong value
would mislead us (a batch with no ``id`` or ``status``, a count that is not a count). Every failure
is a :class:`~watcher.errors.ProtocolError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..errors import ProtocolError

IN_PROGRESS: Final = "in_progress"
COMPLETED: Final = "completed"
CANCELLED: Final = "cancelled"
FAILED: Final = "failed"

#: Statuses after which a batch never changes again.
TERMINAL_STATUSES: Final = frozenset({COMPLETED, CANCELLED, FAILED})
#: Statuses the API documents; anything else is kept as it came, and is not terminal.
KNOWN_STATUSES: Final = frozenset({IN_PROGRESS, *TERMINAL_STATUSES})
#: File statuses, in the order ``file_counts`` lists them.
FILE_STATUSES: Final = (IN_PROGRESS, COMPLETED, FAILED, CANCELLED)
#: The ``last_error.code`` values the API documents; others are kept as they came.
ERROR_CODES: Final = ("server_error", "unsupported_file", "invalid_file")

#: The known batch statuses, each kept once: a watch holds its batch's status from reply to reply.
_STATUSES: Final[Mapping[str, str]] = {
    s: s for s in ("in_progress", "completed", "cancelled", "failed")
}
_MAX_TOKEN = 128  # ids, statuses and codes longer than this are not ids, statuses or codes
_MAX_MESSAGE = 2000  # a longer error message is cut, not refused


@dataclass(frozen=True, slots=True)
class FileCounts:
    """``file_counts`` exactly as the server said it; the parts need not add up to ``total``."""

    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0

    @property
    def finished(self) -> int:
        """Files that are no longer in progress."""
        return self.completed + self.failed + self.cancelled

    @property
    def expected(self) -> int:
        """The best count of files in the batch: ``total``, or the sum of the parts if larger."""
        return max(self.total, self.in_progress + self.finished)

    def as_dict(self) -> dict[str, int]:
        return {
            "in_progress": self.in_progress,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "total": self.total,
        }


@dataclass(frozen=True, slots=True)
class FileBatch:
    """A vector-store file batch."""

    id: str
    vector_store_id: str
    status: str
    file_counts: FileCounts
    created_at: int | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class LastError:
    """Why a file failed. ``code`` is kept as the server sent it, known or not."""

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class BatchFile:
    """A file in a batch, as the list endpoint returns it."""

    id: str
    status: str
    last_error: LastError | None = None
    created_at: int | None = None


@dataclass(frozen=True, slots=True)
class FilePage:
    """One page of ``GET .../files``."""

    data: tuple[BatchFile, ...]
    has_more: bool


def one_line(text: str, limit: int) -> str:
    """Server text made safe to print, log and encode as UTF-8: whitespace runs become one
    space; control characters, lone surrogates and anything else unprintable become U+FFFD;
    cut at ``limit`` characters."""
    squeezed = " ".join(text[: limit * 2].split())
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in squeezed)[:limit]


def _token(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{where}: {key!r} is missing or not a non-empty string")
    if len(value) > _MAX_TOKEN or not value.isprintable():
        raise ProtocolError(f"{where}: {key!r} is not a plausible identifier")
    return value


def _count(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"file_counts.{key} is not a number")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ProtocolError(f"file_counts.{key} is not a whole number")
        value = int(value)
    if value < 0 or value > 2**53:
        raise ProtocolError(f"file_counts.{key} is out of range")
    return value


def _timestamp(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not 0 <= value < 2**42:
        return None
    return int(value)


def parse_file_counts(obj: object) -> FileCounts:
    """Read ``file_counts``; missing keys count as 0."""
    if obj is None:
        return FileCounts()
    if not isinstance(obj, dict):
        raise ProtocolError("file_counts is not an object")
    return FileCounts(
        in_progress=_count(obj, "in_progress"),
        completed=_count(obj, "completed"),
        failed=_count(obj, "failed"),
        cancelled=_count(obj, "cancelled"),
        total=_count(obj, "total"),
    )


def parse_file_batch(obj: object, *, vector_store_id: str | None = None) -> FileBatch:
    """Read a batch. ``vector_store_id`` fills the field when the server leaves it out."""
    if not isinstance(obj, dict):
        raise ProtocolError("file batch: the reply is not a JSON object")
    batch_id = _token(obj, "id", "file batch")
    status = _token(obj, "status", "file batch")
    status = _STATUSES.get(status, status)  # one string per known status, not one per reply
    vs_id = obj.get("vector_store_id")
    if not isinstance(vs_id, str) or not vs_id:
        if vector_store_id is None:
            raise ProtocolError("file batch: 'vector_store_id' is missing")
        vs_id = vector_store_id
    return FileBatch(
        id=batch_id,
        vector_store_id=vs_id,
        status=status,
        file_counts=parse_file_counts(obj.get("file_counts")),
        created_at=_timestamp(obj, "created_at"),
    )


def parse_last_error(obj: object) -> LastError | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ProtocolError("file: 'last_error' is not an object")
    code = obj.get("code")
    message = obj.get("message")
    code_s = code if isinstance(code, str) and code else "unknown"
    if len(code_s) > _MAX_TOKEN or not code_s.isprintable():
        code_s = "unknown"
    message_s = one_line(message, _MAX_MESSAGE) if isinstance(message, str) else ""
    return LastError(code=code_s, message=message_s)


def parse_batch_file(obj: object) -> BatchFile:
    if not isinstance(obj, dict):
        raise ProtocolError("file: an item of 'data' is not a JSON object")
    status = obj.get("status")
    return BatchFile(
        id=_token(obj, "id", "file"),
        status=status if isinstance(status, str) and len(status) <= _MAX_TOKEN else "unknown",
        last_error=parse_last_error(obj.get("last_error")),
        created_at=_timestamp(obj, "created_at"),
    )


def parse_file_page(obj: object) -> FilePage:
    """Read one page of a file list. ``first_id``/``last_id`` are ignored: the cursor is the
    last item's ``id``, because some servers fill those fields with ids not in ``data``."""
    if not isinstance(obj, dict):
        raise ProtocolError("file list: the reply is not a JSON object")
    data = obj.get("data")
    if not isinstance(data, list):
        raise ProtocolError("file list: 'data' is missing or not a list")
    has_more = obj.get("has_more", False)
    if not isinstance(has_more, bool):
        raise ProtocolError("file list: 'has_more' is not a boolean")
    return FilePage(data=tuple(parse_batch_file(item) for item in data), has_more=has_more)


@dataclass(frozen=True, slots=True)
class FileObject:
    """A file of the Files API (``GET /files/{id}``): what a person knows it by."""

    id: str
    filename: str
    bytes: int | None = None


@dataclass(frozen=True, slots=True)
class StoreFile:
    """A file as its vector store holds it (``GET /vector_stores/{vs}/files/{id}``): what a
    retry must send again with it."""

    id: str
    status: str
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


def parse_file_object(obj: object) -> FileObject:
    if not isinstance(obj, dict):
        raise ProtocolError("file: the reply is not a JSON object")
    name = obj.get("filename")
    if not isinstance(name, str):
        raise ProtocolError("file: 'filename' is missing or not a string")
    size = obj.get("bytes")
    valid_size = isinstance(size, int) and not isinstance(size, bool) and 0 <= size < 2**53
    return FileObject(
        id=_token(obj, "id", "file"),
        filename=one_line(name, 255),
        bytes=size if valid_size else None,
    )


def parse_store_file(obj: object) -> StoreFile:
    if not isinstance(obj, dict):
        raise ProtocolError("vector store file: the reply is not a JSON object")
    status = obj.get("status")
    attributes = obj.get("attributes")
    chunking = obj.get("chunking_strategy")
    return StoreFile(
        id=_token(obj, "id", "vector store file"),
        status=status if isinstance(status, str) and len(status) <= _MAX_TOKEN else "unknown",
        attributes=attributes if isinstance(attributes, dict) else None,
        chunking_strategy=chunking if isinstance(chunking, dict) else None,
    )
