"""Serving an ASGI app with uvicorn inside a process that owns its own signals and lifecycle.

uvicorn closes a connection that idles after a response (``timeout_keep_alive``) but has no
timeout for a request's head, so a client that connects and sends nothing, or a byte now and
then (slowloris), holds a connection and its file descriptor for ever; and its
``limit_concurrency`` counts idle connections too, so idle sockets would turn ``/healthz`` into a
503. :class:`GuardedProtocol` adds what is missing to uvicorn's h11 protocol:

- a deadline for a request's head, from the moment the connection opens or its last response
  ended: a connection that has not sent a whole head by then is closed;
- a cap on open connections, kept under the process's file-descriptor limit: past it, a new
  connection takes the place of the one that has waited longest without a request in progress,
  and is refused with a 503 only when every connection is busy with a request.

A request body's deadline is the app's (it alone knows when it reads one): see
``BODY_TIMEOUT_SECONDS``. The event loop's "accept() out of system resource" errors are logged
at most once per :data:`ACCEPT_ERROR_LOG_SECONDS`, with a count and without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = structlog.get_logger("watcher.serving")

HEADER_TIMEOUT_SECONDS = 10.0
BODY_TIMEOUT_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
MAX_CONNECTIONS = 1000
#: File descriptors kept for everything but the HTTP server: the API client's connections, the
#: state store, logs, the webhook.
FD_RESERVE = 64
#: How many connections the event loop accepts in one go (asyncio takes it from the ``backlog``
#: it listens with) before their protocols run and make room: each takes a file descriptor
#: meanwhile, and a few such rounds can be in flight at once.
BACKLOG = 16
ACCEPT_ROUNDS = 4
#: The kernel's queue of connections not yet accepted, set once the loop listens: deep, so that
#: a probe's connection waits its turn there instead of having its SYN dropped and retried
#: a second later. A queued connection takes no file descriptor.
LISTEN_QUEUE = 1024
ACCEPT_ERROR_LOG_SECONDS = 10.0

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
    b"content-length: 21\r\n"
    b"\r\n"
    b"too many connections\n"
)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """How long a client may take and how many connections the server keeps open."""

    header_timeout_seconds: float = HEADER_TIMEOUT_SECONDS
    body_timeout_seconds: float = BODY_TIMEOUT_SECONDS
    keep_alive_seconds: int = KEEP_ALIVE_SECONDS
    max_connections: int = MAX_CONNECTIONS

    def connection_cap(self, open_files_limit: int | None = None) -> int:
        """``max_connections``, lowered to fit under the open-files limit (``RLIMIT_NOFILE``,
        read from the process unless given) with :data:`FD_RESERVE` and the sockets accepted
        but not yet seen by their protocols to spare."""
        if open_files_limit is None:
            open_files_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if open_files_limit == resource.RLIM_INFINITY:
            return self.max_connections
        spare = FD_RESERVE + ACCEPT_ROUNDS * BACKLOG
        return max(1, min(self.max_connections, open_files_limit - spare))


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's head and a connection cap.

    Build one for a server with :func:`guarded_protocol`.
    """

    limits = ServerLimits()
    cap = MAX_CONNECTIONS

    _head_timer: asyncio.TimerHandle | None = None
    _idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._idle_since = self.loop.time()
        if len(self.connections) > self.cap and not self._make_room():
            transport.write(_REFUSAL)  # type: ignore[attr-defined]
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if not self._waiting_for_head():
            self._disarm()  # the head is in: the app's deadlines apply now

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._idle_since = self.loop.time()
            self._arm()  # before the next (perhaps pipelined) request is looked at
        super().on_response_complete()

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request's head; False if every
        other one has a request in progress."""
        waiting = [
            c
            for c in self.connections
            if c is not self and isinstance(c, GuardedProtocol) and c._waiting_for_head()
        ]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c._idle_since)
        oldest._disarm()
        oldest.transport.close()
        self.connections.discard(oldest)  # now, not when the loop gets to connection_lost
        return True

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(
            self.limits.header_timeout_seconds, self._head_timed_out
        )

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(limits: ServerLimits) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` class for one server, its cap fitted to this process."""
    attributes = {"limits": limits, "cap": limits.connection_cap()}
    return type("GuardedProtocol", (GuardedProtocol,), attributes)


def server_config(
    app: Any, limits: ServerLimits = ServerLimits(), **options: Any
) -> uvicorn.Config:
    """A uvicorn configuration for ``app`` that holds to ``limits``; ``options`` go to uvicorn."""
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        timeout_keep_alive=limits.keep_alive_seconds,
        backlog=BACKLOG,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        **options,
    )


LoopErrorHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class AcceptErrorLog:
    """An event-loop exception handler that turns accept() failures into one short log line per
    period (with how many there were) and leaves every other error to the previous handler."""

    def __init__(
        self,
        previous: LoopErrorHandler | None,
        clock: Callable[[], float],
        period: float = ACCEPT_ERROR_LOG_SECONDS,
    ) -> None:
        self._previous = previous
        self._clock = clock
        self._period = period
        self._last: float | None = None
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith("socket.accept()"):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = self._clock()
        if self._last is not None and now - self._last < self._period:
            self.suppressed += 1
            return
        exc = context.get("exception")
        log.warning(
            "accept_failed",
            error=f"{type(exc).__name__}: {exc}" if exc is not None else context["message"],
            suppressed=self.suppressed,
        )
        self._last, self.suppressed = now, 0


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that installs no signal handlers (the host process owns them) and calls
    ``on_started`` once it accepts connections. Stop it with ``should_exit = True``."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], object] = lambda: None):
        super().__init__(config)
        self._on_started = on_started
        self._previous_handler: LoopErrorHandler | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().serve(sockets)
        finally:
            # Cancelled, uvicorn does not shut down: stop the loop listening before the caller
            # closes the sockets, or the loop keeps a stale reader for their file descriptor
            # and the next server given the same number never accepts.
            for server in getattr(self, "servers", ()):
                server.close()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(AcceptErrorLog(self._previous_handler, loop.time))
        await super().startup(sockets)
        for sock in sockets or ():
            sock.listen(LISTEN_QUEUE)
        if self.started:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        asyncio.get_running_loop().set_exception_handler(self._previous_handler)


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket, so that the port is known (and a clash reported) before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted sockets only when the
    # protocol says TCP, and without it every reply written in two parts waits ~40 ms (Nagle
    # against delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def address(sock: socket.socket) -> str:
    """``host:port`` of a bound socket, IPv6 in brackets."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
