"""A hostile API server the project has never seen: raw asyncio, HTTP/1.1 written by hand.

It shares nothing with :mod:`watcher.simulator`. It serves the two endpoints the watcher reads
(retrieve a file batch, list its files) and misbehaves on purpose: wrong content types, chunked
garbage, huge headers, replies that trickle in a byte at a time, JSON nested a million deep, NaN,
duplicate keys, ids with control characters, ``has_more: "true"``, 200 with an error body,
redirect loops, gzip bombs, lying ``Content-Length``, broken status lines, and, in ``echo_key``
mode, the caller's API key pasted into everything it says.

Each batch has a script: the tricks its retrieves get, in order, then proper answers; the tricks
its file lists get, likewise; or one trick forever. It runs in a thread with its own event loop,
so the test process can serve a daemon or a ``watch`` command in another process::

    with HostileServer([HostileBatch("vs_h", "vsfb_nan", retrieve_tricks=["nan"])]) as server:
        ... server.url ...
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

JSON_TYPE = "application/json"
MAX_HEAD = 64 * 1024
TRICKLE_SECONDS = 0.25


@dataclass(frozen=True)
class FailedFile:
    id: str
    code: str
    message: str


@dataclass
class HostileBatch:
    """One batch and its script. Unless ``forever`` is set, the batch ends ``status`` with
    ``len(failed)`` failed files out of ``total``."""

    vector_store_id: str
    batch_id: str
    total: int = 20
    failed: Sequence[FailedFile] = ()
    status: str = "completed"
    retrieve_tricks: Sequence[str] = ()
    list_tricks: Sequence[str] = ()
    forever: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        failed = len(self.failed)
        return {
            "in_progress": 0,
            "completed": self.total - failed,
            "failed": failed,
            "cancelled": 0,
            "total": self.total,
        }

    def body(self, status: str | None = None, **changes: Any) -> dict[str, Any]:
        return {
            "id": self.batch_id,
            "object": "vector_store.file_batch",
            "created_at": 1_700_000_000,
            "vector_store_id": self.vector_store_id,
            "status": status or self.status,
            "file_counts": self.counts,
            **changes,
        }


@dataclass
class Action:
    """What to write back: ``data``, all at once or one byte per ``trickle`` seconds; then close
    the connection, or keep it for the next request."""

    data: bytes
    close: bool = False
    trickle: float | None = None
    prefix: bytes = b""  # written at once, before ``data``


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    @property
    def credential(self) -> str:
        """The API key the caller sent, as it sent it."""
        auth = self.headers.get("authorization", "")
        return auth.partition(" ")[2] or self.headers.get("api-key", "")


def response(
    status: int,
    body: bytes,
    *,
    content_type: str | None = JSON_TYPE,
    request_id: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    reason: str = "Whatever",
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    if request_id is not None:
        lines.append(f"x-request-id: {request_id}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@cache
def gzip_bomb() -> bytes:
    """64 MiB of zeros, gzipped to about 64 KiB."""
    return gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)


@cache
def deep_json() -> bytes:
    """A JSON array nested a million levels deep (2 MB)."""
    return b"[" * 1_000_000 + b"]" * 1_000_000


def _page(batch: HostileBatch, request: Request) -> tuple[list[dict[str, Any]], bool]:
    """The failed files after the ``after`` cursor, ``limit`` of them, and whether more follow."""
    limit = int(request.query.get("limit", ["20"])[0])
    after = request.query.get("after", [None])[0]
    ids = [f.id for f in batch.failed]
    start = ids.index(after) + 1 if after in ids else 0
    chosen = batch.failed[start : start + limit]
    data = [
        {
            "id": f.id,
            "object": "vector_store.file",
            "status": "failed",
            "vector_store_id": batch.vector_store_id,
            "last_error": {"code": f.code, "message": f.message},
        }
        for f in chosen
    ]
    return data, start + limit < len(ids)


Trick = Callable[["HostileServer", HostileBatch, Request, str], Action]
TRICKS: dict[str, Trick] = {}


def trick(name: str) -> Callable[[Trick], Trick]:
    def register(fn: Trick) -> Trick:
        TRICKS[name] = fn
        return fn

    return register


# -- tricks on either endpoint ---------------------------------------------------------------


@trick("wrong_content_type")
def _wrong_content_type(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    body = f'<batch id="{b.batch_id}" status="completed"/>'.encode()
    return Action(response(200, body, content_type="application/xml", request_id=rid))


@trick("chunked_garbage")
def _chunked_garbage(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {JSON_TYPE}\r\nTransfer-Encoding: chunked\r\n"
        f"x-request-id: {rid}\r\n\r\n"
    )
    return Action(head.encode() + b"zz\r\nthis is not a chunk\r\n-5\r\n\r\n", close=True)


@trick("huge_headers")
def _huge_headers(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    junk = [(f"x-junk-{n}", "j" * 1000) for n in range(300)]
    return Action(response(200, dumps(b.body()), request_id=rid, headers=junk), close=True)


@trick("trickle")
def _trickle(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    """A proper reply, headers and all, one byte every quarter second: slowloris the other
    way round."""
    return Action(response(200, dumps(b.body()), request_id=rid), close=True, trickle=0.25)


@trick("trickle_body")
def _trickle_body(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    """Proper headers at once, then the body one byte every quarter second."""
    whole = response(200, dumps(b.body()), request_id=rid)
    head, _, body = whole.partition(b"\r\n\r\n")
    return Action(body, close=True, trickle=0.25, prefix=head + b"\r\n\r\n")


@trick("deep_json")
def _deep_json(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    return Action(response(200, deep_json(), request_id=rid))


@trick("gzip_bomb")
def _gzip_bomb(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    bomb = gzip_bomb()
    return Action(response(200, bomb, request_id=rid, headers=[("Content-Encoding", "gzip")]))


@trick("error_body_200")
def _error_body_200(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    body = {"error": {"message": "Something went wrong", "type": "server_error", "code": None}}
    return Action(response(200, dumps(body), request_id=rid))


@trick("redirect_loop")
def _redirect_loop(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    return Action(
        response(302, b"", request_id=rid, headers=[("Location", r.path)], reason="Found")
    )


@trick("bad_utf8")
def _bad_utf8(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    return Action(response(200, b'{"id": "\xff\xfe\xfd"}', request_id=rid))


@trick("status_line_garbage")
def _status_line_garbage(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    return Action(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n{}", close=True)


@trick("close_early")
def _close_early(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    return Action(b"", close=True)


@trick("lying_length")
def _lying_length(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {JSON_TYPE}\r\nContent-Length: 5000\r\n"
    return Action((head + f"x-request-id: {rid}\r\n\r\n").encode() + b'{"id": "vsf', close=True)


@trick("html_200")
def _html_200(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    page = b"<html><body><h1>Please log in to the corporate proxy</h1></body></html>"
    return Action(response(200, page, content_type="text/html", request_id=rid))


@trick("status_999")
def _status_999(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    return Action(response(999, dumps({"error": "the status is 999"}), request_id=rid))


# -- tricks on a retrieve ----------------------------------------------------------------------


@trick("nan")
def _nan(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    text = json.dumps(b.body()).replace(f'"completed": {b.counts["completed"]}', '"completed": NaN')
    text = text.replace(f'"total": {b.total}', '"total": Infinity')
    return Action(response(200, text.encode(), request_id=rid))


@trick("huge_number")
def _huge_number(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    text = json.dumps(b.body()).replace(f'"total": {b.total}', '"total": ' + "9" * 400)
    return Action(response(200, text.encode(), request_id=rid))


@trick("duplicate_keys")
def _duplicate_keys(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    """The status twice: completed first, in_progress last (the last one counts)."""
    text = json.dumps(b.body(status="completed"))[:-1] + ', "status": "in_progress"}'
    return Action(response(200, text.encode(), request_id=rid))


@trick("control_char_id")
def _control_char_id(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    body = b.body(id=b.batch_id + "\u0000\u001b[2J\u2028")
    return Action(response(200, dumps(body), request_id=rid))


@trick("wrong_batch")
def _wrong_batch(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    return Action(response(200, dumps(b.body(id="vsfb_someone_else")), request_id=rid))


@trick("unicode_status")
def _unicode_status(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    return Action(response(200, dumps(b.body(status='完了"}\\')), request_id=rid))


@trick("absurd_hints")
def _absurd_hints(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    """An in-progress reply whose advisory headers are nonsense."""
    headers = [
        ("openai-poll-after-ms", "-5"),
        ("x-ratelimit-limit-requests", "banana"),
        ("x-ratelimit-remaining-requests", "-1"),
        ("x-ratelimit-reset-requests", "soon"),
        ("retry-after", "tomorrow"),
    ]
    counts = {**b.counts, "in_progress": b.total, "completed": 0, "failed": 0}
    body = b.body(status="in_progress", file_counts=counts)
    return Action(response(200, dumps(body), request_id=rid, headers=headers))


# -- tricks on a file list -----------------------------------------------------------------------


@trick("has_more_string")
def _has_more_string(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    data, _ = _page(b, r)
    body = {"object": "list", "data": data, "has_more": "true"}
    return Action(response(200, dumps(body), request_id=rid))


@trick("null_data")
def _null_data(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    return Action(response(200, dumps({"object": "list", "data": None}), request_id=rid))


@trick("file_control_id")
def _file_control_id(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    data = [{"id": "file-\u0007\u001b]0;pwned\u0007", "status": "failed", "last_error": None}]
    body = {"object": "list", "data": data, "has_more": False}
    return Action(response(200, dumps(body), request_id=rid))


# -- tricks that paste the caller's key into what they say ----------------------------------------


@trick("echo_500")
def _echo_500(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    body = {"error": {"message": f"Upstream refused key {r.credential} for {r.path}"}}
    return Action(response(500, dumps(body), request_id=rid))


@trick("echo_400_detail")
def _echo_400_detail(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    body = {"detail": f"No batch found for credential {r.credential}"}
    return Action(response(400, dumps(body), request_id=rid))


@trick("echo_html")
def _echo_html(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    page = f"<html><body>502: proxy saw Authorization {r.credential}</body></html>".encode()
    return Action(response(502, page, content_type="text/html", request_id=rid))


@trick("echo_request_id")
def _echo_request_id(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    body = dumps({"error": {"message": "try again"}})
    return Action(response(503, body, request_id=r.credential))


@trick("echo_status")
def _echo_status(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    return Action(response(200, dumps(b.body(status=r.credential)), request_id=rid))


@trick("echo_401")
def _echo_401(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    body = {"error": {"message": f"Incorrect API key provided: {r.credential}."}}
    return Action(response(401, dumps(body), request_id=rid))


@trick("echo_files")
def _echo_files(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    """The failed files, each with the caller's key as its error code and in its message."""
    data, more = _page(b, r)
    for item in data:
        item["last_error"] = {"code": r.credential, "message": f"key {r.credential} failed"}
    body = {"object": "list", "data": data, "has_more": more}
    return Action(response(200, dumps(body), request_id=rid))


def json_escaped(text: str) -> bytes:
    """``text`` as a JSON string whose every character is a ``\\uXXXX`` escape: the same text
    once decoded, and not one of its bytes in the body."""
    return ('"' + "".join(f"\\u{ord(ch):04x}" for ch in text) + '"').encode()


_PLACEHOLDER = "@@credential@@"


def _escaping(body: object, r: Request) -> bytes:
    """``body`` as JSON, with the caller's key JSON-escaped wherever the placeholder stands."""
    raw = dumps(body)
    escaped = json_escaped(r.credential)
    return raw.replace(f'"{_PLACEHOLDER}"'.encode(), escaped).replace(
        _PLACEHOLDER.encode(), escaped[1:-1]
    )


@trick("echo_status_escaped")
def _echo_status_escaped(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    return Action(response(200, _escaping(b.body(status=_PLACEHOLDER), r), request_id=rid))


@trick("echo_500_escaped")
def _echo_500_escaped(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    body = {"error": {"message": f"Upstream refused key {_PLACEHOLDER}", "code": _PLACEHOLDER}}
    return Action(response(500, _escaping(body, r), request_id=rid))


@trick("echo_401_escaped")
def _echo_401_escaped(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    body = {"error": {"message": f"Incorrect API key provided: {_PLACEHOLDER}."}}
    return Action(response(401, _escaping(body, r), request_id=rid))


@trick("echo_files_escaped")
def _echo_files_escaped(s: HostileServer, b: HostileBatch, r: Request, rid: str) -> Action:
    """The failed files, each with the caller's key, JSON-escaped, as its error code and in its
    message."""
    data, more = _page(b, r)
    for item in data:
        item["last_error"] = {"code": _PLACEHOLDER, "message": f"key {_PLACEHOLDER} failed"}
    body = {"object": "list", "data": data, "has_more": more}
    return Action(response(200, _escaping(body, r), request_id=rid))


# -- the server ----------------------------------------------------------------------------------


class HostileServer:
    """Serves ``batches`` on a loopback port from a thread; use as a context manager."""

    def __init__(self, batches: Sequence[HostileBatch]) -> None:
        self.batches = {b.batch_id: b for b in batches}
        self.url = ""
        #: Requests per (batch_id, endpoint).
        self.requests: Counter[tuple[str, str]] = Counter()
        #: Tricks played, by name.
        self.tricks_played: Counter[str] = Counter()
        #: The request id of every trick played (if its reply gets as far as its headers, the
        #: caller can read it), with the trick's name and the batch's id.
        self.trick_request_ids: dict[str, str] = {}
        self.trick_batches: dict[str, str] = {}
        #: When set, every API request gets this trick (e.g. ``echo_401``).
        self.everything: str | None = None
        self._retrieves: Counter[str] = Counter()
        self._lists: Counter[str] = Counter()
        self._serial = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> HostileServer:
        gzip_bomb(), deep_json()  # built before serving, not while a client waits
        self._thread = threading.Thread(target=self._run, name="hostile-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or not self.url:
            raise RuntimeError(f"the hostile server did not start: {self._failure!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __enter__ if it happens at start
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._connection(reader, writer)
            finally:
                tasks.discard(task)

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0, limit=MAX_HEAD)
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                request = _parse(head)
                length = request.headers.get("content-length", "0")
                if length.isdigit() and int(length):
                    await reader.readexactly(int(length))
                action = self._answer(request)
                writer.write(action.prefix)
                if action.trickle is None:
                    writer.write(action.data)
                    await writer.drain()
                else:
                    for byte in action.data:
                        writer.write(bytes([byte]))
                        await writer.drain()
                        await asyncio.sleep(action.trickle)
                if action.close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    # -- answering -----------------------------------------------------------------------------

    def _answer(self, request: Request) -> Action:
        self._serial += 1
        rid = f"req_hostile_{self._serial:06d}"
        parts = request.path.strip("/").split("/")
        # v1 / vector_stores / <vs> / file_batches / <batch> [/ files]
        if len(parts) not in (5, 6) or parts[1] != "vector_stores" or parts[3] != "file_batches":
            return Action(response(404, dumps({"error": {"message": "no route"}}), request_id=rid))
        batch = self.batches.get(parts[4])
        endpoint = "list" if len(parts) == 6 and parts[5] == "files" else "retrieve"
        self.requests[(parts[4], endpoint)] += 1
        if batch is None or batch.vector_store_id != parts[2]:
            body = {"error": {"message": f"No file batch found with id '{parts[4]}'."}}
            return Action(response(404, dumps(body), request_id=rid))
        name = self.everything or self._next_trick(batch, endpoint)
        if name is not None:
            self.tricks_played[name] += 1
            self.trick_request_ids[rid] = name
            self.trick_batches[rid] = batch.batch_id
            return TRICKS[name](self, batch, request, rid)
        if endpoint == "retrieve":
            return Action(response(200, dumps(batch.body()), request_id=rid))
        data, more = _page(batch, request)
        body = {
            "object": "list",
            "data": data,
            "first_id": "file-not-in-this-page",
            "last_id": "file-nor-this-one",
            "has_more": more,
        }
        return Action(response(200, dumps(body), request_id=rid))

    def _next_trick(self, batch: HostileBatch, endpoint: str) -> str | None:
        if batch.forever is not None and endpoint == "retrieve":
            return batch.forever
        if endpoint == "retrieve":
            n, script = self._retrieves[batch.batch_id], batch.retrieve_tricks
            self._retrieves[batch.batch_id] += 1
        else:
            n, script = self._lists[batch.batch_id], batch.list_tricks
            self._lists[batch.batch_id] += 1
        return script[n] if n < len(script) else None


def _parse(head: bytes) -> Request:
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    target = rest.rpartition(" ")[0] or rest
    parts = urlsplit(target)
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Request(method, parts.path, parse_qs(parts.query), headers)


def failed_files(batch_id: str, codes: Sequence[str], message: str = "failed") -> list[FailedFile]:
    """Failed files ``file-<batch>-<n>``, one per code."""
    return [FailedFile(f"file-{batch_id}-{n:04d}", code, message) for n, code in enumerate(codes)]


@dataclass
class Outcome:
    """What a finished batch should look like to the watcher."""

    status: str
    counts: dict[str, int]
    failed: dict[str, str] = field(default_factory=dict)  # file id → code


def expected(batch: HostileBatch) -> Outcome:
    return Outcome(batch.status, batch.counts, {f.id: f.code for f in batch.failed})
