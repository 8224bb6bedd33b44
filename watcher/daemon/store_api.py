"""The control API's vector-store watches, in the shape of ``/v1/watches``:

    GET    /v1/stores                    every store watch
    POST   /v1/stores                    {"vector_store_id": "vs_...", "labels": {...}}: watch it
    GET    /v1/stores/{vector_store_id}  one store watch
    DELETE /v1/stores/{vector_store_id}  stop watching it

Mounted by :func:`watcher.daemon.web.build_app`, one route per path, behind the same guard.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..config import parse_store, validate_id
from ..core.engine import Engine
from ..core.watch import STORE
from ..errors import ConfigError, TooManyWatches
from ..store import StateStore

Handler = Callable[[Request], Awaitable[Response]]
ReadObject = Callable[[Request], Awaitable[dict[str, Any] | Response]]


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def store_handlers(
    engine: Engine,
    store: StateStore,
    *,
    read_object: ReadObject,
    declared: Mapping[str, int],
) -> dict[str, dict[str, Handler]]:
    """The store watches' handlers, by path and method; ``read_object`` reads a request's JSON
    object body (or answers why it cannot); ``declared`` are the stores the configuration file
    declares (by their index in its ``store`` list), which the API does not delete."""

    async def list_stores(_: Request) -> Response:
        return JSONResponse({"stores": [w.as_dict() for w in engine.watches() if w.is_store]})

    async def add_store(request: Request) -> Response:
        body = await read_object(request)
        if isinstance(body, Response):
            return body
        allowed = {"vector_store_id", "labels"}
        if unknown := sorted(set(body) - allowed):
            return _error(422, f"unknown fields: {', '.join(unknown)}", allowed=sorted(allowed))
        try:
            spec = parse_store(body, where="body")
        except ConfigError as exc:
            return _error(422, "invalid store watch", problems=exc.problems)
        try:
            watch, created = engine.add(spec.vector_store_id, STORE, labels=spec.labels)
        except TooManyWatches as exc:
            return _error(409, str(exc))
        await store.flush()  # written before we answer, as a batch's watch is
        return JSONResponse(watch.as_dict(), status_code=201 if created else 200)

    def _id(request: Request) -> str | Response:
        vs: str = request.path_params["vector_store_id"]
        problems = validate_id(vs, "vector_store_id")
        return _error(400, "invalid id", problems=problems) if problems else vs

    async def get_store(request: Request) -> Response:
        vs = _id(request)
        if isinstance(vs, Response):
            return vs
        watch = engine.get(vs, STORE)
        if watch is None:
            return _error(404, f"not watching vector store {vs}")
        return JSONResponse(watch.as_dict())

    async def delete_store(request: Request) -> Response:
        vs = _id(request)
        if isinstance(vs, Response):
            return vs
        if vs in declared:
            return _error(
                409,
                f"vector store {vs} is declared in the configuration file (store[{declared[vs]}]) "
                "and would come back at the next start: remove it there, then restart the daemon",
            )
        if not engine.remove(vs, STORE):
            return _error(404, f"not watching vector store {vs}")
        await store.flush()
        return Response(status_code=204)

    return {
        "/v1/stores": {"GET": list_stores, "POST": add_store},
        "/v1/stores/{vector_store_id}": {"GET": get_store, "DELETE": delete_store},
    }
