"""How the daemon is served: metrics, health, the control API and the status page (Starlette).

The control API is for the application that creates batches (the sidecar case). It is guarded by
``Authorization: Bearer <control token>``; with no token configured it answers only when the
daemon listens on loopback, so that no one off the host can register watches, and only to a
``Host`` that names the loopback, so that a web page the operator visits cannot reach it through
DNS rebinding. A write must say ``Content-Type: application/json``: a browser sends a cross-site
POST without asking first only when its type is a form's or ``text/plain``.

The API is described by ``openapi.json`` beside this module, served at ``/openapi.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import structlog
from isal import isal_zlib
from prometheus_client.exposition import gzip_accepted
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config import PollConfig, parse_watch, validate_id
from ..core.engine import Engine
from ..core.retry import retry_policy
from ..core.watch import WatchOptions
from ..credentials import SecretSource
from ..errors import ConfigError, StoreUnavailable, TooManyWatches
from ..serving import BODY_TIMEOUT_SECONDS
from ..store import StateStore
from .answers import error, store_unavailable
from .declared import DeclaredKeys
from .fleet_view import FleetView
from .history import BatchHistory
from .metrics import WatcherMetrics
from .pages import Pages
from .store_api import store_handlers

log = structlog.get_logger("watcher.daemon.web")

MAX_BODY_BYTES = 64 * 1024
HEALTHY_TICK_SECONDS = 30.0  # the scheduler ticks at least every second when all is well
#: The names a request may use for a daemon that listens on loopback without a control token.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
OPENAPI = files(__package__).joinpath("openapi.json").read_bytes()


@dataclass(slots=True)
class AppState:
    engine: Engine
    metrics: WatcherMetrics
    store: StateStore
    poll: PollConfig
    control_token: SecretSource | None
    loopback: bool
    clock: Callable[[], float] = time.monotonic
    config_loaded: bool = True
    #: Watches the configuration file declares: they come back at every start, so the API
    #: refuses to delete them.
    declared: DeclaredKeys = field(default_factory=DeclaredKeys)
    #: Vector stores the file declares (``[[store]]``), with their index in its ``store`` list.
    declared_stores: Mapping[str, int] = field(default_factory=dict)
    #: Host names accepted without a control token (the listen address's and the loopback's).
    local_names: frozenset[str] = LOOPBACK_NAMES
    body_timeout_seconds: float = BODY_TIMEOUT_SECONDS
    #: Why there is no API key where the API needs one (``check-config``'s rule), or None.
    api_key_missing: Callable[[], str | None] = lambda: None
    history: BatchHistory = field(default_factory=BatchHistory)
    #: More reasons not to be ready (fleet mode: the database does not answer).
    more_problems: Callable[[], list[str]] | None = None
    #: Fleet mode: the whole fleet's watches, whichever replica is asked.
    fleet: FleetView | None = None


def host_name(header: str) -> str | None:
    """The host name of a ``Host`` header (lower case, IPv6 without brackets), or None when it
    is not one."""
    if any(c in header for c in "@/\\?# \t"):  # userinfo or a path would hide the real name
        return None
    try:
        parts = urlsplit(f"//{header}")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    return parts.hostname or None


Handler = Callable[[Request], Awaitable[Response]]


def by_method(path: str, **handlers: Handler) -> Route:
    """One route for a path that answers several methods, so that its 405 lists them all
    (a route per method would list only its own)."""

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, dispatch, methods=list(handlers))


def _token_file_unreadable(source: SecretSource | None) -> str | None:
    """Why the configured control token file gives no token now, or None."""
    if source is None or source.file is None or source.current() is not None:
        return None
    return f"server.control_token_file: no token in {source.file} (missing, unreadable or empty)"


def _is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").partition(";")[0]
    return media_type.strip().lower() == "application/json"


def build_app(state: AppState) -> Starlette:
    render_lock = anyio.Lock()

    async def metrics(request: Request) -> Response:
        snapshot = state.metrics.snapshot(state.engine)
        # Compressed when the scraper asks, as prometheus-client's own handler does; in the
        # worker thread with the render (at 10,000 batches the text is about 18 MB), with ISA-L's
        # gzip, which takes a sixth of zlib's time at the same size.
        gzipped = gzip_accepted(request.headers.get("accept-encoding", ""))

        def render() -> tuple[bytes, str]:
            chunks, content_type = state.metrics.render_chunks(
                snapshot, request.headers.get("accept")
            )
            if not gzipped:
                return b"".join(chunks), content_type
            # Piece by piece: the compressor lets go of the GIL, a join of 19 MB would not.
            gzip = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)  # 31: a gzip member
            return b"".join([*map(gzip.compress, chunks), gzip.flush()]), content_type

        async with render_lock:
            body, content_type = await anyio.to_thread.run_sync(render)
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"} if gzipped else None
        return Response(body, media_type=content_type, headers=headers)

    async def healthz(_: Request) -> Response:
        age = state.clock() - state.engine.last_tick
        alive = state.engine.started and age < HEALTHY_TICK_SECONDS
        body = {"status": "ok" if alive else "stuck", "scheduler_tick_age_seconds": round(age, 3)}
        return JSONResponse(body, status_code=200 if alive else 503)

    async def readyz(_: Request) -> Response:
        problems = []
        if not state.config_loaded:
            problems.append("configuration not loaded")
        if (missing := state.api_key_missing()) is not None:
            problems.append(missing)
        if lost := _token_file_unreadable(state.control_token):
            problems.append(lost)
        if not state.store.is_open:
            problems.append("state store not open")
        elif (failure := state.store.write_failure) is not None:
            failing = max(0.0, time.time() - failure.since)
            problems.append(
                f"the state store cannot write ({failure.attempts} attempts in "
                f"{failing:.0f}s; polling goes on, the control API answers 503): {failure.error}"
            )
        if not state.engine.started:
            problems.append("engine not running")
        if state.engine.auth_error is not None:
            problems.append(f"the API refuses the credentials: {state.engine.auth_error.message}")
        if state.more_problems is not None:
            problems += state.more_problems()
        body = {"status": "ready" if not problems else "not ready", "problems": problems}
        return JSONResponse(body, status_code=200 if not problems else 503)

    def guarded(handler: Handler) -> Handler:
        async def check(request: Request) -> Response:
            token = state.control_token.current() if state.control_token else None
            if token is None and (lost := _token_file_unreadable(state.control_token)):
                # A token file that goes missing must not open the API: closed until it is back.
                return error(503, f"the control API is closed: {lost}")
            if token is None:
                if not state.loopback:
                    return error(
                        403,
                        "the control API is disabled: no control token is configured and the "
                        "daemon does not listen on loopback",
                    )
                if host_name(request.headers.get("host", "")) not in state.local_names:
                    return error(
                        421,
                        "without a control token the control API answers only to a Host that "
                        f"names the loopback ({', '.join(sorted(state.local_names))})",
                    )
                return await handler(request)
            scheme, _, presented = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.matches(presented.strip()):
                return JSONResponse(
                    {"error": "a valid 'Authorization: Bearer <control token>' is required"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="batch-watcher"'},
                )
            return await handler(request)

        return check

    async def list_watches(_: Request) -> Response:
        if state.fleet is None:
            watches = [w.as_dict() for w in state.engine.watches() if not w.is_store]
            return JSONResponse({"watches": watches})
        try:
            return JSONResponse({"watches": await state.fleet.watches_json()})
        except StoreUnavailable as exc:
            return store_unavailable(exc)

    async def read_body(request: Request) -> bytes | Response:
        """The body, or the answer to a request whose body is too big, too slow or cut off."""
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            return error(413, f"the body is over {MAX_BODY_BYTES} bytes")
        raw = bytearray()
        with anyio.move_on_after(state.body_timeout_seconds):
            try:
                async for chunk in request.stream():
                    raw += chunk
                    if len(raw) > MAX_BODY_BYTES:
                        return error(413, f"the body is over {MAX_BODY_BYTES} bytes")
            except ClientDisconnect:
                # Nobody is left to answer; one line says so (not a traceback per request).
                log.info("request_aborted", path=request.url.path, received_bytes=len(raw))
                return error(400, "the request body was cut off")
            return bytes(raw)
        # "Connection: close": the rest of the body may still come, and must not be read as the
        # next request.
        response = error(
            408, f"the body did not arrive within {state.body_timeout_seconds:g} seconds"
        )
        response.headers["Connection"] = "close"
        return response

    async def read_object(request: Request) -> dict[str, Any] | Response:
        """The body's JSON object, or the answer to a body that is not one."""
        if not _is_json(request):
            return error(415, "the body must be JSON, sent as 'Content-Type: application/json'")
        raw = await read_body(request)
        if isinstance(raw, Response):
            return raw
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return error(400, "the body is not valid JSON")
        if not isinstance(body, dict):
            return error(422, "the body must be a JSON object")
        return body

    async def add_watch(request: Request) -> Response:
        body = await read_object(request)
        if isinstance(body, Response):
            return body
        allowed = {"vector_store_id", "batch_id", "labels", "deadline_seconds", "retry"}
        if unknown := sorted(set(body) - allowed):
            return error(422, f"unknown fields: {', '.join(unknown)}", allowed=sorted(allowed))
        try:
            spec = parse_watch(body, state.poll, where="body")
        except ConfigError as exc:
            return error(422, "invalid watch", problems=exc.problems)
        if (failure := state.store.write_failure) is not None:
            return store_unavailable(failure)
        options = WatchOptions(
            deadline_seconds=spec.deadline_seconds, retry=retry_policy(spec.retry)
        )
        if state.fleet is not None:
            # Written, and polled by whichever replica claims it (this one, unless another
            # owns it already).
            try:
                listed, created = await state.fleet.register(
                    spec.vector_store_id, spec.batch_id, labels=spec.labels, options=options
                )
            except StoreUnavailable as exc:
                return store_unavailable(exc)
            return JSONResponse(listed.as_dict(), status_code=201 if created else 200)
        try:
            watch, created = state.engine.add(
                spec.vector_store_id, spec.batch_id, labels=spec.labels, options=options
            )
        except TooManyWatches as exc:
            return error(409, str(exc))
        # Written before we answer: a watch we accepted survives any crash after this.
        try:
            await state.store.flush()
        except StoreUnavailable as exc:
            if created:  # not on disk, so not accepted: as if it had never been asked for
                state.engine.remove(spec.vector_store_id, spec.batch_id)
            return store_unavailable(exc)
        return JSONResponse(watch.as_dict(), status_code=201 if created else 200)

    def _key(request: Request) -> tuple[str, str] | Response:
        vs = request.path_params["vector_store_id"]
        batch = request.path_params["batch_id"]
        problems = validate_id(vs, "vector_store_id") + validate_id(batch, "batch_id")
        if problems:
            return error(400, "invalid id", problems=problems)
        return vs, batch

    async def get_watch(request: Request) -> Response:
        key = _key(request)
        if isinstance(key, Response):
            return key
        if state.fleet is not None:
            try:
                listed = await state.fleet.lookup(key)
            except StoreUnavailable as exc:
                return store_unavailable(exc)
            if listed is None:
                return error(404, f"no replica watches {key[0]}/{key[1]}")
            return JSONResponse(listed.as_dict())
        watch = state.engine.get(*key)
        if watch is None:
            return error(404, f"not watching {key[0]}/{key[1]}")
        return JSONResponse(watch.as_dict())

    async def delete_watch(request: Request) -> Response:
        key = _key(request)
        if isinstance(key, Response):
            return key
        if (index := state.declared.index(*key)) is not None:
            return error(
                409,
                f"{key[0]}/{key[1]} is declared in the configuration file "
                f"(watch[{index}]) and would come back at the next start: remove "
                "it there, then restart the daemon",
            )
        if (failure := state.store.write_failure) is not None:
            return store_unavailable(failure)
        if state.fleet is not None:
            try:
                found = await state.fleet.delete(key)
            except StoreUnavailable as exc:
                return store_unavailable(exc)
            if not found:
                return error(404, f"no replica watches {key[0]}/{key[1]}")
            return Response(status_code=204)
        if not state.engine.remove(*key):
            return error(404, f"not watching {key[0]}/{key[1]}")
        try:
            await state.store.flush()
        except StoreUnavailable as exc:
            # The watch is no longer polled; its deletion is written once the store can write,
            # and until then a restart would bring it back.
            return store_unavailable(exc, removed=True)
        return Response(status_code=204)

    async def openapi(_: Request) -> Response:
        return Response(OPENAPI, media_type="application/json")

    stores_api, store_page = store_handlers(
        state.engine,
        state.store,
        read_object=read_object,
        declared=state.declared_stores,
        fleet=state.fleet,
    )
    # Read-only and without a token, like /metrics: nothing on them is secret.
    pages = Pages(state.engine, state.history, fleet=state.fleet)
    one = "/v1/watches/{vector_store_id}/{batch_id}"
    routes = [
        Route("/", pages.status, methods=["GET"]),
        Route("/batches/{vector_store_id}/{batch_id}", pages.batch, methods=["GET"]),
        Route("/stores/{vector_store_id}", store_page, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        # One route per path, so that a 405's Allow lists every method the path has.
        by_method("/v1/watches", GET=guarded(list_watches), POST=guarded(add_watch)),
        by_method(one, GET=guarded(get_watch), DELETE=guarded(delete_watch)),
        *(
            by_method(path, **{method: guarded(h) for method, h in handlers.items()})
            for path, handlers in stores_api.items()
        ),
    ]
    app = Starlette(routes=routes)
    # No redirect for a path that misses a route only by slashes: /v1/watches// holds ids that
    # are empty or have "/" in them, which is a 404, not a 307 to the list of watches.
    app.router.redirect_slashes = False
    return app
