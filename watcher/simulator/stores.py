"""The simulated vector stores: a store is its spec plus the batches that name it.

Nothing is stored per store but its spec: its ``file_counts`` are the sums over its batches'
progress, its files every file of those batches, its status ``expired`` once it is expired (by
the spec, a control request, or its ``expires_at`` passing), else ``in_progress`` while any of its
files is, else ``completed``. Pure functions of the batches and the time, like the batches'
(:mod:`.scenario`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..api.models import COMPLETED, IN_PROGRESS, FileCounts
from .files import Order, file_id, file_json, usage_bytes
from .scenario import BatchSpec, Progress, file_status

EXPIRED: Final = "expired"
_DAY: Final = 86400


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """A vector store's own facts; batches that name a store no spec describes get the default
    one (no name, never expires)."""

    vector_store_id: str
    name: str | None = None
    #: Unix seconds; None: the moment it is added (or its first batch's ``created_at``).
    created_at: int | None = None
    #: ``expires_after: {"anchor": "last_active_at", "days": n}``; None: never expires.
    expires_after_days: int | None = None
    expired: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.vector_store_id, str) or not self.vector_store_id:
            problems.append("vector_store_id: must be a non-empty string")
        name: object = self.name  # a JSON caller may pass anything
        if name is not None and not isinstance(name, str):
            problems.append(f"name: {name!r} is not a string")
        days = self.expires_after_days
        if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days < 1):
            problems.append(f"expires_after_days: {days!r} is not an integer >= 1")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class StoreBatch:
    """One batch of a store at one moment: what the store's views are computed from."""

    spec: BatchSpec
    progress: Progress
    created_at: int


def store_json(
    spec: StoreSpec, batches: Sequence[StoreBatch], *, created_at: int, wall: float
) -> dict[str, Any]:
    """A ``vector_store`` object, as ``GET /vector_stores/{id}`` answers."""
    counts = FileCounts()
    usage = 0
    for batch in batches:
        c = batch.progress.file_counts
        counts = FileCounts(
            in_progress=counts.in_progress + c.in_progress,
            completed=counts.completed + c.completed,
            failed=counts.failed + c.failed,
            cancelled=counts.cancelled + c.cancelled,
            total=counts.total + c.total,
        )
        usage += sum(
            usage_bytes(i)
            for i in range(batch.progress.processed)
            if file_status(batch.spec, batch.progress, i) == COMPLETED
        )
    last_active = max([created_at, *(b.created_at for b in batches)])
    days = spec.expires_after_days
    expires_at = last_active + days * _DAY if days is not None else None
    expired = spec.expired or (expires_at is not None and wall >= expires_at)
    if expired:
        status = EXPIRED
    elif counts.in_progress:
        status = IN_PROGRESS
    else:
        status = COMPLETED
    return {
        "id": spec.vector_store_id,
        "object": "vector_store",
        "created_at": created_at,
        "name": spec.name,
        "usage_bytes": usage,
        "file_counts": counts.as_dict(),
        "status": status,
        "expires_after": None if days is None else {"anchor": "last_active_at", "days": days},
        "expires_at": expires_at,
        "last_active_at": last_active,
        "metadata": {},
    }


def store_files(
    batches: Sequence[StoreBatch], *, order: Order, status: str | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every file of the store's batches as ``(id, vector_store.file)``: batches in the order
    they were added, files by index; ``desc`` the other way round. ``status`` filters."""
    ordered = batches if order == "asc" else list(reversed(batches))
    for batch in ordered:
        total = batch.spec.total_files
        indices = range(total) if order == "asc" else range(total - 1, -1, -1)
        for i in indices:
            file_status_now = file_status(batch.spec, batch.progress, i)
            if status is not None and file_status_now != status:
                continue
            yield (
                file_id(batch.spec.batch_id, i),
                file_json(batch.spec, batch.progress, i, batch.created_at, file_status_now),
            )


def page_after(
    items: Iterator[tuple[str, dict[str, Any]]], *, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The ``limit`` items after the one whose id is ``after`` (from the start if None), and
    whether more follow. An ``after`` that is not among the items gives an empty page."""
    if after is not None:
        for item_id, _ in items:
            if item_id == after:
                break
    page: list[dict[str, Any]] = []
    for _, obj in items:
        if len(page) == limit:
            return page, True
        page.append(obj)
    return page, False
