"""The simulator as an ASGI app: the API under ``/v1``, the control plane under ``/_sim/``.

The API path is plain ASGI with a hand-written router, because it must serve hundreds of
requests per second on one core. This module routes a request and runs it through the checks;
the endpoints answer in :mod:`.batch_routes` (a batch: retrieve, its files, cancel),
:mod:`.file_routes` (``GET /files/{id}``, a store's file, ``POST .../file_batches``) and
:mod:`.store_routes` (the vector stores).

Order of checks on an API request (:mod:`.access`): rate limit, auth, required query
parameters, then an armed fault, then the endpoint itself.
"""

from __future__ import annotations

import anyio
from starlette.types import Receive, Scope, Send

from .access import check_access, fault_reply, header, query_params, rate_limited
from .batch import SimBatch
from .batch_routes import answer_batch, route_batch
from .control import handle_control
from .faults import Endpoint, FaultKind
from .file_routes import MAX_CREATE_BYTES, answer_file, create_batch, route_store_file
from .simulator import Simulator
from .stats import UNKNOWN_ENDPOINT, RequestRecord
from .store_routes import STORE_ENDPOINTS, answer_store, route_store
from .wire import (
    Reply,
    client_gone,
    drop_connection,
    error_reply,
    new_request_id,
    read_body,
    send_cut,
    send_reply,
    truncate,
)


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
                await self._send(send, rate_limited(decision, headers), exchange)
                return
        early = check_access(sim, scope, headers)
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
                early = fault_reply(fault, headers)
                if early is not None:
                    # An HTML page comes from a proxy, not from the API: no request id.
                    shown_id = kind is not FaultKind.HTML_ERROR
                    await self._send(send, early, exchange, with_request_id=shown_id)
                    return

        shown: SimBatch | None = None
        if endpoint in STORE_ENDPOINTS:
            reply = answer_store(sim, endpoint, vs_id, query_params(scope), fault)
        elif endpoint in ("retrieve", "list", "cancel"):
            reply, shown = answer_batch(sim, endpoint, vs_id, target, query_params(scope), fault)
        elif endpoint != "create_batch":
            reply = answer_file(sim, endpoint, vs_id, target)
        else:
            try:
                body = await read_body(receive, MAX_CREATE_BYTES)
            except ConnectionError:
                return  # the client went away: nobody would see the reply
            except ValueError as exc:
                reply = error_reply(413, str(exc))
            else:
                key = header(scope, b"idempotency-key")
                reply = create_batch(sim, vs_id, body, key, fault)
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
            return route_batch(method, vs_id, rest)
        if collection == "files":
            return route_store_file(method, vs_id, rest)
        return None

    def _batch_of(self, endpoint: Endpoint, target: str) -> str | None:
        """The batch a request concerns, for its statistics and its batch's faults: a file
        endpoint concerns the batch the file was last sent in."""
        if endpoint in ("file", "store_file", "detach_file"):
            located = self.sim.locate_file(target)
            return None if located is None else located[0].spec.batch_id
        return target or None

    async def _send(
        self, send: Send, reply: Reply, exchange: RequestRecord, *, with_request_id: bool = True
    ) -> None:
        self.sim.stats.record_status(reply.status)
        exchange.status = reply.status
        await send_reply(send, reply, exchange.request_id if with_request_id else None)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
