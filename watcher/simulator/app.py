"""The simulator as an ASGI app: the API under ``/v1``, the control plane under ``/_sim/``.

The API path is plain ASGI with a hand-written router, because it must serve hundreds of
requests per second on one core. It serves a batch (retrieve, its files, cancel), ``GET
/files/{id}`` (a name and size that follow from the id), a store's file (``GET`` and ``DELETE
/vector_stores/{vs}/files/{id}``) and ``POST /vector_stores/{vs}/file_batches``: ``file_ids`` or
``files`` (never both), 1 to 2,000 known files, none still attached to the store (detach it
first), the same ``Idempotency-Key`` giving back the same batch.

Order of checks on an API request: rate limit, auth, required query parameters, then an armed
fault, then the endpoint itself.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final
from urllib.parse import parse_qs

import anyio
from starlette.types import Receive, Scope, Send

from ..api.models import FILE_STATUSES, TERMINAL_STATUSES
from .control import handle_control
from .faults import Endpoint, Fault, FaultKind
from .files import DEFAULT_LIMIT, Order, PageQuery, file_json, file_object, page_indices
from .scenario import Progress
from .simulator import (
    MAX_BATCH_FILES,
    BatchNotCancellable,
    BatchRefused,
    SimBatch,
    Simulator,
    UnknownBatch,
)
from .stats import UNKNOWN_ENDPOINT, RequestRecord
from .store_routes import STORE_ENDPOINTS, answer_store, route_store
from .wire import (
    HTML,
    Reply,
    client_gone,
    drop_connection,
    error_reply,
    json_reply,
    new_request_id,
    read_body,
    send_cut,
    send_reply,
    truncate,
)

_HTML_PAGE: Final = (
    "<html>\r\n<head><title>{status} Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>{status} Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_SERVER_ERROR: Final = "The server had an error while processing your request. Sorry about that!"
_NO_KEY: Final = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_BAD_KEY: Final = "Incorrect API key provided."
_QueryParams = dict[str, list[str]]
_ORDERS: Final[dict[str, Order]] = {"asc": "asc", "desc": "desc"}
#: A batch-creation body larger than this is refused (2,000 files with attributes fit).
_MAX_CREATE_BYTES: Final = 4 << 20


class SimulatorApp:
    """Serves a :class:`~.simulator.Simulator` over ASGI."""

    def __init__(self, sim: Simulator, *, prefix: str = "/v1") -> None:
        self.sim = sim
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/_sim/"):
            await handle_control(self.sim, scope, receive, send)
        else:
            await self._api(scope, receive, send)

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        sim = self.sim
        method: str = scope["method"]
        route = self._route(method, scope["path"])
        endpoint, vs_id, batch_id = route or (UNKNOWN_ENDPOINT, "", None)
        exchange = RequestRecord(
            at=sim.wall_clock(),
            request_id=new_request_id(),
            method=method,
            path=scope["path"],
            query=scope["query_string"].decode("latin-1"),
            endpoint=endpoint,
            batch_id=batch_id or vs_id or None,  # a store's requests: the store's id
        )
        try:
            if route is None:
                sim.stats.record_request(UNKNOWN_ENDPOINT, None)
                message = f"Invalid URL ({method} {scope['path']})"
                await self._send(send, error_reply(404, message), exchange)
            else:
                await self._answer(scope, receive, send, route, exchange)
        finally:
            sim.stats.log_request(exchange)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: tuple[Endpoint, str, str],
        exchange: RequestRecord,
    ) -> None:
        sim = self.sim
        endpoint, vs_id, target = route
        batch_id = self._batch_of(endpoint, target)
        # A store's requests are counted, and draw faults, under the store's id.
        counted = batch_id or vs_id or None
        found = sim.find(batch_id) if batch_id is not None else None
        after_terminal = (
            endpoint == "retrieve" and found is not None and found.seen_terminal_at is not None
        )
        sim.stats.record_request(endpoint, counted, after_terminal=after_terminal)

        headers: list[tuple[bytes, bytes]] = []
        limiter = sim.rate_limiter
        if limiter is not None:
            decision = limiter.hit(sim.clock())
            headers = decision.headers()
            if not decision.allowed:
                wait = decision.reset_seconds
                reply = error_reply(
                    429,
                    f"Rate limit reached for requests. Limit {decision.limit}. "
                    f"Please try again in {math.ceil(wait * 1000)}ms.",
                    type_="requests",
                    code="rate_limit_exceeded",
                    headers=headers + _retry_after(wait),
                )
                await self._send(send, reply, exchange)
                return
        early = self._check_access(scope, headers)
        if early is not None:
            await self._send(send, early, exchange)
            return

        fault = sim.faults.draw(endpoint, counted)
        if fault is not None:
            sim.stats.record_fault(fault.kind)
            exchange.fault = fault.kind.value
            kind = fault.kind
            if kind is FaultKind.DROP:
                await drop_connection(scope, receive, send)
                return
            if kind is FaultKind.SLOW:
                await anyio.sleep(fault.delay_seconds)
                if client_gone(scope):
                    # It gave up waiting: no one sees this reply, so no one saw the batch end.
                    return
            elif kind is FaultKind.VANISH and found is not None and batch_id is not None:
                sim.vanish(batch_id)
            elif kind is FaultKind.EXPIRE:
                what = "Vector store file batch" if batch_id else "Vector store"
                message = f"{what} {counted} has expired."
                await self._send(send, error_reply(400, message, headers=headers), exchange)
                return
            else:
                early = _fault_reply(fault, headers)
                if early is not None:
                    # An HTML page comes from a proxy, not from the API: no request id.
                    shown_id = kind is not FaultKind.HTML_ERROR
                    await self._send(send, early, exchange, with_request_id=shown_id)
                    return

        shown: SimBatch | None = None
        if endpoint in STORE_ENDPOINTS:
            reply = answer_store(sim, endpoint, vs_id, _query(scope), fault)
        elif endpoint == "retrieve":
            reply, shown = self._retrieve(vs_id, target, fault)
        elif endpoint == "list":
            reply = self._list(vs_id, target, _query(scope), fault)
        elif endpoint == "cancel":
            reply, shown = self._cancel(vs_id, target, fault)
        elif endpoint == "file":
            reply = self._file(target)
        elif endpoint == "store_file":
            reply = self._store_file(vs_id, target)
        elif endpoint == "detach_file":
            reply = self._detach(vs_id, target)
        else:
            try:
                body = await read_body(receive, _MAX_CREATE_BYTES)
            except ConnectionError:
                return  # the client went away: nobody would see the reply
            except ValueError as exc:
                reply = error_reply(413, str(exc))
            else:
                key = _header(scope, b"idempotency-key")
                reply = self._create_batch(vs_id, body, key, fault)
        reply.headers[:0] = headers

        if fault is not None and fault.kind is FaultKind.LATE_REPLY and reply.status < 300:
            await anyio.sleep(fault.delay_seconds)
            if client_gone(scope):
                return
        if fault is not None and fault.kind is FaultKind.TRUNCATED_JSON:
            reply.body = truncate(reply.body)
        elif fault is not None and fault.kind is FaultKind.CUT_BODY:
            sim.stats.record_status(reply.status)
            exchange.status = reply.status
            await send_cut(scope, receive, send, reply, exchange.request_id)
            return
        elif shown is not None:
            sim.saw_terminal(shown)
        await self._send(send, reply, exchange)

    def _route(self, method: str, path: str) -> tuple[Endpoint, str, str] | None:
        """``(endpoint, vector_store_id, id)`` for an API path, or None. The id is the batch's,
        or the file's for the file endpoints (``""`` where there is none)."""
        prefix = self.prefix
        if not path.startswith(prefix) or path[len(prefix) : len(prefix) + 1] != "/":
            return None
        parts = path[len(prefix) + 1 :].split("/")
        store_route = route_store(method, parts)
        if store_route is not None:
            return store_route
        if any(not part for part in parts):
            return None
        if parts[0] == "files":
            return ("file", "", parts[1]) if len(parts) == 2 and method == "GET" else None
        if parts[0] != "vector_stores" or len(parts) < 3:
            return None
        vs_id, collection, rest = parts[1], parts[2], parts[3:]
        if collection == "file_batches":
            return _batch_route(method, vs_id, rest)
        if collection == "files":
            return _store_file_route(method, vs_id, rest)
        return None

    def _batch_of(self, endpoint: Endpoint, target: str) -> str | None:
        """The batch a request concerns, for its statistics and its batch's faults: a file
        endpoint concerns the batch the file was last sent in."""
        if endpoint in ("file", "store_file", "detach_file"):
            located = self.sim.locate_file(target)
            return None if located is None else located[0].spec.batch_id
        return target or None

    def _check_access(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> Reply | None:
        """401 without the key, 400 without a required query parameter; None if all is well."""
        sim = self.sim
        key = sim.api_key
        if key is not None:
            presented = list(_presented_keys(scope["headers"]))
            if not any(key.matches(candidate) for candidate in presented):
                message = _BAD_KEY if presented else _NO_KEY
                return error_reply(401, message, code="invalid_api_key", headers=headers)
        if sim.required_query:
            query = _query(scope)
            for name, wanted in sim.required_query.items():
                given = query.get(name, [""])[0]
                if not given or (wanted is not None and given != wanted):
                    return error_reply(
                        400,
                        f"Missing or unsupported query parameter '{name}'.",
                        param=name,
                        code="missing_required_parameter" if not given else "invalid_value",
                        headers=headers,
                    )
        return None

    def _batch_reply(self, found: SimBatch, progress: Progress, fault: Fault | None) -> Reply:
        status = progress.status
        if fault is not None and fault.kind is FaultKind.UNKNOWN_STATUS:
            status = fault.value
        spec = found.spec
        wrong_id = fault is not None and fault.kind is FaultKind.WRONG_ID
        body = {
            "id": "vsfb_invented" if wrong_id else spec.batch_id,
            "object": "vector_store.file_batch",
            "created_at": found.created_at,
            "vector_store_id": spec.vector_store_id,
            "status": status,
            "file_counts": progress.file_counts.as_dict(),
        }
        poll_after = (
            spec.poll_after_ms if spec.poll_after_ms is not None else self.sim.poll_after_ms
        )
        headers = (
            [] if poll_after is None else [(b"openai-poll-after-ms", str(poll_after).encode())]
        )
        return json_reply(200, body, headers)

    def _retrieve(
        self, vs_id: str, batch_id: str, fault: Fault | None
    ) -> tuple[Reply, SimBatch | None]:
        sim = self.sim
        try:
            found = sim.visible(vs_id, batch_id)
        except UnknownBatch:
            return _not_found(batch_id), None
        progress = found.progress(sim.clock(), sim.cancel_seconds)
        reply = self._batch_reply(found, progress, fault)
        shown = found if _shows_terminal(progress, fault) else None
        return reply, shown

    def _cancel(
        self, vs_id: str, batch_id: str, fault: Fault | None
    ) -> tuple[Reply, SimBatch | None]:
        sim = self.sim
        try:
            progress = sim.cancel(vs_id, batch_id)
        except UnknownBatch:
            return _not_found(batch_id), None
        except BatchNotCancellable as exc:
            message = f"Cannot cancel a vector store file batch that is already {exc}."
            return error_reply(400, message), None
        found = sim.visible(vs_id, batch_id)
        shown = found if _shows_terminal(progress, fault) else None
        return self._batch_reply(found, progress, fault), shown

    def _list(self, vs_id: str, batch_id: str, query: _QueryParams, fault: Fault | None) -> Reply:
        sim = self.sim
        try:
            found = sim.visible(vs_id, batch_id)
        except UnknownBatch:
            return _not_found(batch_id)
        spec = found.spec
        limit_s = query.get("limit", [str(DEFAULT_LIMIT)])[0]
        try:
            limit = int(limit_s)
        except ValueError:
            return error_reply(400, f"Invalid 'limit': expected an integer, got '{limit_s}'.")
        sim.stats.record_limit(limit)
        if not 1 <= limit <= 100:
            kind = "below minimum value" if limit < 1 else "above maximum value"
            bound = "expected a value >= 1" if limit < 1 else "expected a value <= 100"
            return error_reply(
                400,
                f"Invalid 'limit': integer {kind}. {bound.capitalize()}, but got {limit} instead.",
                param="limit",
            )
        order_s = query.get("order", ["desc"])[0]
        order = _ORDERS.get(order_s)
        if order is None:
            return error_reply(
                400, f"Invalid 'order': expected 'asc' or 'desc', got '{order_s}'.", param="order"
            )
        wanted = query.get("filter", [None])[0]
        if fault is not None and fault.kind is FaultKind.IGNORE_FILTER:
            wanted = None
        if wanted is not None and wanted not in FILE_STATUSES:
            return error_reply(
                400,
                f"Invalid 'filter': expected one of in_progress, completed, failed, cancelled, "
                f"got '{wanted}'.",
                param="filter",
            )
        cursors: dict[str, int | None] = {"after": None, "before": None}
        looping = fault is not None and fault.kind is FaultKind.PAGINATION_LOOP
        for name in cursors:
            value = query.get(name, [None])[0]
            if value is None or looping:
                continue
            index = found.file_index(value)
            if index is None:
                return error_reply(
                    400, f"Invalid '{name}': no file with id '{value}' in this batch.", param=name
                )
            cursors[name] = index
        page_query = PageQuery(
            limit=limit,
            order=order,
            after=cursors["after"],
            before=cursors["before"],
            status=wanted,
        )
        progress = found.progress(sim.clock(), sim.cancel_seconds)
        indices: list[int]
        if fault is not None and fault.kind is FaultKind.EMPTY_PAGE:
            indices, has_more = [], True
        else:
            indices, has_more = page_indices(spec, progress, page_query)
            has_more = has_more or looping
        # A filtered page holds only files of the wanted status: no need to work it out again.
        data = [
            file_json(
                spec,
                progress,
                i,
                found.created_at,
                wanted,
                fid=found.file_id(i),
                meta=sim.file_meta(vs_id, found.file_id(i)),
            )
            for i in indices
        ]
        return json_reply(
            200,
            {
                "object": "list",
                "data": data,
                "first_id": found.file_id(indices[0]) if indices else None,
                "last_id": found.file_id(indices[-1]) if indices else None,
                "has_more": has_more,
            },
        )

    def _file(self, fid: str) -> Reply:
        located = self.sim.locate_file(fid)
        if located is None:
            return error_reply(404, f"No such File object: {fid}", param="id")
        return json_reply(200, file_object(fid, located[0].created_at))

    def _store_file(self, vs_id: str, fid: str) -> Reply:
        sim = self.sim
        try:
            found, index = sim.store_file(vs_id, fid)
        except UnknownBatch:
            return error_reply(404, f"No file found with id '{fid}' in vector store '{vs_id}'.")
        progress = found.progress(sim.clock(), sim.cancel_seconds)
        meta = sim.file_meta(vs_id, fid)
        return json_reply(
            200, file_json(found.spec, progress, index, found.created_at, fid=fid, meta=meta)
        )

    def _detach(self, vs_id: str, fid: str) -> Reply:
        try:
            self.sim.detach(vs_id, fid)
        except UnknownBatch:
            return error_reply(404, f"No file found with id '{fid}' in vector store '{vs_id}'.")
        return json_reply(200, {"id": fid, "object": "vector_store.file.deleted", "deleted": True})

    def _create_batch(
        self, vs_id: str, body: bytes, idempotency_key: str | None, fault: Fault | None
    ) -> Reply:
        sim = self.sim
        try:
            files = _batch_files(body)
            found = sim.create_batch(vs_id, files, idempotency_key=idempotency_key)
        except BatchRefused as exc:
            code = "file_already_attached" if exc.attached else "invalid_request"
            return error_reply(400, str(exc), param="files", code=code)
        progress = found.progress(sim.clock(), sim.cancel_seconds)
        return self._batch_reply(found, progress, fault)

    async def _send(
        self, send: Send, reply: Reply, exchange: RequestRecord, *, with_request_id: bool = True
    ) -> None:
        self.sim.stats.record_status(reply.status)
        exchange.status = reply.status
        await send_reply(send, reply, exchange.request_id if with_request_id else None)


def _batch_route(method: str, vs_id: str, rest: list[str]) -> tuple[Endpoint, str, str] | None:
    """``/vector_stores/{vs}/file_batches[/{batch}[/files|/cancel]]``."""
    if not rest:
        return ("create_batch", vs_id, "") if method == "POST" else None
    batch_id, tail = rest[0], rest[1:]
    if not tail and method == "GET":
        return "retrieve", vs_id, batch_id
    if tail == ["files"] and method == "GET":
        return "list", vs_id, batch_id
    if tail == ["cancel"] and method == "POST":
        return "cancel", vs_id, batch_id
    return None


def _store_file_route(method: str, vs_id: str, rest: list[str]) -> tuple[Endpoint, str, str] | None:
    """``/vector_stores/{vs}/files/{file}``: read or detach one file of the store."""
    if len(rest) != 1:
        return None
    if method == "GET":
        return "store_file", vs_id, rest[0]
    if method == "DELETE":
        return "detach_file", vs_id, rest[0]
    return None


def _fault_reply(fault: Fault, headers: list[tuple[bytes, bytes]]) -> Reply | None:
    """The reply a fault gives instead of the endpoint's, or None if it alters the real one."""
    kind = fault.kind
    if kind is FaultKind.RATE_LIMIT:
        return error_reply(
            429,
            "Rate limit reached for requests. Please try again later.",
            type_="requests",
            code="rate_limit_exceeded",
            headers=headers + _retry_after(fault.retry_after_seconds),
        )
    if kind is FaultKind.RATE_LIMIT_BARE:
        return error_reply(
            429,
            "Rate limit reached for requests.",
            type_="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if kind is FaultKind.SERVER_ERROR:
        return error_reply(fault.http_status, _SERVER_ERROR, type_="server_error", headers=headers)
    if kind is FaultKind.HTML_ERROR:
        page = _HTML_PAGE.format(status=fault.http_status).encode()
        return Reply(fault.http_status, page, [], HTML)
    return None


def _retry_after(seconds: float) -> list[tuple[bytes, bytes]]:
    return [
        (b"retry-after", str(math.ceil(seconds)).encode()),
        (b"retry-after-ms", str(math.ceil(seconds * 1000)).encode()),
    ]


def _shows_terminal(progress: Progress, fault: Fault | None) -> bool:
    if fault is not None and fault.kind is FaultKind.UNKNOWN_STATUS:
        return False
    return progress.status in TERMINAL_STATUSES


def _not_found(batch_id: str) -> Reply:
    return error_reply(404, f"No file batch found with id '{batch_id}'")


def _presented_keys(headers: list[tuple[bytes, bytes]]) -> list[str]:
    keys = []
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                keys.append(token.strip())
        elif name == b"api-key" and value.strip():
            keys.append(value.decode("latin-1").strip())
    return keys


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _batch_files(body: bytes) -> list[tuple[str, Any, Any]]:
    """The files of a ``POST .../file_batches`` body: ``file_ids`` or ``files``, never both."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise BatchRefused("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BatchRefused("The request body must be a JSON object.")
    has_ids, has_files = "file_ids" in data, "files" in data
    if has_ids == has_files:
        raise BatchRefused("Provide exactly one of 'file_ids' or 'files'.")
    items = data["file_ids"] if has_ids else data["files"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_FILES:
        raise BatchRefused(f"A file batch holds 1 to {MAX_BATCH_FILES} files.")
    files: list[tuple[str, Any, Any]] = []
    for item in items:
        if has_ids:
            item = {"file_id": item}
        if not isinstance(item, dict) or not isinstance(item.get("file_id"), str):
            raise BatchRefused("Each file needs a 'file_id' string.")
        attributes, chunking = item.get("attributes"), item.get("chunking_strategy")
        if not isinstance(attributes, dict | None) or not isinstance(chunking, dict | None):
            raise BatchRefused("'attributes' and 'chunking_strategy' must be objects.")
        files.append((item["file_id"], attributes, chunking))
    return files


def _query(scope: Scope) -> _QueryParams:
    raw: bytes = scope["query_string"]
    return parse_qs(raw.decode("latin-1"), keep_blank_values=True) if raw else {}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
