"""The files of a simulated batch, computed on demand, and the list endpoint's pagination.

Nothing is stored per file: a file is its batch's spec plus its index. Ids are
``file-<batch_id>-<index, 6 digits>``, so ordering by id is ordering by index; every file of a
batch shares the batch's ``created_at``, so the API's order (``created_at``, then ``id``) is the
index order too.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..api.models import COMPLETED, FAILED, FILE_STATUSES
from .scenario import BatchSpec, Progress, failed_file_index, file_error, file_status

Order = Literal["asc", "desc"]

#: A file id the simulator made for a batch it was given: ``file-<batch_id>-<index>``.
GENERATED_FILE: Final = re.compile(r"file-(?P<batch>.+)-(?P<index>\d{6})")
_EXTENSIONS: Final = (".pdf", ".md", ".docx", ".txt", ".html")
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100
_CHUNKING: Final = {
    "type": "static",
    "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
}


def file_id(batch_id: str, index: int) -> str:
    return f"file-{batch_id}-{index:06d}"


def file_index(batch_id: str, total: int, candidate: str) -> int | None:
    """The index a file id stands for in this batch, or None if it is not one of its files."""
    prefix = f"file-{batch_id}-"
    digits = candidate[len(prefix) :]
    if not candidate.startswith(prefix) or len(digits) != 6 or not digits.isdigit():
        return None
    index = int(digits)
    return index if index < total else None


def file_object(fid: str, created_at: int) -> dict[str, Any]:
    """A ``file`` object of the Files API; its name and size follow from its id alone."""
    digest = zlib.crc32(fid.encode())
    return {
        "id": fid,
        "object": "file",
        "bytes": 2048 + digest % 4_000_000,
        "created_at": created_at,
        "filename": f"document-{digest % 100_000:05d}{_EXTENSIONS[digest % len(_EXTENSIONS)]}",
        "purpose": "assistants",
    }


def usage_bytes(index: int) -> int:
    return 1024 + (index * 7919) % 65536


def file_json(
    spec: BatchSpec,
    progress: Progress,
    index: int,
    created_at: int,
    status: str | None = None,
    *,
    fid: str | None = None,
    meta: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """A ``vector_store.file`` object. ``fid``: the file's id when the batch was made of
    existing files; ``meta``: the attributes and chunking strategy it was sent with."""
    status = status or file_status(spec, progress, index)
    attributes, chunking = meta if meta is not None else ({}, _CHUNKING)
    return {
        "id": fid or file_id(spec.batch_id, index),
        "object": "vector_store.file",
        "usage_bytes": usage_bytes(index) if status == COMPLETED else 0,
        "created_at": created_at,
        "vector_store_id": spec.vector_store_id,
        "status": status,
        "last_error": file_error(spec, index).as_dict() if status == FAILED else None,
        "chunking_strategy": chunking or _CHUNKING,
        "attributes": attributes or {},
    }


def failed_indices(spec: BatchSpec, progress: Progress) -> Iterator[int]:
    """Indices of the files that have failed so far, ascending, in O(failed)."""
    for ordinal in range(progress.failed):
        yield failed_file_index(spec, ordinal)


@dataclass(frozen=True, slots=True)
class PageQuery:
    """A validated list request."""

    limit: int = DEFAULT_LIMIT
    order: Order = "desc"
    after: int | None = None
    before: int | None = None
    status: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit: {self.limit} is not in 1..{MAX_LIMIT}")
        if self.status is not None and self.status not in FILE_STATUSES:
            raise ValueError(f"filter: {self.status!r} is not one of {FILE_STATUSES}")


def page_indices(spec: BatchSpec, progress: Progress, query: PageQuery) -> tuple[list[int], bool]:
    """The file indices of one page, in the requested order, and whether more follow.

    ``after`` starts the page right after that file; ``before`` alone gives the ``limit`` files
    right before that one (still in the requested order); ``has_more`` says whether more files
    lie beyond the page in the direction of travel.
    """
    backwards = query.before is not None and query.after is None
    candidates = _ordered(spec.total_files, query, reverse=backwards)
    if query.status is not None:
        wanted = query.status
        candidates = (i for i in candidates if file_status(spec, progress, i) == wanted)
    taken = _take(candidates, query.limit + 1)
    page = taken[: query.limit]
    return (page[::-1] if backwards else page), len(taken) > query.limit


def _ordered(total: int, query: PageQuery, *, reverse: bool = False) -> Iterator[int]:
    """Indices strictly between the cursors, in the query's order (or against it)."""
    if query.order == "asc":
        lo = query.after + 1 if query.after is not None else 0
        hi = query.before if query.before is not None else total
    else:
        lo = query.before + 1 if query.before is not None else 0
        hi = query.after if query.after is not None else total
    span = range(lo, hi)
    ascending = (query.order == "asc") != reverse
    return iter(span if ascending else reversed(span))


def _take(indices: Iterator[int], n: int) -> list[int]:
    taken = []
    for index in indices:
        taken.append(index)
        if len(taken) == n:
            break
    return taken
