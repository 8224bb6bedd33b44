"""Running the simulator on a real HTTP server (uvicorn, h11) on a loopback port.

Two pieces of uvicorn are adapted. The embedded server (:mod:`watcher.serving`) leaves signals
alone, since it runs inside someone else's process. The HTTP protocol hands each connection's
transport to the app (in ``scope["state"]``), because ASGI has no way to say "drop this
connection": an app that raises or returns without replying gets a 500 from uvicorn, which is
not what a dropped connection looks like.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final

import anyio
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..serving import EmbeddedServer, bind
from .app import SimulatorApp
from .simulator import Simulator
from .wire import TRANSPORT_KEY

_STARTUP_TIMEOUT: Final = 10.0
_SHUTDOWN_GRACE: Final = 1


class TransportAwareH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, putting the connection's transport in each request's state."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # scope["state"] is a shallow copy of app_state made per request; a per-connection
        # dict here gives every request on this connection its own transport.
        self.app_state = {**self.app_state, TRANSPORT_KEY: transport}


def make_server(
    sim: Simulator, host: str, port: int, on_started: Callable[[], object]
) -> EmbeddedServer:
    config = uvicorn.Config(
        SimulatorApp(sim),
        host=host,
        port=port,
        http=TransportAwareH11Protocol,
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=_SHUTDOWN_GRACE,
    )
    return EmbeddedServer(config, on_started)


def base_url(sock: socket.socket, prefix: str = "/v1") -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{prefix}"


@contextlib.asynccontextmanager
async def serve_simulator(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``sim`` in the running asyncio loop; yields the base URL, ``http://host:port/v1``.

    The server runs as a plain asyncio task rather than in a task group, so the context may be
    entered and left by different tasks (as pytest-asyncio does with async fixtures).
    """
    sock = bind(host, port)
    started = asyncio.Event()
    server = make_server(sim, host, port, started.set)
    serving = asyncio.ensure_future(server.serve([sock]))
    try:
        waiting = asyncio.ensure_future(started.wait())
        await asyncio.wait(
            {serving, waiting}, timeout=_STARTUP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        waiting.cancel()
        if not started.is_set():
            raise RuntimeError("the simulator's server did not start")
        yield base_url(sock)
    finally:
        server.should_exit = True
        with anyio.CancelScope(shield=True):
            await _stopped(server, serving)
        sock.close()


async def _stopped(server: EmbeddedServer, serving: asyncio.Future[None]) -> None:
    """Wait for the server to finish; force it, then cancel it, if it takes too long."""
    await asyncio.wait({serving}, timeout=_SHUTDOWN_GRACE + 1)
    if not serving.done():
        server.force_exit = True
        await asyncio.wait({serving}, timeout=1)
    if not serving.done():
        serving.cancel()
        await asyncio.wait({serving})
    if not serving.cancelled() and (failure := serving.exception()) is not None:
        raise failure


@contextlib.contextmanager
def serve_simulator_in_thread(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """Serve ``sim`` from a thread with its own event loop, for synchronous code."""
    sock = bind(host, port)
    started = threading.Event()
    server = make_server(sim, host, port, started.set)
    thread = threading.Thread(
        target=server.run, args=([sock],), name="batch-watcher-simulator", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while not started.wait(0.05) and thread.is_alive() and time.monotonic() < deadline:
        pass
    if not started.is_set():
        server.should_exit = True
        thread.join(_STARTUP_TIMEOUT)
        sock.close()
        raise RuntimeError("the simulator's server did not start")
    try:
        yield base_url(sock)
    finally:
        server.should_exit = True
        thread.join(_STARTUP_TIMEOUT)
