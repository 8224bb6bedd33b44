"""Sending a batch's failed files again, as a new batch of the same vector store.

The rules are plain functions: which failed files to send (optionally only some error codes),
how to split them (at most :data:`MAX_FILES_PER_BATCH` a request), and the ``Idempotency-Key``
of each request, derived from what it retries so that sending it again can never make a second
batch. The I/O is :func:`create_retry_batch`: read each file's attributes and chunking strategy
from its store, create the batch, and when the API refuses a file still attached to the store,
detach the files and send the same request (same key) again.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from ..api.client import APIClient
from ..api.models import FAILED, BatchFile, FileBatch
from ..config.model import RetryConfig
from ..errors import AlreadyAttached, NotFound
from .results import BatchResult

#: The most files ``POST /vector_stores/{vs}/file_batches`` takes at once.
MAX_FILES_PER_BATCH: Final = 2000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A watch's automatic retry: its failed files of ``codes`` go out again as a new batch,
    at most ``max_attempts`` times along one chain of retries."""

    codes: tuple[str, ...] = ("server_error",)
    max_attempts: int = 2

    def as_dict(self) -> dict[str, Any]:
        return {"codes": list(self.codes), "max_attempts": self.max_attempts}

    @classmethod
    def from_dict(cls, data: Any) -> RetryPolicy:
        return cls(tuple(data["codes"]), int(data["max_attempts"]))


def retry_policy(config: RetryConfig | None) -> RetryPolicy | None:
    """The policy a ``[[watch]]``'s (or the control API's) ``retry`` table asks for."""
    if config is None:
        return None
    return RetryPolicy(tuple(config.codes), config.max_attempts)


@dataclass(frozen=True, slots=True)
class RetryFile:
    """One file to send again, with what its store held for it."""

    file_id: str
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None
    #: Whether the store still holds the file (then the API may want it detached first), and
    #: the file's status there.
    attached: bool = True
    status: str = FAILED

    def as_request(self) -> dict[str, Any]:
        item: dict[str, Any] = {"file_id": self.file_id}
        if self.attributes is not None:
            item["attributes"] = self.attributes
        if self.chunking_strategy is not None:
            item["chunking_strategy"] = self.chunking_strategy
        return item


def wanted(file: BatchFile, codes: Collection[str]) -> bool:
    """A failed file to retry: every failed one, or only those whose code is in ``codes``."""
    if file.status != FAILED:
        return False
    code = file.last_error.code if file.last_error else "unknown"
    return not codes or code in codes


def split(items: Sequence[T], size: int = MAX_FILES_PER_BATCH) -> list[Sequence[T]]:
    """``items`` in requests of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def idempotency_key(vector_store_id: str, batch_id: str, attempt: str, part: int) -> str:
    """The key of one retry request: the same (store, batch, attempt, part), the same key."""
    digest = hashlib.sha256(f"{vector_store_id}\0{batch_id}\0{attempt}\0{part}".encode())
    return f"batch-watcher-retry-{digest.hexdigest()[:40]}"


def kept_failed_files(result: BatchResult, codes: Collection[str]) -> list[BatchFile] | None:
    """The failed files to send again as the ended watch's listing kept them, when it kept
    every one (None: read the list again)."""
    if not result.failed_files_complete or result.failed_files_truncated:
        return None
    kept = (BatchFile(f.id, FAILED, f.last_error) for f in result.failed_files)
    return [f for f in kept if wanted(f, codes)]


async def failed_files(
    client: APIClient,
    vector_store_id: str,
    batch_id: str,
    *,
    codes: Collection[str] = (),
    max_pages: int = 1000,
) -> list[BatchFile]:
    """Every failed file of the batch (of those codes), once each, in the API's order."""
    seen: dict[str, BatchFile] = {}
    async for item in client.iter_batch_files(
        vector_store_id, batch_id, status=FAILED, max_pages=max_pages
    ):
        if wanted(item, codes):
            seen.setdefault(item.id, item)
    return list(seen.values())


async def failed_file_ids(
    client: APIClient,
    vector_store_id: str,
    batch_id: str,
    *,
    codes: Collection[str] = (),
    max_pages: int = 1000,
) -> list[str]:
    """The ids of :func:`failed_files`."""
    found = await failed_files(client, vector_store_id, batch_id, codes=codes, max_pages=max_pages)
    return [f.id for f in found]


async def read_files(
    client: APIClient, vector_store_id: str, file_ids: Iterable[str]
) -> AsyncIterator[RetryFile]:
    """Each file as its store holds it; a file the store no longer has is sent bare."""
    for fid in file_ids:
        try:
            held = await client.retrieve_store_file(vector_store_id, fid)
        except NotFound:
            yield RetryFile(fid, attached=False)
            continue
        yield RetryFile(fid, held.attributes, held.chunking_strategy, status=held.status)


def unsent(files: Iterable[RetryFile]) -> bool:
    """Whether the store shows that no batch took these files since they failed: each one is
    detached, or still attached with its status ``failed``. A batch made of them would have
    attached them again, in progress or done."""
    return all(not f.attached or f.status == FAILED for f in files)


async def create_retry_batch(
    client: APIClient,
    vector_store_id: str,
    files: Sequence[RetryFile],
    *,
    key: str,
    detach: bool = True,
) -> FileBatch:
    """Create the batch; if the API refuses a file still attached to the store, detach the
    attached files and send the very same request again (the same key: at most one batch).
    ``detach`` False: a request with this key may have been sent before (and made the batch),
    so a refusal is raised, not answered by detaching the files and sending again."""
    body = [f.as_request() for f in files]
    try:
        return await client.create_batch(vector_store_id, body, idempotency_key=key)
    except AlreadyAttached:
        if not detach:
            raise
        for f in files:
            if f.attached:
                # NotFound: detached already (by an earlier try, or by someone else).
                with contextlib.suppress(NotFound):
                    await client.detach_file(vector_store_id, f.file_id)
        return await client.create_batch(vector_store_id, body, idempotency_key=key)
