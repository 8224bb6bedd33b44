"""The HTTP server's guards on a real loopback socket: the deadline for a request's head, the
connection cap, and the accept-error log."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator
from typing import Any

import anyio
import structlog
from anyio.abc import SocketStream

from watcher.serving import (
    ACCEPT_ROUNDS,
    BACKLOG,
    FD_RESERVE,
    AcceptErrorLog,
    EmbeddedServer,
    ServerLimits,
    bind,
    server_config,
)


class HeldApp:
    """An ASGI app that answers 200 to ``/fast`` at once and holds ``/held`` until released."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.held = 0

    async def holding(self, count: int) -> None:
        """Return once ``count`` requests are held (at most 10 s)."""
        with anyio.fail_after(10):
            while True:
                if self.held >= count:
                    return
                await anyio.sleep(0.01)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/held":
            self.held += 1
            await self.release.wait()
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def server(app: HeldApp, limits: ServerLimits) -> AsyncIterator[tuple[str, int]]:
    sock = bind("127.0.0.1", 0)
    started = anyio.Event()
    embedded = EmbeddedServer(server_config(app, limits), on_started=started.set)
    async with anyio.create_task_group() as tg:
        tg.start_soon(embedded.serve, [sock])
        with anyio.fail_after(10):
            await started.wait()
        yield sock.getsockname()[:2]
        app.release.set()
        embedded.should_exit = True
    sock.close()


async def until_closed(stream: SocketStream) -> bytes:
    """Everything the server sends until it closes the connection (at most 10 s)."""
    received = b""
    with anyio.fail_after(10):
        while True:
            try:
                received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return received


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def test_a_head_that_does_not_come_in_time_closes_the_connection() -> None:
    """A connection that sends nothing, one that sends half a head, and a kept-alive one that
    trickles half of its next head are all closed once the head deadline passes."""
    limits = ServerLimits(header_timeout_seconds=0.3, keep_alive_seconds=60)
    async with server(HeldApp(), limits) as (host, port):
        silent = await anyio.connect_tcp(host, port)
        half = await anyio.connect_tcp(host, port)
        await half.send(b"GET /fast HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        kept = await anyio.connect_tcp(host, port)
        await kept.send(request("/fast"))
        first = b""
        while b"ok" not in first:
            first += await kept.receive()
        await kept.send(b"GET /fast HTTP/1.1\r\n")
        for stream in (silent, half, kept):
            async with stream:
                assert await until_closed(stream) == b""


async def test_past_the_cap_an_idle_connection_makes_room_and_a_busy_server_refuses() -> None:
    """At the cap, a new connection closes the one that waited longest without a request; when
    every connection has a request in progress, the new one gets a 503 and is closed; requests
    in progress are answered."""
    app = HeldApp()
    async with server(app, ServerLimits(max_connections=2)) as (host, port):
        busy = await anyio.connect_tcp(host, port)
        await busy.send(request("/held"))
        await app.holding(1)
        idle = await anyio.connect_tcp(host, port)
        newcomer = await anyio.connect_tcp(host, port)
        async with idle:
            assert await until_closed(idle) == b""
        await newcomer.send(request("/held"))
        await app.holding(2)
        refused = await anyio.connect_tcp(host, port)
        async with refused:
            answer = await until_closed(refused)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert answer.endswith(b"too many connections\n")
        app.release.set()
        for stream in (busy, newcomer):
            async with stream:
                answer = b""
                with anyio.fail_after(10):
                    while not answer.endswith(b"ok"):
                        answer += await stream.receive()
                assert answer.startswith(b"HTTP/1.1 200 ")


def test_the_cap_fits_under_the_open_files_limit() -> None:
    """The cap is the configured one unless the open-files limit, less the reserve and the
    sockets being accepted, is lower; it is never below one."""
    limits = ServerLimits(max_connections=1000)
    spare = FD_RESERVE + ACCEPT_ROUNDS * BACKLOG
    assert limits.connection_cap(256) == 256 - spare
    assert limits.connection_cap(65536) == 1000
    assert limits.connection_cap(resource.RLIM_INFINITY) == 1000
    assert limits.connection_cap(spare) == 1


def test_accept_errors_are_one_line_per_period() -> None:
    """accept() failures log one warning per period, counting those left out, without a
    traceback; other loop errors go to the previous handler."""
    now = [0.0]
    passed_on: list[dict[str, Any]] = []
    handler = AcceptErrorLog(lambda _, ctx: passed_on.append(ctx), lambda: now[0], period=10)
    loop = asyncio.new_event_loop()
    error = OSError(24, "Too many open files")
    context = {"message": "socket.accept() out of system resource", "exception": error}
    try:
        with structlog.testing.capture_logs() as captured:
            for _ in range(1000):
                handler(loop, context)
                now[0] += 0.05  # 1,000 failures in 50 s
            handler(loop, {"message": "something else"})
    finally:
        loop.close()
    lines = [e for e in captured if e["event"] == "accept_failed"]
    assert len(lines) == 5
    assert lines[0]["suppressed"] == 0
    assert lines[1]["suppressed"] == 199
    assert lines[0]["error"] == "OSError: [Errno 24] Too many open files"
    assert all("exc_info" not in e for e in lines)
    assert passed_on == [{"message": "something else"}]


async def test_a_cancelled_server_lets_the_next_one_accept() -> None:
    """A server whose task is cancelled (not asked to exit) stops listening before its socket is
    closed, so the next server, given the same file descriptor, accepts and answers."""
    for _ in range(2):
        sock = bind("127.0.0.1", 0)
        started = anyio.Event()
        embedded = EmbeddedServer(server_config(HeldApp(), ServerLimits()), on_started=started.set)
        async with anyio.create_task_group() as tg:
            tg.start_soon(embedded.serve, [sock])
            with anyio.fail_after(10):
                await started.wait()
            host, port = sock.getsockname()[:2]
            async with await anyio.connect_tcp(host, port) as stream:
                await stream.send(request("/fast"))
                with anyio.fail_after(10):
                    answer = await stream.receive()
            assert answer.startswith(b"HTTP/1.1 200 ")
            tg.cancel_scope.cancel()
        sock.close()
