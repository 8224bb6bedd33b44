"""Reading a finished batch's failed files: every page of ``?filter=failed``, bounded.

Only a file whose own ``status`` is ``failed`` counts: some servers ignore the filter and list
every file. A gap between the batch's ``file_counts.failed`` and the files listed is reported
(``complete`` false, with a note), never hidden.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..api.client import APIClient
from ..api.models import FAILED
from ..errors import NotFound, PaginationError
from .results import FailedFile

#: Distinct error codes kept per batch; the rest are counted under "other". The API has a
#: handful; a server that invents one per file must not invent as many metric series.
MAX_ERROR_CODES = 20


@dataclass(frozen=True, slots=True)
class FailedFileListing:
    """What the list said: the kept files, the count by code, and whether it is whole."""

    kept: tuple[FailedFile, ...] = ()
    by_code: Mapping[str, int] = field(default_factory=dict)
    listed: int = 0  # failed files seen (the kept ones may be fewer)
    complete: bool = True
    note: str = ""


#: The listing of a batch that has no failed file to list.
NOTHING_LISTED = FailedFileListing()


async def list_failed_files(
    client: APIClient,
    vector_store_id: str,
    batch_id: str,
    *,
    expected: int | None,
    keep: int,
    max_pages: int,
) -> FailedFileListing:
    """Read every page of the batch's failed files; keep the first ``keep``. An empty
    ``batch_id`` reads the whole vector store's (a store's watch).

    ``expected`` is the batch's final ``file_counts.failed`` (None while it may still move: a
    gap is then no fault). A list that cannot be read to its end
    (pagination that would never end, a batch gone meanwhile) gives what was read, marked
    incomplete; other API errors are raised for the caller to retry.
    """
    kept: list[FailedFile] = []
    by_code: Counter[str] = Counter()
    seen: set[str] = set()
    others = 0
    notes: list[str] = []
    complete = True
    try:
        files = (
            client.iter_batch_files(vector_store_id, batch_id, status=FAILED, max_pages=max_pages)
            if batch_id
            else client.iter_store_files(vector_store_id, status=FAILED, max_pages=max_pages)
        )
        async for item in files:
            if item.id in seen:
                continue
            seen.add(item.id)
            if item.status != FAILED:
                others += 1
                continue
            by_code[item.last_error.code if item.last_error else "unknown"] += 1
            if len(kept) < keep:
                kept.append(FailedFile(item.id, item.last_error))
    except (PaginationError, NotFound) as exc:
        complete = False
        notes.append(f"the failed-file list is incomplete: {exc}")
    listed = sum(by_code.values())
    if others:
        notes.append(
            f"the server listed {others} files that had not failed when asked for the failed "
            "ones; they are left out"
        )
    if complete and expected is not None and listed != expected:
        complete = False
        notes.append(f"the batch counts {expected} failed files but the list gave {listed}")
    return FailedFileListing(
        kept=tuple(kept),
        by_code=bounded_codes(by_code),
        listed=listed,
        complete=complete,
        note="; ".join(notes),
    )


def bounded_codes(by_code: Counter[str]) -> dict[str, int]:
    """At most :data:`MAX_ERROR_CODES` codes: the most common, and the rest as ``other``."""
    if len(by_code) <= MAX_ERROR_CODES:
        return dict(by_code)
    kept = dict(by_code.most_common(MAX_ERROR_CODES - 1))
    kept["other"] = kept.get("other", 0) + sum(by_code.values()) - sum(kept.values())
    return kept
