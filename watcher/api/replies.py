"""Reading one reply: its body (capped, inflated), its headers, its JSON with our key cut out,
and the error a non-2xx reply stands for.

Every error carries the HTTP status and the request id, and never the API key.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final, TypeVar

import httpx

from ..errors import (
    AlreadyAttached,
    APIError,
    AuthError,
    Expired,
    NotFound,
    ProtocolError,
    RateLimited,
    Transient,
)
from .headers import ResponseMeta, parse_retry_after
from .models import one_line

T = TypeVar("T")

#: A batch refused because a file is still in the store: "already attached" (the simulator),
#: "already exists in (the) vector store".
_SAYS_ATTACHED = re.compile(r"already (attached|exists in|in) (to )?(the |this )?vector", re.I)
# A 400 on a batch or store id says "not found" in one of these ways (OpenAI, Azure, llama-stack).
_SAYS_NOT_FOUND = re.compile(
    r"(no (such )?(file[ _]?batch|vector[ _]?store|batch)|not[ _]found|does not exist|"
    r"invalid (file[ _]?batch|vector[ _]?store|batch)[ _]?id|"
    r"unknown (file[ _]?batch|batch|vector))",
    re.IGNORECASE,
)
#: llama-stack expires a batch seven days after its creation: "... has expired".
_SAYS_EXPIRED = re.compile(r"\bexpired\b", re.IGNORECASE)
#: What stands where the server quoted our key.
REDACTED: Final = "[redacted]"
REDACTED_BYTES: Final = REDACTED.encode()
# OpenAI echoes a masked key in 401 messages ("Incorrect API key provided: sk-abc***xyz").
_KEY_LIKE = re.compile(r"\b(sk|sess|key)-[A-Za-z0-9_\-*]{4,}")


async def read_capped(
    response: httpx.Response, meta: ResponseMeta, headers: Mapping[str, str], cap: int
) -> bytes:
    """The reply's body, inflated, refused past ``cap`` bytes (declared or read)."""
    declared = headers.get("content-length")
    # isdigit() alone admits digits int() refuses ("²"); a lying length is only a hint here.
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > cap:
        raise ProtocolError(
            f"reply of {declared} bytes is over the {cap}-byte cap",
            status=meta.status,
            request_id=meta.request_id,
        )
    if response.is_stream_consumed:  # a transport that hands over whole, read bodies
        raws: AsyncIterator[bytes] = _one(response.content)
        inflate = None
    else:
        raws = response.aiter_raw()
        inflate = _decompressor(headers.get("content-encoding", ""), meta)
    chunks: list[bytes] = []
    size = 0
    # Raw bytes, inflated here at most up to the cap: httpx would inflate each chunk whole,
    # and 64 KiB of gzip can hold 64 MiB.
    async for raw in raws:
        try:
            chunk = raw if inflate is None else inflate.decompress(raw, cap - size + 1)
        except zlib.error:
            raise ProtocolError(
                "the reply's compressed body is corrupt",
                status=meta.status,
                request_id=meta.request_id,
            ) from None
        size += len(chunk)
        if size > cap:
            raise ProtocolError(
                f"reply is over the {cap}-byte cap",
                status=meta.status,
                request_id=meta.request_id,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def decode(raw: bytes, meta: ResponseMeta, content_type: str, key: str | None) -> Any:
    """The 2xx reply's JSON, with our key cut out of it."""
    if "html" in content_type.lower():
        # A 2xx HTML page is a captive portal or a misrouted proxy, not the API.
        raise Transient(
            "the server answered with an HTML page instead of JSON (a proxy or gateway?)",
            status=meta.status,
            request_id=meta.request_id,
        )
    try:
        return loads(raw, key)
    except (ValueError, RecursionError):
        raise ProtocolError(
            f"the reply is not valid JSON ({len(raw)} bytes)",
            status=meta.status,
            request_id=meta.request_id,
        ) from None


def parse_reply(parse: Callable[..., T], body: Any, meta: ResponseMeta, **kwargs: Any) -> T:
    """``parse(body)``; its :class:`ProtocolError` carries the reply's status and id."""
    try:
        return parse(body, **kwargs)
    except ProtocolError as exc:
        raise ProtocolError(exc.message, status=meta.status, request_id=meta.request_id) from None


def translate_error(
    endpoint: str,
    headers: Mapping[str, str],
    raw: bytes,
    meta: ResponseMeta,
    key: str | None,
) -> APIError:
    """The error a non-2xx reply stands for."""
    status, rid = meta.status, meta.request_id
    is_html = "html" in headers.get("content-type", "").lower()
    said = "" if is_html else redact(_error_message(raw, key), key)
    detail = f": {said}" if said else ""
    if is_html:
        return Transient(
            f"{endpoint}: the server answered {status} with an HTML page "
            "(a proxy or gateway error)",
            status=status,
            request_id=rid,
        )
    if status in (401, 403):
        what = "refused the API key" if status == 401 else "denied access"
        hint = "" if key else " (no API key is configured)"
        return AuthError(f"the API {what}{hint}{detail}", status=status, request_id=rid)
    if status in (400, 409) and endpoint == "create_batch" and _SAYS_ATTACHED.search(said):
        return AlreadyAttached(f"{endpoint}: refused{detail}", status=status, request_id=rid)
    if status in (400, 404) and _SAYS_EXPIRED.search(said):
        return Expired(f"{endpoint}: expired{detail}", status=status, request_id=rid)
    if status == 404:
        return NotFound(f"{endpoint}: not found{detail}", status=status, request_id=rid)
    if status == 400 and _SAYS_NOT_FOUND.search(said):
        return NotFound(f"{endpoint}: not found{detail}", status=status, request_id=rid)
    if status == 429:
        return RateLimited(
            f"{endpoint}: rate limited{detail}",
            retry_after=parse_retry_after(headers),
            status=status,
            request_id=rid,
        )
    if status >= 500 or status in (408, 409, 425):
        return Transient(
            f"{endpoint}: server error {status}{detail}", status=status, request_id=rid
        )
    return APIError(
        f"{endpoint}: the API rejected the request ({status}){detail}",
        status=status,
        request_id=rid,
    )


def header_map(headers: httpx.Headers) -> dict[str, str]:
    """The reply's headers as a plain dict with lower-case names, read once: each lookup in
    ``httpx.Headers`` scans and decodes every header. Repeated headers are joined with ", ", as
    ``httpx.Headers`` joins them."""
    out: dict[str, str] = {}
    for name, value in headers.multi_items():
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _decompressor(encoding: str, meta: ResponseMeta) -> zlib._Decompress | None:
    """A decompressor for the reply's ``Content-Encoding`` (we ask for gzip or deflate only)."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    raise ProtocolError(
        f"the reply's Content-Encoding {encoding[:40]!r} is not gzip or deflate",
        status=meta.status,
        request_id=meta.request_id,
    )


def _error_message(raw: bytes, key: str | None) -> str:
    """The human part of an error body: OpenAI's ``error.message``, FastAPI's ``detail``."""
    try:
        body = loads(raw, key)
    except (ValueError, RecursionError):
        return ""
    message: object = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        if message is None:
            message = body.get("detail") or body.get("message")
    if not isinstance(message, str):
        return ""
    return one_line(message, 500)


def without_key(raw: bytes, meta: ResponseMeta, key: str | None) -> tuple[bytes, ResponseMeta]:
    """The reply with our key cut out of its body and request id: a server or proxy that pastes
    the key into what it says (an error, a file's error, a status) must not get it into logs,
    the state file, webhooks or metrics. A key under 8 characters is not a real key, and
    cutting it out could cut the JSON apart. The body is cut again once decoded
    (:func:`loads`): JSON can spell the key with escapes (``\\u0073\\u006b…``)."""
    if not key or len(key) < 8:
        return raw, meta
    raw = raw.replace(key.encode(), REDACTED_BYTES)
    if meta.request_id is not None and key in meta.request_id:
        meta = dataclasses.replace(meta, request_id=meta.request_id.replace(key, REDACTED))
    return raw, meta


def loads(raw: bytes, key: str | None) -> Any:
    """The reply's JSON, with our key cut out of every string in it once decoded.

    Only a body with an escape in it can decode to text that is not in its bytes; without a
    backslash, :func:`without_key` has already cut every copy.
    """
    body = json.loads(raw)
    if key and len(key) >= 8 and b"\\" in raw:
        body = _scrub(body, key)
    return body


def _scrub(body: Any, key: str) -> Any:
    """``body`` (decoded JSON, changed in place) with ``key`` cut out of every string in it,
    names of members too. A loop, not recursion: JSON as deep as the decoder allows must not
    overflow the stack here."""
    if isinstance(body, str):
        return body.replace(key, REDACTED)
    stack: list[Any] = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for name in [name for name in node if key in name]:
                node[name.replace(key, REDACTED)] = node.pop(name)
            items: Any = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        for at, value in list(items):
            if isinstance(value, str):
                if key in value:
                    node[at] = value.replace(key, REDACTED)
            elif isinstance(value, dict | list):
                stack.append(value)
    return body


def redact(text: str, key: str | None) -> str:
    if key:
        text = text.replace(key, REDACTED)
    return _KEY_LIKE.sub(REDACTED, text)
