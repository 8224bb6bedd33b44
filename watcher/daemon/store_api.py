"""The control API's vector-store watches, in the shape of ``/v1/watches``, and their page:

    GET    /v1/stores                    every store watch
    POST   /v1/stores                    {"vector_store_id": "vs_...", "labels": {...}}: watch it
    GET    /v1/stores/{vector_store_id}  one store watch
    DELETE /v1/stores/{vector_store_id}  stop watching it
    GET    /stores/{vector_store_id}     its read-only page (no token, like the status page)

In fleet mode every replica answers for the whole fleet, as for batch watches: the list and the
page come from the database (each store watch with its owner and lease), a store registered here
is polled by whichever replica claims it, and a delete takes it from whoever owns it.

Mounted by :func:`watcher.daemon.web.build_app`, one route per path, the API behind its guard.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from ..config import parse_store, validate_id
from ..core.engine import Engine
from ..core.watch import STORE, Watch, WatchOptions
from ..errors import ConfigError, StoreUnavailable, TooManyWatches
from ..store import StateStore
from .answers import error, store_unavailable
from .fleet_view import FleetView
from .store_page import render_store_page

Handler = Callable[[Request], Awaitable[Response]]
ReadObject = Callable[[Request], Awaitable[dict[str, Any] | Response]]


def store_handlers(
    engine: Engine,
    store: StateStore,
    *,
    read_object: ReadObject,
    declared: Mapping[str, int],
    fleet: FleetView | None = None,
) -> tuple[dict[str, dict[str, Handler]], Handler]:
    """The store watches' API handlers, by path and method, and the handler of their page.
    ``read_object`` reads a request's JSON object body (or answers why it cannot);
    ``declared`` are the stores the configuration file declares (by their index in its
    ``store`` list), which the API does not delete; ``fleet``: answer for the whole fleet."""

    def _id(request: Request) -> str | Response:
        vs: str = request.path_params["vector_store_id"]
        problems = validate_id(vs, "vector_store_id")
        return error(400, "invalid id", problems=problems) if problems else vs

    async def _find(vs: str) -> tuple[Watch, dict[str, Any]] | None:
        """The store watch and its JSON, or ``None``; raises :class:`StoreUnavailable`."""
        if fleet is None:
            watch = engine.get(vs, STORE)
            return None if watch is None else (watch, watch.as_dict())
        listed = await fleet.lookup((vs, STORE))
        return None if listed is None else (listed.watch, listed.as_dict())

    async def list_stores(_: Request) -> Response:
        if fleet is None:
            return JSONResponse({"stores": [w.as_dict() for w in engine.watches() if w.is_store]})
        try:
            listing = await fleet.listing()
        except StoreUnavailable as exc:
            return store_unavailable(exc)
        stores = [
            {**w.as_dict(), **listing.owners[w.key].as_dict()}
            for w in listing.watches
            if w.is_store
        ]
        return JSONResponse({"stores": stores})

    async def add_store(request: Request) -> Response:
        body = await read_object(request)
        if isinstance(body, Response):
            return body
        allowed = {"vector_store_id", "labels"}
        if unknown := sorted(set(body) - allowed):
            return error(422, f"unknown fields: {', '.join(unknown)}", allowed=sorted(allowed))
        try:
            spec = parse_store(body, where="body")
        except ConfigError as exc:
            return error(422, "invalid store watch", problems=exc.problems)
        if (failure := store.write_failure) is not None:
            return store_unavailable(failure)
        if fleet is not None:
            try:
                listed, created = await fleet.register(
                    spec.vector_store_id, STORE, labels=spec.labels, options=WatchOptions()
                )
            except StoreUnavailable as exc:
                return store_unavailable(exc)
            return JSONResponse(listed.as_dict(), status_code=201 if created else 200)
        try:
            watch, created = engine.add(spec.vector_store_id, STORE, labels=spec.labels)
        except TooManyWatches as exc:
            return error(409, str(exc))
        try:
            await store.flush()  # written before we answer, as a batch's watch is
        except StoreUnavailable as exc:
            if created:  # not on disk, so not accepted
                engine.remove(spec.vector_store_id, STORE)
            return store_unavailable(exc)
        return JSONResponse(watch.as_dict(), status_code=201 if created else 200)

    async def get_store(request: Request) -> Response:
        vs = _id(request)
        if isinstance(vs, Response):
            return vs
        try:
            found = await _find(vs)
        except StoreUnavailable as exc:
            return store_unavailable(exc)
        if found is None:
            return error(404, f"not watching vector store {vs}")
        return JSONResponse(found[1])

    async def delete_store(request: Request) -> Response:
        vs = _id(request)
        if isinstance(vs, Response):
            return vs
        if vs in declared:
            return error(
                409,
                f"vector store {vs} is declared in the configuration file (store[{declared[vs]}]) "
                "and would come back at the next start: remove it there, then restart the daemon",
            )
        if (failure := store.write_failure) is not None:
            return store_unavailable(failure)
        try:
            if fleet is not None:
                found = await fleet.delete((vs, STORE))
            elif found := engine.remove(vs, STORE):
                await store.flush()
        except StoreUnavailable as exc:
            return store_unavailable(exc)
        if not found:
            return error(404, f"not watching vector store {vs}")
        return Response(status_code=204)

    async def page(request: Request) -> Response:
        vs = request.path_params["vector_store_id"]
        if validate_id(vs, "vector_store_id"):
            return PlainTextResponse("not a vector store id", status_code=400)
        try:
            found = await _find(vs)
        except StoreUnavailable:
            return PlainTextResponse("the state store does not answer now", status_code=503)
        if found is None:
            return PlainTextResponse("not watching this vector store", status_code=404)
        watch, shown = found
        owner = f"{shown['owner'] or 'none'} ({shown['lease']})" if "lease" in shown else None
        return HTMLResponse(render_store_page(watch, owner=owner))

    api: dict[str, dict[str, Handler]] = {
        "/v1/stores": {"GET": list_stores, "POST": add_store},
        "/v1/stores/{vector_store_id}": {"GET": get_store, "DELETE": delete_store},
    }
    return api, page
