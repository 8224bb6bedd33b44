"""What a vector store looks like (``GET /vector_stores/{id}``, ``GET /vector_stores``), and how
we read it: as tolerant as :mod:`.models` is of batches, and as strict where a wrong value would
mislead. The store's ``name`` is server text: kept as one printable line, bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ..errors import ProtocolError
from .models import COMPLETED, IN_PROGRESS, FileCounts, one_line, parse_file_counts
from .models import _timestamp as timestamp_of  # the same rules as a batch's fields
from .models import _token as token_of

EXPIRED: Final = "expired"
#: A store's statuses, as the API documents them; others are kept as they come.
STORE_STATUSES: Final = (EXPIRED, IN_PROGRESS, COMPLETED)
#: The longest store name kept; the API allows 256 characters.
MAX_NAME: Final = 256


@dataclass(frozen=True, slots=True)
class VectorStore:
    """A vector store as the API showed it. Times are Unix seconds."""

    id: str
    status: str
    file_counts: FileCounts
    name: str | None = None
    usage_bytes: int | None = None
    created_at: int | None = None
    expires_at: int | None = None
    last_active_at: int | None = None
    #: ``expires_after.days`` (anchored at ``last_active_at``); None: it never expires.
    expires_after_days: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "name": self.name,
            "file_counts": self.file_counts.as_dict(),
            "usage_bytes": self.usage_bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_active_at": self.last_active_at,
            "expires_after_days": self.expires_after_days,
        }


@dataclass(frozen=True, slots=True)
class StorePage:
    """One page of ``GET /vector_stores``."""

    data: tuple[VectorStore, ...]
    has_more: bool


def parse_vector_store(obj: object) -> VectorStore:
    if not isinstance(obj, dict):
        raise ProtocolError("vector store: the reply is not a JSON object")
    name = obj.get("name")
    usage = obj.get("usage_bytes")
    return VectorStore(
        id=token_of(obj, "id", "vector store"),
        status=token_of(obj, "status", "vector store"),
        file_counts=parse_file_counts(obj.get("file_counts")),
        name=one_line(name, MAX_NAME) if isinstance(name, str) else None,
        usage_bytes=_size(usage),
        created_at=timestamp_of(obj, "created_at"),
        expires_at=timestamp_of(obj, "expires_at"),
        last_active_at=timestamp_of(obj, "last_active_at"),
        expires_after_days=_days(obj.get("expires_after")),
    )


def parse_store_page(obj: object) -> StorePage:
    """Read one page of the store list; the cursor is the last item's ``id``."""
    if not isinstance(obj, dict):
        raise ProtocolError("vector store list: the reply is not a JSON object")
    data = obj.get("data")
    if not isinstance(data, list):
        raise ProtocolError("vector store list: 'data' is missing or not a list")
    has_more = obj.get("has_more", False)
    if not isinstance(has_more, bool):
        raise ProtocolError("vector store list: 'has_more' is not a boolean")
    return StorePage(data=tuple(parse_vector_store(item) for item in data), has_more=has_more)


def _size(value: object) -> int | None:
    """A byte count, or None for anything that is not one (a store is never refused for it)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        return None
    return value


def _days(obj: object) -> int | None:
    if not isinstance(obj, dict):
        return None
    days = obj.get("days")
    if isinstance(days, bool) or not isinstance(days, int) or not 0 < days < 100_000:
        return None
    return days
