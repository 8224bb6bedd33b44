"""The API boundary: one async client over one ``httpx.AsyncClient``.

Everything above this module speaks in :mod:`watcher.api.models` and :mod:`watcher.errors`. Errors
are translated here, once, at the call; every error carries the HTTP status and the request id,
and never the API key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar
from urllib.parse import quote

import anyio
import httpx

from .. import __version__
from ..config.model import DEFAULTS, AuthStyle
from ..config.values import validate_base_url
from ..credentials import Secret, SecretSource
from ..errors import (
    AlreadyAttached,
    APIError,
    AuthError,
    Expired,
    NotFound,
    PaginationError,
    ProtocolError,
    RateLimited,
    Transient,
    WrongBatch,
)
from .budget import RequestBudget
from .headers import ResponseMeta, parse_retry_after, read_meta
from .models import (
    BatchFile,
    FileBatch,
    FileObject,
    StoreFile,
    one_line,
    parse_file_batch,
    parse_file_object,
    parse_file_page,
    parse_store_file,
)
from .vector_stores import VectorStore, parse_store_page, parse_vector_store

T = TypeVar("T")

DEFAULT_BASE_URL: Final = DEFAULTS.api.base_url
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

#: A batch refused because a file is still in the store: "already attached" (the simulator),
#: "already exists in (the) vector store".
_SAYS_ATTACHED = re.compile(r"already (attached|exists in|in) (to )?(the |this )?vector", re.I)
# A 400 on a batch or store id says "not found" in one of these ways (OpenAI, Azure, llama-stack).
_SAYS_NOT_FOUND = re.compile(
    r"(no (such )?(file[ _]?batch|vector[ _]?store|batch)|not[ _]found|does not exist|"
    r"invalid (file[ _]?batch|vector[ _]?store|batch)[ _]?id|"
    r"unknown (file[ _]?batch|batch|vector))",
    re.IGNORECASE,
)
#: llama-stack expires a batch seven days after its creation: "... has expired".
_SAYS_EXPIRED = re.compile(r"\bexpired\b", re.IGNORECASE)
#: What stands where the server quoted our key.
REDACTED: Final = "[redacted]"
REDACTED_BYTES: Final = REDACTED.encode()
# OpenAI echoes a masked key in 401 messages ("Incorrect API key provided: sk-abc***xyz").
_KEY_LIKE = re.compile(r"\b(sk|sess|key)-[A-Za-z0-9_\-*]{4,}")


#: The most pages of files one list may take, whatever the batch's counts say: 100,000 files.
MAX_FILE_PAGES: Final = DEFAULTS.api.max_file_pages
#: Pages a list may take beyond those its batch's counts need (the counts are a poll old).
FILE_PAGE_MARGIN: Final = 5


def file_page_limit(
    files: int | None,
    *,
    page_size: int = 100,
    margin: int = FILE_PAGE_MARGIN,
    cap: int = MAX_FILE_PAGES,
) -> int:
    """The most pages a list of a batch's ``files`` may take before it is called endless: the
    pages the count needs, plus ``margin`` and a tenth, never over ``cap``; ``cap`` when the
    count is unknown. A server that hands out fresh ids forever is stopped there, having cost
    that many requests and a seen-set of that many pages, not :data:`MAX_FILE_PAGES`."""
    if files is None:
        return cap
    needed = -(-max(files, 0) // page_size)
    return max(1, min(cap, needed + margin + needed // 10))


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


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How to reach the API. Built from config or the command line."""

    base_url: str = DEFAULT_BASE_URL
    api_key: SecretSource | Secret | None = None
    organization: str | None = None
    project: str | None = None
    auth: AuthStyle = DEFAULTS.api.auth
    query: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float = DEFAULTS.api.timeout_seconds
    max_response_bytes: int = DEFAULTS.api.max_response_bytes
    max_connections: int = 64

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> ClientSettings:
        """Settings from ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``; ``overrides`` win."""
        base_url = environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        settings = cls(
            base_url=base_url, api_key=SecretSource(env="OPENAI_API_KEY", environ=environ)
        )
        return settings.replace(**overrides) if overrides else settings

    def replace(self, **changes: Any) -> ClientSettings:
        return dataclasses.replace(self, **changes)


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
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_seconds),
            limits=limits,
            transport=transport,
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
        batch = self._parse(parse_file_batch, body, meta, vector_store_id=vector_store_id)
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
        return self._parse(parse_file_batch, body, meta, vector_store_id=vector_store_id)

    async def batch_files_page(
        self, vector_store_id: str, batch_id: str, *, status: str, limit: int = 20
    ) -> tuple[BatchFile, ...]:
        """The first page of the batch's files of one status (the stuck files: ``in_progress``)."""
        path = self._batch_path(vector_store_id, batch_id) + "/files"
        params = {**self._query, "limit": str(limit), "order": "asc", "filter": status}
        body, meta = await self._request("GET", path, "list_files", params)
        return self._parse(parse_file_page, body, meta).data

    async def retrieve_file(self, file_id: str) -> FileObject:
        """``GET /files/{id}``: the file's name and size."""
        url = f"{self._base}/files/{quote(file_id, safe='')}"
        body, meta = await self._request("GET", url, "file", self._query)
        return self._parse(parse_file_object, body, meta)

    async def retrieve_store_file(self, vector_store_id: str, file_id: str) -> StoreFile:
        """``GET /vector_stores/{vs}/files/{id}``: the file as its store holds it."""
        body, meta = await self._request(
            "GET", self._store_file_path(vector_store_id, file_id), "store_file", self._query
        )
        return self._parse(parse_store_file, body, meta)

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
        return self._parse(parse_file_batch, body, meta, vector_store_id=vector_store_id)

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
        params = {**self._query, **_list_params(limit, order, status)}
        what = f"the files of batch {batch_id}"
        async for item in self._paged(path, "list_files", params, parse_file_page, what, max_pages):
            yield item

    async def retrieve_store_reply(self, vector_store_id: str) -> Reply[VectorStore]:
        """The vector store, with its response's headers."""
        path = self._store_path(vector_store_id)
        body, meta = await self._request("GET", path, "retrieve_store", self._query)
        store = self._parse(parse_vector_store, body, meta)
        if store.id != vector_store_id:
            raise WrongBatch(
                f"asked for vector store {vector_store_id}, the reply is for {store.id}",
                status=meta.status,
                request_id=meta.request_id,
            )
        return Reply(store, meta)

    async def iter_vector_stores(self, *, max_pages: int = 1000) -> AsyncIterator[VectorStore]:
        """Every vector store the key can list, page by page (same guards as the file lists)."""
        params = {**self._query, **_list_params(100, "asc", None)}
        path = f"{self._base}/vector_stores"
        pages = self._paged(path, "list_stores", params, parse_store_page, "the stores", max_pages)
        async for item in pages:
            yield item

    async def iter_store_files(
        self, vector_store_id: str, *, status: str | None = None, max_pages: int = 1000
    ) -> AsyncIterator[BatchFile]:
        """Every file of the vector store, whatever its batch (``status`` filters)."""
        path = self._store_path(vector_store_id) + "/files"
        params = {**self._query, **_list_params(100, "asc", status)}
        what = f"the files of vector store {vector_store_id}"
        pages = self._paged(path, "list_store_files", params, parse_file_page, what, max_pages)
        async for item in pages:
            yield item

    async def _paged(
        self,
        path: str,
        endpoint: Endpoint,
        params: dict[str, str],
        parse_page: Callable[[Any], Any],
        what: str,
        max_pages: int,
    ) -> AsyncIterator[Any]:
        """The items of every page of a list, following ``after`` from each page's last id."""
        seen_cursors: set[str] = set()
        for page_number in range(1, max_pages + 1):
            body, meta = await self._request("GET", path, endpoint, params)
            page = self._parse(parse_page, body, meta)
            for item in page.data:
                yield item
            if not page.has_more:
                return
            if not page.data:
                raise PaginationError(
                    f"page {page_number} of {what} is empty "
                    "but says has_more: the server's pagination is broken",
                    status=meta.status,
                    request_id=meta.request_id,
                )
            cursor: str = page.data[-1].id
            if cursor in seen_cursors:
                raise PaginationError(
                    f"{what} repeat cursor {cursor!r} on page "
                    f"{page_number}: the server's pagination loops",
                    status=meta.status,
                    request_id=meta.request_id,
                )
            seen_cursors.add(cursor)
            params["after"] = cursor
        raise PaginationError(f"{what} span more than {max_pages} pages; stopped there")

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
                response = await self._http.send(request, stream=True)
                try:
                    reply_headers = _header_map(response.headers)
                    meta = read_meta(response.status_code, reply_headers)
                    raw = await self._read_capped(response, meta, reply_headers)
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
                f"{endpoint}: {type(exc).__name__}: {_redact(str(exc), key)}",
                request_id=meta.request_id if meta else None,
            ) from None
        except APIError as exc:
            self._observe(endpoint, exc.status, started, None)
            raise
        raw, meta = _without_key(raw, meta, key)
        self._observe(endpoint, meta.status, started, meta)
        if 200 <= meta.status < 300:
            return self._decode(raw, meta, reply_headers.get("content-type", ""), key), meta
        raise self._error(endpoint, reply_headers, raw, meta, key)

    async def _read_capped(
        self, response: httpx.Response, meta: ResponseMeta, headers: Mapping[str, str]
    ) -> bytes:
        cap = self.settings.max_response_bytes
        declared = headers.get("content-length")
        # isdigit() alone admits digits int() refuses ("²"); a lying length is only a hint here.
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > cap
        ):
            raise ProtocolError(
                f"reply of {declared} bytes is over the {cap}-byte cap",
                status=meta.status,
                request_id=meta.request_id,
            )
        if response.is_stream_consumed:  # a transport that hands over whole, read bodies
            raws: AsyncIterator[bytes] = _one(response.content)
            inflate = None
        else:
            raws = response.aiter_raw()
            inflate = _decompressor(headers.get("content-encoding", ""), meta)
        chunks: list[bytes] = []
        size = 0
        # Raw bytes, inflated here at most up to the cap: httpx would inflate each chunk whole,
        # and 64 KiB of gzip can hold 64 MiB.
        async for raw in raws:
            try:
                chunk = raw if inflate is None else inflate.decompress(raw, cap - size + 1)
            except zlib.error:
                raise ProtocolError(
                    "the reply's compressed body is corrupt",
                    status=meta.status,
                    request_id=meta.request_id,
                ) from None
            size += len(chunk)
            if size > cap:
                raise ProtocolError(
                    f"reply is over the {cap}-byte cap",
                    status=meta.status,
                    request_id=meta.request_id,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _observe(
        self, endpoint: Endpoint, status: int | None, started: float, meta: ResponseMeta | None
    ) -> None:
        if meta is not None and self._budget is not None:
            self._budget.observe(meta.rate_limit)
        if self._observer is not None:
            self._observer(Exchange(endpoint, status, self._clock() - started, meta))

    @staticmethod
    def _decode(raw: bytes, meta: ResponseMeta, content_type: str, key: str | None) -> Any:
        if "html" in content_type.lower():
            # A 2xx HTML page is a captive portal or a misrouted proxy, not the API.
            raise Transient(
                "the server answered with an HTML page instead of JSON (a proxy or gateway?)",
                status=meta.status,
                request_id=meta.request_id,
            )
        try:
            return _loads(raw, key)
        except (ValueError, RecursionError):
            raise ProtocolError(
                f"the reply is not valid JSON ({len(raw)} bytes)",
                status=meta.status,
                request_id=meta.request_id,
            ) from None

    @staticmethod
    def _parse(parse: Callable[..., T], body: Any, meta: ResponseMeta, **kwargs: Any) -> T:
        try:
            return parse(body, **kwargs)
        except ProtocolError as exc:
            raise ProtocolError(
                exc.message, status=meta.status, request_id=meta.request_id
            ) from None

    def _error(
        self,
        endpoint: Endpoint,
        headers: Mapping[str, str],
        raw: bytes,
        meta: ResponseMeta,
        key: str | None,
    ) -> APIError:
        status, rid = meta.status, meta.request_id
        is_html = "html" in headers.get("content-type", "").lower()
        said = "" if is_html else _redact(_error_message(raw, key), key)
        detail = f": {said}" if said else ""
        if is_html:
            return Transient(
                f"{endpoint}: the server answered {status} with an HTML page "
                "(a proxy or gateway error)",
                status=status,
                request_id=rid,
            )
        if status in (401, 403):
            what = "refused the API key" if status == 401 else "denied access"
            hint = "" if key else " (no API key is configured)"
            return AuthError(f"the API {what}{hint}{detail}", status=status, request_id=rid)
        if status in (400, 409) and endpoint == "create_batch" and _SAYS_ATTACHED.search(said):
            return AlreadyAttached(f"{endpoint}: refused{detail}", status=status, request_id=rid)
        if status in (400, 404) and _SAYS_EXPIRED.search(said):
            return Expired(f"{endpoint}: expired{detail}", status=status, request_id=rid)
        if status == 404:
            return NotFound(f"{endpoint}: not found{detail}", status=status, request_id=rid)
        if status == 400 and _SAYS_NOT_FOUND.search(said):
            return NotFound(f"{endpoint}: not found{detail}", status=status, request_id=rid)
        if status == 429:
            return RateLimited(
                f"{endpoint}: rate limited{detail}",
                retry_after=parse_retry_after(headers),
                status=status,
                request_id=rid,
            )
        if status >= 500 or status in (408, 409, 425):
            return Transient(
                f"{endpoint}: server error {status}{detail}", status=status, request_id=rid
            )
        return APIError(
            f"{endpoint}: the API rejected the request ({status}){detail}",
            status=status,
            request_id=rid,
        )


def _list_params(limit: int, order: str, status: str | None) -> dict[str, str]:
    if not 1 <= limit <= 100:
        raise ValueError("limit must be within 1..100")
    params = {"limit": str(limit), "order": order}
    if status is not None:
        params["filter"] = status
    return params


def _header_map(headers: httpx.Headers) -> dict[str, str]:
    """The reply's headers as a plain dict with lower-case names, read once: each lookup in
    ``httpx.Headers`` scans and decodes every header. Repeated headers are joined with ", ", as
    ``httpx.Headers`` joins them."""
    out: dict[str, str] = {}
    for name, value in headers.multi_items():
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _decompressor(encoding: str, meta: ResponseMeta) -> zlib._Decompress | None:
    """A decompressor for the reply's ``Content-Encoding`` (we ask for gzip or deflate only)."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    raise ProtocolError(
        f"the reply's Content-Encoding {encoding[:40]!r} is not gzip or deflate",
        status=meta.status,
        request_id=meta.request_id,
    )


def _error_message(raw: bytes, key: str | None) -> str:
    """The human part of an error body: OpenAI's ``error.message``, FastAPI's ``detail``."""
    try:
        body = _loads(raw, key)
    except (ValueError, RecursionError):
        return ""
    message: object = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        if message is None:
            message = body.get("detail") or body.get("message")
    if not isinstance(message, str):
        return ""
    return one_line(message, 500)


def _without_key(raw: bytes, meta: ResponseMeta, key: str | None) -> tuple[bytes, ResponseMeta]:
    """The reply with our key cut out of its body and request id: a server or proxy that pastes
    the key into what it says (an error, a file's error, a status) must not get it into logs,
    the state file, webhooks or metrics. A key under 8 characters is not a real key, and
    cutting it out could cut the JSON apart. The body is cut again once decoded
    (:func:`_loads`): JSON can spell the key with escapes (``\\u0073\\u006b…``)."""
    if not key or len(key) < 8:
        return raw, meta
    raw = raw.replace(key.encode(), REDACTED_BYTES)
    if meta.request_id is not None and key in meta.request_id:
        meta = dataclasses.replace(meta, request_id=meta.request_id.replace(key, REDACTED))
    return raw, meta


def _loads(raw: bytes, key: str | None) -> Any:
    """The reply's JSON, with our key cut out of every string in it once decoded.

    Only a body with an escape in it can decode to text that is not in its bytes; without a
    backslash, :func:`_without_key` has already cut every copy.
    """
    body = json.loads(raw)
    if key and len(key) >= 8 and b"\\" in raw:
        body = _scrub(body, key)
    return body


def _scrub(body: Any, key: str) -> Any:
    """``body`` (decoded JSON, changed in place) with ``key`` cut out of every string in it,
    names of members too. A loop, not recursion: JSON as deep as the decoder allows must not
    overflow the stack here."""
    if isinstance(body, str):
        return body.replace(key, REDACTED)
    stack: list[Any] = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for name in [name for name in node if key in name]:
                node[name.replace(key, REDACTED)] = node.pop(name)
            items: Any = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        for at, value in list(items):
            if isinstance(value, str):
                if key in value:
                    node[at] = value.replace(key, REDACTED)
            elif isinstance(value, dict | list):
                stack.append(value)
    return body


def _redact(text: str, key: str | None) -> str:
    if key:
        text = text.replace(key, REDACTED)
    return _KEY_LIKE.sub(REDACTED, text)
