"""Replies as bytes on an ASGI connection: JSON bodies, OpenAI-style error bodies, and the
ways a reply can break (cut short, or no reply at all)."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Final

from starlette.types import Receive, Scope, Send

#: Where the simulator's HTTP protocol puts the connection's transport in ``scope["state"]``,
#: so a fault can close the socket itself (see :mod:`watcher.simulator.server`).
TRANSPORT_KEY: Final = "watcher.simulator.transport"

JSON: Final = b"application/json"
HTML: Final = b"text/html; charset=utf-8"


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def new_request_id() -> str:
    return f"req_{secrets.token_hex(16)}"


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = JSON


def json_reply(status: int, obj: object, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    return Reply(status, dumps(obj), headers or [])


def error_reply(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Reply:
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return json_reply(status, body, headers)


def _head(reply: Reply, request_id: str | None, length: int) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", reply.content_type), (b"content-length", str(length).encode())]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    headers.extend(reply.headers)
    return headers


async def send_reply(send: Send, reply: Reply, request_id: str | None) -> None:
    head = _head(reply, request_id, len(reply.body))
    await send({"type": "http.response.start", "status": reply.status, "headers": head})
    await send({"type": "http.response.body", "body": reply.body})


async def send_cut(
    scope: Scope, receive: Receive, send: Send, reply: Reply, request_id: str | None
) -> None:
    """Announce the whole body in ``Content-Length``, send half of it, and close."""
    head = _head(reply, request_id, len(reply.body))
    await send({"type": "http.response.start", "status": reply.status, "headers": head})
    half = reply.body[: len(reply.body) // 2]
    await send({"type": "http.response.body", "body": half, "more_body": True})
    # close(), not abort(): the half body already handed to the transport must reach the client.
    await close_connection(scope, receive, abort=False)


def client_gone(scope: Scope) -> bool:
    """Whether the client has already closed this request's connection (a timeout on its side).
    False when it cannot be known (no transport at hand)."""
    transport: asyncio.Transport | None = scope.get("state", {}).get(TRANSPORT_KEY)
    return transport is not None and transport.is_closing()


async def drop_connection(scope: Scope, receive: Receive, send: Send) -> None:
    """End the exchange without a reply: the client sees its connection closed.

    Under another ASGI server than ours (no transport at hand) the closest we can get is
    headers promising a body that never comes, then the end of the connection.
    """
    if await close_connection(scope, receive, abort=True):
        return
    head = [(b"content-type", JSON), (b"content-length", b"64")]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": b"", "more_body": True})


async def close_connection(scope: Scope, receive: Receive, *, abort: bool) -> bool:
    """Close the client's connection now, without (finishing) a reply; False if we cannot.

    With the simulator's own server the socket is closed directly, and we wait until the
    server has noticed, so that it does not answer in our place. Under another ASGI server,
    returning with a reply unfinished makes it close the connection after what was sent.
    """
    transport: asyncio.Transport | None = scope.get("state", {}).get(TRANSPORT_KEY)
    if transport is None:
        return False
    if abort:
        transport.abort()
    else:
        transport.close()
    while (await receive())["type"] != "http.disconnect":
        pass
    return True


def truncate(body: bytes) -> bytes:
    """The first half of a body: never valid JSON for a JSON object or list of any size."""
    return body[: max(1, len(body) // 2)]


async def read_body(receive: Receive, limit: int = 1 << 20) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ValueError(f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
