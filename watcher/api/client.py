"""The API boundary: one async client over one ``httpx.AsyncClient``.

Everything above this module speaks in :mod:`watcher.api.models` and :mod:`watcher.errors`. Errors
are translated once, at the call, by :mod:`watcher.api.replies`; every error carries the HTTP
status and the request id, and never the API key. How to reach the API is
:mod:`watcher.api.settings` (re-exported here).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Generic, Literal, TypeVar
from urllib.parse import quote

import anyio
import httpx

from .. import __version__
from ..config.values import validate_base_url
from ..credentials import SecretSource
from ..errors import APIError, Transient, WrongBatch
from .budget import RequestBudget
from .headers import ResponseMeta, read_meta
from .models import (
    BatchFile,
    FileBatch,
    FileObject,
    StoreFile,
    parse_file_batch,
    parse_file_object,
    parse_file_page,
    parse_store_file,
)
from .paging import FILE_PAGE_MARGIN, MAX_FILE_PAGES, file_page_limit, list_params, paged
from .replies import (
    decode,
    header_map,
    parse_reply,
    read_capped,
    redact,
    translate_error,
    without_key,
)
from .settings import DEFAULT_BASE_URL, ClientSettings
from .vector_stores import VectorStore, parse_store_page, parse_vector_store

__all__ = [
    "DEFAULT_BASE_URL",
    "FILE_PAGE_MARGIN",
    "MAX_FILE_PAGES",
    "USER_AGENT",
    "APIClient",
    "ClientSettings",
    "Endpoint",
    "Exchange",
    "Reply",
    "file_page_limit",
    "validate_base_url",
]

T = TypeVar("T")

USER_AGENT: Final = f"batch-watcher/{__version__}"

Endpoint = Literal[
    "retrieve",
    "list_files",
    "cancel",
    "retrieve_store",
    "list_stores",
    "list_store_files",
    "file",
    "store_file",
    "detach_file",
    "create_batch",
]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One HTTP exchange, as reported to the client's observer (for metrics and the budget)."""

    endpoint: Endpoint
    status: int | None  # None: no HTTP response (timeout, connection error)
    seconds: float
    meta: ResponseMeta | None


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    """A parsed body together with what its headers said."""

    value: T
    meta: ResponseMeta


class APIClient:
    """The vector-store file-batch API.

    Use as an async context manager, or call :meth:`aclose`. ``observer`` is called once per HTTP
    exchange, success or not; it must be quick and must not raise. Every request waits for its
    turn in ``budget``, when one is given.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        observer: Callable[[Exchange], None] | None = None,
        budget: RequestBudget | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self._budget = budget
        self._base = validate_base_url(settings.base_url)
        self._observer = observer
        self._clock = clock
        self._query = dict(settings.query)
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "OpenAI-Beta": "assistants=v2",
        }
        if settings.organization:
            headers["OpenAI-Organization"] = settings.organization
        if settings.project:
            headers["OpenAI-Project"] = settings.project
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
        )
        #: Where requests go: httpx's own transport unless a test gives another (see _exchange).
        self._transport = transport or httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_seconds),
            transport=self._transport,
            follow_redirects=False,
            trust_env=False,
        )

    async def __aenter__(self) -> APIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the API ---------------------------------------------------------------------------

    async def retrieve_batch(self, vector_store_id: str, batch_id: str) -> FileBatch:
        return (await self.retrieve_batch_reply(vector_store_id, batch_id)).value

    async def retrieve_batch_reply(self, vector_store_id: str, batch_id: str) -> Reply[FileBatch]:
        """The batch together with its response's poll hint and rate-limit headers."""
        path = self._batch_path(vector_store_id, batch_id)
        body, meta = await self._request("GET", path, "retrieve", self._query)
        batch = parse_reply(parse_file_batch, body, meta, vector_store_id=vector_store_id)
        if batch.id != batch_id or batch.vector_store_id != vector_store_id:
            raise WrongBatch(
                f"asked for batch {vector_store_id}/{batch_id}, the reply is for batch "
                f"{batch.vector_store_id}/{batch.id}",
                status=meta.status,
                request_id=meta.request_id,
            )
        return Reply(batch, meta)

    async def cancel_batch(self, vector_store_id: str, batch_id: str) -> FileBatch:
        path = self._batch_path(vector_store_id, batch_id) + "/cancel"
        body, meta = await self._request("POST", path, "cancel", self._query)
        return parse_reply(parse_file_batch, body, meta, vector_store_id=vector_store_id)

    async def batch_files_page(
        self, vector_store_id: str, batch_id: str, *, status: str, limit: int = 20
    ) -> tuple[BatchFile, ...]:
        """The first page of the batch's files of one status (the stuck files: ``in_progress``)."""
        path = self._batch_path(vector_store_id, batch_id) + "/files"
        params = {**self._query, "limit": str(limit), "order": "asc", "filter": status}
        body, meta = await self._request("GET", path, "list_files", params)
        return parse_reply(parse_file_page, body, meta).data

    async def retrieve_file(self, file_id: str) -> FileObject:
        """``GET /files/{id}``: the file's name and size."""
        url = f"{self._base}/files/{quote(file_id, safe='')}"
        body, meta = await self._request("GET", url, "file", self._query)
        return parse_reply(parse_file_object, body, meta)

    async def retrieve_store_file(self, vector_store_id: str, file_id: str) -> StoreFile:
        """``GET /vector_stores/{vs}/files/{id}``: the file as its store holds it."""
        body, meta = await self._request(
            "GET", self._store_file_path(vector_store_id, file_id), "store_file", self._query
        )
        return parse_reply(parse_store_file, body, meta)

    async def detach_file(self, vector_store_id: str, file_id: str) -> None:
        """``DELETE /vector_stores/{vs}/files/{id}``: the file leaves the store (not deleted)."""
        await self._request(
            "DELETE", self._store_file_path(vector_store_id, file_id), "detach_file", self._query
        )

    async def create_batch(
        self,
        vector_store_id: str,
        files: list[dict[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> FileBatch:
        """``POST /vector_stores/{vs}/file_batches`` with ``files``; the same
        ``idempotency_key`` asks for the same batch again, never a second one. Raises
        :class:`AlreadyAttached` when the API refuses a file still in the store."""
        url = f"{self._base}/vector_stores/{quote(vector_store_id, safe='')}/file_batches"
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body, meta = await self._request(
            "POST", url, "create_batch", self._query, json_body={"files": files}, headers=headers
        )
        return parse_reply(parse_file_batch, body, meta, vector_store_id=vector_store_id)

    async def iter_batch_files(
        self,
        vector_store_id: str,
        batch_id: str,
        *,
        status: str | None = None,
        limit: int = 100,
        order: Literal["asc", "desc"] = "asc",
        max_pages: int = MAX_FILE_PAGES,
    ) -> AsyncIterator[BatchFile]:
        """Every file of the batch (``status`` filters: ``failed`` for the failed ones), page by
        page, until ``has_more`` is false.

        Raises :class:`PaginationError` rather than loop forever: on a cursor seen before, an
        empty page that claims more, or more than ``max_pages`` pages
        (:func:`file_page_limit` gives a bound from the batch's counts).
        """
        path = self._batch_path(vector_store_id, batch_id) + "/files"
        params = {**self._query, **list_params(limit, order, status)}
        what = f"the files of batch {batch_id}"
        async for item in paged(
            partial(self._get, path, "list_files"), params, parse_file_page, what, max_pages
        ):
            yield item

    async def retrieve_store_reply(self, vector_store_id: str) -> Reply[VectorStore]:
        """The vector store, with its response's headers."""
        path = self._store_path(vector_store_id)
        body, meta = await self._request("GET", path, "retrieve_store", self._query)
        store = parse_reply(parse_vector_store, body, meta)
        if store.id != vector_store_id:
            raise WrongBatch(
                f"asked for vector store {vector_store_id}, the reply is for {store.id}",
                status=meta.status,
                request_id=meta.request_id,
            )
        return Reply(store, meta)

    async def iter_vector_stores(self, *, max_pages: int = 1000) -> AsyncIterator[VectorStore]:
        """Every vector store the key can list, page by page (same guards as the file lists)."""
        params = {**self._query, **list_params(100, "asc", None)}
        path = f"{self._base}/vector_stores"
        pages = paged(
            partial(self._get, path, "list_stores"),
            params,
            parse_store_page,
            "the stores",
            max_pages,
        )
        async for item in pages:
            yield item

    async def iter_store_files(
        self, vector_store_id: str, *, status: str | None = None, max_pages: int = 1000
    ) -> AsyncIterator[BatchFile]:
        """Every file of the vector store, whatever its batch (``status`` filters)."""
        path = self._store_path(vector_store_id) + "/files"
        params = {**self._query, **list_params(100, "asc", status)}
        what = f"the files of vector store {vector_store_id}"
        pages = paged(
            partial(self._get, path, "list_store_files"), params, parse_file_page, what, max_pages
        )
        async for item in pages:
            yield item

    # -- one HTTP exchange -----------------------------------------------------------------

    def _batch_path(self, vector_store_id: str, batch_id: str) -> str:
        batch = quote(batch_id, safe="")
        return f"{self._store_path(vector_store_id)}/file_batches/{batch}"

    def _store_path(self, vector_store_id: str) -> str:
        return f"{self._base}/vector_stores/{quote(vector_store_id, safe='')}"

    def _store_file_path(self, vector_store_id: str, file_id: str) -> str:
        vs = quote(vector_store_id, safe="")
        return f"{self._base}/vector_stores/{vs}/files/{quote(file_id, safe='')}"

    def _auth_headers(self) -> tuple[dict[str, str], str | None]:
        source = self.settings.api_key
        secret = source.current() if isinstance(source, SecretSource) else source
        if not secret:
            return {}, None
        key = secret.reveal()
        if self.settings.auth == "azure":
            return {"api-key": key}, key
        return {"Authorization": f"Bearer {key}"}, key

    async def _get(
        self, url: str, endpoint: Endpoint, params: Mapping[str, str]
    ) -> tuple[Any, ResponseMeta]:
        return await self._request("GET", url, endpoint, params)

    async def _request(
        self,
        method: str,
        url: str,
        endpoint: Endpoint,
        params: Mapping[str, str],
        *,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Any, ResponseMeta]:
        async with self._budget.slot() if self._budget is not None else nullcontext():
            return await self._exchange(method, url, endpoint, params, json_body, headers)

    async def _exchange(
        self,
        method: str,
        url: str,
        endpoint: Endpoint,
        params: Mapping[str, str],
        json_body: Any = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> tuple[Any, ResponseMeta]:
        headers, key = self._auth_headers()
        if extra_headers:
            headers.update(extra_headers)
        started = self._clock()
        meta: ResponseMeta | None = None  # set once the headers are in
        try:
            # httpx's timeout bounds each read, so a reply that trickles in a byte at a time
            # would never trip it: the whole exchange gets the time too.
            with anyio.fail_after(self.settings.timeout_seconds):
                # No params rather than empty ones: httpx parses the URL a second time to merge
                # even an empty mapping, which costs more than the rest of the request.
                request = self._http.build_request(
                    method, url, params=params or None, headers=headers, json=json_body
                )
                # Built by the client (base URL, headers, timeouts), sent by its transport.
                # The client's send would add what an API client has no use for, some 350,000
                # instructions a poll (a fifth of it): a cookie jar fed by every reply (which a
                # hostile server could fill), a stream wrapper that forms a reference cycle with its
                # response (freed only by the collector's full passes, 100-300 ms each at
                # 10,000 watches with the event loop held), and a log record.
                response = await self._transport.handle_async_request(request)
                try:
                    reply_headers = header_map(response.headers)
                    meta = read_meta(response.status_code, reply_headers)
                    raw = await read_capped(
                        response, meta, reply_headers, self.settings.max_response_bytes
                    )
                finally:
                    await response.aclose()
        except (httpx.TimeoutException, TimeoutError) as exc:
            self._observe(endpoint, None, started, None)
            raise Transient(
                f"{endpoint}: no reply within {self.settings.timeout_seconds:g}s "
                f"({type(exc).__name__})",
                request_id=meta.request_id if meta else None,
            ) from None
        except httpx.HTTPError as exc:
            self._observe(endpoint, None, started, None)
            raise Transient(
                f"{endpoint}: {type(exc).__name__}: {redact(str(exc), key)}",
                request_id=meta.request_id if meta else None,
            ) from None
        except APIError as exc:
            self._observe(endpoint, exc.status, started, None)
            raise
        raw, meta = without_key(raw, meta, key)
        self._observe(endpoint, meta.status, started, meta)
        if 200 <= meta.status < 300:
            return decode(raw, meta, reply_headers.get("content-type", ""), key), meta
        raise translate_error(endpoint, reply_headers, raw, meta, key)

    def _observe(
        self, endpoint: Endpoint, status: int | None, started: float, meta: ResponseMeta | None
    ) -> None:
        if meta is not None and self._budget is not None:
            self._budget.observe(meta.rate_limit)
        if self._observer is not None:
            self._observer(Exchange(endpoint, status, self._clock() - started, meta))
