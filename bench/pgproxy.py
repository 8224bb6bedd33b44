"""A TCP proxy in front of PostgreSQL that counts bytes both ways and the client's messages.

The PostgreSQL wire protocol (v3): after the untyped startup packet (and any SSLRequest or
GSSENCRequest before it, which the client must be told to skip: ``sslmode=disable``,
``gssencmode=disable``, or the rest is encrypted), every frontend message is a type byte and a
length. ``Q`` is a simple query, ``E`` an Execute of the extended protocol (psycopg sends one per
statement it runs with parameters, ``P``arse only until a statement is prepared), ``S`` a Sync
(the end of a pipeline of them: a round trip). The counts are kept by type.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections import Counter
from typing import Any

_SSL_OR_GSS = {80877103, 80877104}


class _ClientStream:
    """Splits the client's bytes into messages and counts them by type."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts
        self.buffer = b""
        self.started = False

    def feed(self, data: bytes) -> None:
        buffer = self.buffer + data
        at = 0
        while True:
            if not self.started:
                if len(buffer) - at < 8:
                    break
                (length,) = struct.unpack_from("!i", buffer, at)
                if len(buffer) - at < length:
                    break
                (code,) = struct.unpack_from("!i", buffer, at + 4)
                self.counts["startup" if code not in _SSL_OR_GSS else "ssl/gss request"] += 1
                self.started = code not in _SSL_OR_GSS
                at += length
                continue
            if len(buffer) - at < 5:
                break
            kind = chr(buffer[at])
            (length,) = struct.unpack_from("!i", buffer, at + 1)
            if len(buffer) - at < 1 + length:
                break
            self.counts[kind] += 1
            at += 1 + length
        self.buffer = buffer[at:]


class CountingProxy:
    """Listens on 127.0.0.1 (a free port: :attr:`port`) and forwards to ``target``."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self.target = (target_host, target_port)
        self.counts: Counter[str] = Counter()
        self.bytes_up = 0  # client → server
        self.bytes_down = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        stream = _ClientStream(self.counts)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await src.read(65536):
                    if up:
                        self.bytes_up += len(data)
                        stream.feed(data)
                    else:
                        self.bytes_down += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    def snapshot(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "connections": self.connections,
        }

    def close(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
