"""The API client over real loopback HTTP against the simulator: parsing, pagination, every
fault mapped to its error, the headers it sends and reads, and a hostile server that cannot make
it raise anything but a :class:`~watcher.errors.WatcherError`."""

from __future__ import annotations

import asyncio
import gc
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from factories import FakeClock
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from watcher import __version__
from watcher.api.client import APIClient, Exchange
from watcher.api.headers import RateLimit as HeaderRateLimit
from watcher.api.models import BatchFile, FileBatch, LastError
from watcher.api.paging import file_page_limit
from watcher.api.settings import DEFAULT_BASE_URL, ClientSettings
from watcher.config.values import validate_base_url
from watcher.credentials import Secret, SecretSource
from watcher.errors import (
    APIError,
    AuthError,
    NotFound,
    PaginationError,
    ProtocolError,
    RateLimited,
    Transient,
    WatcherError,
    WrongBatch,
)
from watcher.simulator import BatchSpec, Fault, FaultKind, RateLimit, Simulator, serve_simulator

VS = "vs_client"
BATCH = "vsfb_client"  # 100 files over 100 s of the fake clock, 10 of them failing
DONE = "vsfb_done"  # 300 files, already completed, 150 of them failed
KEY = "sk-test-CLIENTKEY-0123456789abcdefXYZ"
OTHER_KEY = "sk-test-ROTATED-KEY-9876543210zyxwvu-longer"


class RecordingTransport(httpx.AsyncBaseTransport):
    """Real HTTP, keeping every request as it went on the wire."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


MakeClient = Callable[..., tuple[APIClient, RecordingTransport]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    return Simulator(
        [
            BatchSpec(
                VS, BATCH, total_files=100, duration_seconds=100, failed_files=10, created_at=1
            ),
            BatchSpec(VS, DONE, total_files=300, duration_seconds=0, failed_files=150),
        ],
        clock=clock,
        wall_clock=lambda: 1_700_000_000.0,
    )


@pytest.fixture
async def base_url(sim: Simulator) -> AsyncIterator[str]:
    async with serve_simulator(sim) as url:
        yield url


@pytest.fixture
async def make_client(base_url: str) -> AsyncIterator[MakeClient]:
    """Clients of the served simulator over recording real-HTTP transports; closed after."""
    clients: list[APIClient] = []

    def make(
        observer: Callable[[Exchange], None] | None = None, **changes: Any
    ) -> tuple[APIClient, RecordingTransport]:
        transport = RecordingTransport()
        settings = ClientSettings(base_url=base_url, timeout_seconds=5.0).replace(**changes)
        client = APIClient(settings, transport=transport, observer=observer)
        clients.append(client)
        return client, transport

    yield make
    for client in clients:
        await client.aclose()


def mock_client(handler: Callable[[httpx.Request], httpx.Response], **changes: Any) -> APIClient:
    """A client of a one-off reply shape the simulator cannot produce."""
    settings = ClientSettings(base_url="http://api.test/v1").replace(**changes)
    return APIClient(settings, transport=httpx.MockTransport(handler))


def query_of(record: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(record.query).items()}


async def collect(
    client: APIClient, batch_id: str, into: list[BatchFile] | None = None, **kwargs: Any
) -> list[BatchFile]:
    """Every file the client lists, also appended to ``into`` as they come."""
    files = [] if into is None else into
    async for item in client.iter_batch_files(VS, batch_id, **kwargs):
        files.append(item)
    return files


# -- what the API answers ---------------------------------------------------------------------


async def test_retrieve_parses_the_batch(
    make_client: MakeClient, sim: Simulator, clock: FakeClock
) -> None:
    """A retrieve gives the batch with its status and counts exactly as the server stated them."""
    client, _ = make_client()
    clock.advance(50)
    batch = await client.retrieve_batch(VS, BATCH)
    truth = sim.truth(BATCH)
    assert batch == FileBatch(
        id=BATCH,
        vector_store_id=VS,
        status="in_progress",
        file_counts=batch.file_counts,
        created_at=1,
    )
    assert batch.file_counts.as_dict() == truth["file_counts"]
    assert batch.file_counts.failed == 5
    assert not batch.is_terminal


async def test_a_reply_leaves_no_cycle_for_the_collector(make_client: MakeClient) -> None:
    """Each exchange's response is freed as soon as it is read, by reference counting: none is
    left in a reference cycle for the collector, whose full passes hold the event loop (at
    10,000 watches, 100-300 ms each) and would come every few seconds at the budget."""
    client, _ = make_client()
    await client.retrieve_batch(VS, BATCH)  # the connection and the pool are made
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds unreachable is kept, for a look
    try:
        for _ in range(5):
            await client.retrieve_batch(VS, BATCH)
            await collect(client, DONE, status="failed")
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, httpx.Response | httpx.Request)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


async def test_failed_files_come_from_every_page_once(
    make_client: MakeClient, sim: Simulator
) -> None:
    """150 failed files arrive over two pages of 100, each once, paged by the last id seen."""
    client, _ = make_client()
    files = await collect(client, DONE, status="failed")
    truth = sim.truth(DONE)["failed_files"]
    assert [f.id for f in files] == [t["id"] for t in truth]
    assert len({f.id for f in files}) == 150
    assert all(f.status == "failed" for f in files)
    assert [f.last_error.as_dict() if f.last_error else None for f in files] == [
        {"code": t["code"], "message": t["message"]} for t in truth
    ]
    first, second = (query_of(r) for r in sim.stats.recent(batch_id=DONE))
    assert first == {"limit": "100", "order": "asc", "filter": "failed"}
    assert second == {**first, "after": files[99].id}


async def test_pagination_loop_stops_with_pagination_error(
    make_client: MakeClient, sim: Simulator
) -> None:
    """A server answering the same page with has_more forever is stopped at the repeated cursor."""
    client, _ = make_client()
    sim.inject(Fault(FaultKind.PAGINATION_LOOP), DONE)
    with pytest.raises(PaginationError, match="repeat cursor") as caught:
        await collect(client, DONE, status="failed")
    records = sim.stats.recent(batch_id=DONE)
    assert len(records) == 2
    assert caught.value.status == 200
    assert caught.value.request_id == records[-1].request_id


async def test_empty_page_claiming_more_stops_with_pagination_error(
    make_client: MakeClient, sim: Simulator
) -> None:
    """An empty page that says has_more ends the listing instead of asking again."""
    client, _ = make_client()
    sim.inject(Fault(FaultKind.EMPTY_PAGE, times=1), DONE)
    with pytest.raises(PaginationError, match="empty") as caught:
        await collect(client, DONE, status="failed")
    [record] = sim.stats.recent(batch_id=DONE)
    assert caught.value.request_id == record.request_id


async def test_page_bound_stops_with_pagination_error(
    make_client: MakeClient, sim: Simulator
) -> None:
    """A list longer than ``max_pages`` yields what it read, then stops with a PaginationError."""
    client, _ = make_client()
    seen: list[BatchFile] = []
    with pytest.raises(PaginationError, match="more than 1 pages"):
        await collect(client, DONE, status="failed", max_pages=1, into=seen)
    assert len(seen) == 100
    assert len(sim.stats.recent(batch_id=DONE)) == 1


async def test_cancel_asks_the_server_to_cancel(make_client: MakeClient, sim: Simulator) -> None:
    """A cancel is a POST to .../cancel and returns the batch as the server now reports it."""
    client, transport = make_client()
    batch = await client.cancel_batch(VS, BATCH)
    assert batch.id == BATCH
    assert batch.status == "cancelling"
    assert sim.truth(BATCH)["cancel_requested"] is True
    [request] = transport.requests
    assert request.method == "POST"
    assert request.url.path == f"/v1/vector_stores/{VS}/file_batches/{BATCH}/cancel"


async def test_unknown_status_is_parsed_and_kept(make_client: MakeClient, sim: Simulator) -> None:
    """A status the API does not document is kept as it came, and is not terminal."""
    client, _ = make_client()
    sim.inject(Fault(FaultKind.UNKNOWN_STATUS, value="paused", times=1))
    batch = await client.retrieve_batch(VS, BATCH)
    assert batch.status == "paused"
    assert not batch.is_terminal


# -- each fault, the right error ----------------------------------------------------------------


async def test_refused_key_is_auth_error_without_the_key(
    make_client: MakeClient, sim: Simulator
) -> None:
    """A 401 is an AuthError with status and request id, and never shows the key we sent."""
    sim.set_api_key(OTHER_KEY)
    client, _ = make_client(api_key=Secret(KEY))
    with pytest.raises(AuthError) as caught:
        await client.retrieve_batch(VS, BATCH)
    [record] = sim.stats.recent()
    assert caught.value.status == 401
    assert caught.value.request_id == record.request_id
    for shown in (str(caught.value), repr(caught.value), caught.value.message):
        assert KEY not in shown
        assert "CLIENTKEY" not in shown


async def test_missing_key_is_auth_error_that_says_so(
    make_client: MakeClient, sim: Simulator
) -> None:
    """A 401 with no key configured says that no key is configured."""
    sim.set_api_key(KEY)
    client, transport = make_client()
    with pytest.raises(AuthError, match="no API key is configured"):
        await client.retrieve_batch(VS, BATCH)
    assert "authorization" not in transport.requests[0].headers


@pytest.mark.parametrize(
    "echo",
    [
        f"Incorrect API key provided: {KEY}.",
        "Incorrect API key provided: sk-test-***********************XYZ.",
    ],
)
async def test_key_echoed_by_the_server_is_redacted(echo: str) -> None:
    """A key the server echoes in its 401 message, whole or masked, is cut from the error."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"message": echo, "code": "invalid_api_key"}}
        return httpx.Response(401, json=body, headers={"x-request-id": "req_echo"})

    async with mock_client(handler, api_key=Secret(KEY)) as client:
        with pytest.raises(AuthError) as caught:
            await client.retrieve_batch(VS, BATCH)
    assert caught.value.request_id == "req_echo"
    assert "[redacted]" in str(caught.value)
    for shown in (str(caught.value), repr(caught.value)):
        assert KEY not in shown
        assert "sk-test-" not in shown


def json_escaped(text: str) -> str:
    """``text`` as a JSON string whose every character is a ``\\uXXXX`` escape."""
    return '"' + "".join(f"\\u{ord(ch):04x}" for ch in text) + '"'


#: A key with no prefix a pattern could catch (an Azure-style key): only the key itself can.
AZURE_KEY = "0123456789abcdef0123456789abcdef"


def escaping_echo(key: str) -> Callable[[httpx.Request], httpx.Response]:
    """A server that quotes ``key`` JSON-escaped into everything it says: a batch's status
    and vector store id, each failed file's id, code and message, and error messages."""

    def handler(request: httpx.Request) -> httpx.Response:
        k = json_escaped(key)
        path = request.url.path
        if path.endswith("/files"):
            item = (
                f'{{"id": "file-1", "status": "failed", "last_error": '
                f'{{"code": {k}, "message": "the key {k[1:-1]} was refused"}}}}'
            )
            other = f'{{"id": {k}, "status": "failed", "last_error": null}}'
            body = f'{{"object": "list", "data": [{item}, {other}], "has_more": false}}'
            return httpx.Response(200, content=body.encode(), headers={"x-request-id": "r"})
        if BATCH in path or path.endswith("/vsfb_wrong"):
            batch_id = f'"{BATCH}"' if BATCH in path else k  # a reply for "another" batch
            body = (
                f'{{"id": {batch_id}, "object": "vector_store.file_batch", "status": {k}, '
                f'"vector_store_id": "{VS}", "file_counts": {{"failed": 1, "total": 1}}, {k}: 1}}'
            )
            return httpx.Response(200, content=body.encode(), headers={"x-request-id": "r"})
        status = {"vsfb_401": 401, "vsfb_400": 400, "vsfb_500": 500}[path.rsplit("/", 1)[-1]]
        message = f'"Incorrect API key provided: {k[1:-1]}."'
        body = f'{{"error": {{"message": {message}, "code": {k}}}, "detail": {k}}}'
        return httpx.Response(status, content=body.encode(), headers={"x-request-id": "r"})

    return handler


@pytest.mark.parametrize("key", [KEY, AZURE_KEY])
async def test_a_key_echoed_json_escaped_is_redacted_once_decoded(key: str) -> None:
    """A key the server spells with JSON escapes, which its bytes never show, is cut from every
    string once decoded: statuses, ids, error codes and messages, and errors' messages."""
    async with mock_client(escaping_echo(key), api_key=Secret(key)) as client:
        batch = await client.retrieve_batch(VS, BATCH)
        files = [f async for f in client.iter_batch_files(VS, BATCH, status="failed")]
        errors = []
        for batch_id in ("vsfb_401", "vsfb_400", "vsfb_500", "vsfb_wrong"):
            with pytest.raises(APIError) as caught:
                await client.retrieve_batch(VS, batch_id)
            errors.append(caught.value)
    shown = [repr(batch), repr(files), *(f"{e!s} {e!r} {e.message}" for e in errors)]
    for text in shown:
        assert key not in text
    assert batch.status == "[redacted]"
    assert files[0].last_error == LastError("[redacted]", "the key [redacted] was refused")
    assert files[1].id == "[redacted]"
    assert [type(e) for e in errors] == [AuthError, APIError, Transient, WrongBatch]
    assert all("[redacted]" in e.message for e in errors)


async def test_vanished_batch_is_not_found(make_client: MakeClient, sim: Simulator) -> None:
    """A 404 for a batch that is gone is NotFound with status and request id."""
    client, _ = make_client()
    sim.vanish(BATCH)
    with pytest.raises(NotFound) as caught:
        await client.retrieve_batch(VS, BATCH)
    [record] = sim.stats.recent()
    assert (caught.value.status, caught.value.request_id) == (404, record.request_id)
    with pytest.raises(NotFound):
        await client.retrieve_batch("vs_elsewhere", DONE)


@pytest.mark.parametrize(
    "detail",
    [
        "Vector store file batch vsfb_client not found",
        "Invalid batch id: 'vsfb_client'",
        "No file batch found with id 'vsfb_client'.",
    ],
)
async def test_400_that_says_not_found_is_not_found(detail: str) -> None:
    """A llama-stack-style 400 whose body says the batch is unknown is NotFound."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"detail": detail}, headers={"x-request-id": "req_ls"})

    async with mock_client(handler) as client:
        with pytest.raises(NotFound) as caught:
            await client.retrieve_batch(VS, BATCH)
    assert (caught.value.status, caught.value.request_id) == (400, "req_ls")


async def test_other_400_is_an_api_error_not_not_found(
    make_client: MakeClient, sim: Simulator
) -> None:
    """A 400 about something else (a missing query parameter) is not taken for NotFound."""
    sim.required_query = {"api-version": None}
    client, _ = make_client()
    with pytest.raises(APIError) as caught:
        await client.retrieve_batch(VS, BATCH)
    assert type(caught.value) is APIError
    assert caught.value.status == 400
    assert "api-version" in str(caught.value)


async def test_429_with_retry_after_ms_gives_the_exact_wait(
    make_client: MakeClient, sim: Simulator
) -> None:
    """A 429 with retry-after-ms and Retry-After is RateLimited with the millisecond wait."""
    client, _ = make_client()
    sim.inject(Fault(FaultKind.RATE_LIMIT, times=1, retry_after_seconds=2.5))
    with pytest.raises(RateLimited) as caught:
        await client.retrieve_batch(VS, BATCH)
    [record] = sim.stats.recent()
    assert caught.value.retry_after == 2.5
    assert (caught.value.status, caught.value.request_id) == (429, record.request_id)


async def test_429_without_wait_headers_has_no_retry_after(
    make_client: MakeClient, sim: Simulator
) -> None:
    """A bare 429 is RateLimited with ``retry_after`` None."""
    client, _ = make_client()
    sim.inject(Fault(FaultKind.RATE_LIMIT_BARE, times=1))
    with pytest.raises(RateLimited) as caught:
        await client.retrieve_batch(VS, BATCH)
    assert caught.value.retry_after is None
    assert caught.value.status == 429


async def test_429_of_the_servers_rate_limit_waits_for_the_window(
    make_client: MakeClient, sim: Simulator, clock: FakeClock
) -> None:
    """Over the server's rate limit, the wait is what is left of its window."""
    client, _ = make_client()
    sim.set_rate_limit(RateLimit(1, 60))
    await client.retrieve_batch(VS, BATCH)
    clock.advance(15)
    with pytest.raises(RateLimited) as caught:
        await client.retrieve_batch(VS, BATCH)
    assert caught.value.retry_after == 45.0


async def test_429_with_retry_after_seconds_only() -> None:
    """A 429 with only Retry-After in seconds is RateLimited with that wait."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "7"}
        )

    async with mock_client(handler) as client:
        with pytest.raises(RateLimited) as caught:
            await client.retrieve_batch(VS, BATCH)
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_transient(
    make_client: MakeClient, sim: Simulator, status: int
) -> None:
    """A 5xx with a JSON error body is Transient with its status and request id."""
    client, _ = make_client()
    sim.inject(Fault(FaultKind.SERVER_ERROR, status=status, times=1))
    with pytest.raises(Transient) as caught:
        await client.retrieve_batch(VS, BATCH)
    [record] = sim.stats.recent()
    assert (caught.value.status, caught.value.request_id) == (status, record.request_id)
    assert "had an error" in str(caught.value)


async def test_html_error_page_is_transient(make_client: MakeClient, sim: Simulator) -> None:
    """A proxy's HTML error page is Transient, its HTML kept out of the message."""
    client, _ = make_client()
    sim.inject(Fault(FaultKind.HTML_ERROR, times=1))
    with pytest.raises(Transient, match="HTML page") as caught:
        await client.retrieve_batch(VS, BATCH)
    assert caught.value.status == 502
    assert caught.value.request_id is None
    assert "<html>" not in str(caught.value)


async def test_html_page_with_200_is_transient() -> None:
    """A 200 HTML page (a captive portal) is Transient, not a parse failure of the API."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, html="<html><body>Sign in to the Wi-Fi</body></html>")

    async with mock_client(handler) as client:
        with pytest.raises(Transient, match="HTML") as caught:
            await client.retrieve_batch(VS, BATCH)
    assert caught.value.status == 200


async def test_truncated_json_is_protocol_error(make_client: MakeClient, sim: Simulator) -> None:
    """A 200 whose JSON is cut short is a ProtocolError with status and request id."""
    client, _ = make_client()
    sim.inject(Fault(FaultKind.TRUNCATED_JSON, times=1))
    with pytest.raises(ProtocolError, match="not valid JSON") as caught:
        await client.retrieve_batch(VS, BATCH)
    [record] = sim.stats.recent()
    assert (caught.value.status, caught.value.request_id) == (200, record.request_id)


@pytest.mark.parametrize("kind", [FaultKind.DROP, FaultKind.CUT_BODY])
async def test_broken_connection_is_transient(
    make_client: MakeClient, sim: Simulator, kind: FaultKind
) -> None:
    """A connection closed before the reply, or in the middle of its body, is Transient."""
    client, _ = make_client()
    sim.inject(Fault(kind, times=1))
    with pytest.raises(Transient) as caught:
        await client.retrieve_batch(VS, BATCH)
    assert caught.value.status is None
    assert (await client.retrieve_batch(VS, BATCH)).id == BATCH


async def test_slow_reply_past_the_timeout_is_transient(
    make_client: MakeClient, sim: Simulator
) -> None:
    """A reply later than the client's timeout is Transient and says it timed out."""
    client, _ = make_client(timeout_seconds=0.1)
    sim.inject(Fault(FaultKind.SLOW, delay_seconds=0.5, times=1))
    with pytest.raises(Transient, match=r"no reply within 0\.1s") as caught:
        await client.retrieve_batch(VS, BATCH)
    assert caught.value.status is None


async def test_reply_over_the_size_cap_is_protocol_error(
    make_client: MakeClient, sim: Simulator
) -> None:
    """A reply larger than ``max_response_bytes`` is refused as a ProtocolError."""
    client, _ = make_client(max_response_bytes=4096)
    assert (await client.retrieve_batch(VS, DONE)).id == DONE
    with pytest.raises(ProtocolError, match="cap") as caught:
        await collect(client, DONE, status="failed")
    [_, listed] = sim.stats.recent()
    assert (caught.value.status, caught.value.request_id) == (200, listed.request_id)


async def test_streamed_reply_over_the_size_cap_is_protocol_error() -> None:
    """A reply with no Content-Length is cut off once it grows past the cap."""

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"id": "vsfb_client", "status": "in_progress", "pad": "'
        for _ in range(1000):
            yield b"x" * 1024

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    async with mock_client(handler, max_response_bytes=64 * 1024) as client:
        with pytest.raises(ProtocolError, match="cap"):
            await client.retrieve_batch(VS, BATCH)


async def test_reply_for_another_batch_is_protocol_error() -> None:
    """A reply about another batch than the one asked for is a ProtocolError."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = {"id": "vsfb_other", "vector_store_id": VS, "status": "completed"}
        return httpx.Response(200, json=body, headers={"x-request-id": "req_mix"})

    async with mock_client(handler) as client:
        with pytest.raises(ProtocolError, match="vsfb_other") as caught:
            await client.retrieve_batch(VS, BATCH)
    assert caught.value.request_id == "req_mix"


async def test_a_cookie_the_server_sets_is_never_sent_back() -> None:
    """The client keeps no cookie jar: what a server sets is not sent with the next request
    (an API key's requests need none, and a hostile server could fill a jar)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"id": BATCH, "vector_store_id": VS, "status": "in_progress"}
        return httpx.Response(200, json=body, headers={"set-cookie": "session=abc; Path=/"})

    async with mock_client(handler) as client:
        for _ in range(2):
            await client.retrieve_batch(VS, BATCH)
    assert len(seen) == 2
    assert "cookie" not in seen[1].headers


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("api.openai.com/v1", "not an http(s) URL"),
        ("ftp://host/v1", "not an http(s) URL"),
        ("http://127.0.0.1:99999/v1", "Port out of range"),
        ("http://127.0.0.1:port/v1", "Port could not be cast"),
        ("http://exa mple.com/v1", "spaces"),
        ("http://[::1/v1", "Invalid IPv6 URL"),
        ("http://host/v1?api-version=1", "query"),
    ],
)
def test_malformed_base_url_is_refused_before_any_request(url: str, problem: str) -> None:
    """A base URL no request could reach is refused at once, naming it and what is wrong."""
    with pytest.raises(ValueError, match=re.escape(problem)) as caught:
        validate_base_url(url)
    assert repr(url) in str(caught.value)
    with pytest.raises(ValueError, match=re.escape(problem)):
        APIClient(ClientSettings(base_url=url))


def test_good_base_urls_are_kept_without_the_trailing_slash() -> None:
    """OpenAI, Azure and local URLs pass, with any trailing slash dropped."""
    assert validate_base_url("https://api.openai.com/v1/") == "https://api.openai.com/v1"
    azure = "https://res.openai.azure.com/openai/v1"
    assert validate_base_url(azure) == azure
    assert validate_base_url("http://[::1]:8080/v1") == "http://[::1]:8080/v1"


# -- headers, both ways -------------------------------------------------------------------------


async def test_poll_hint_and_rate_limit_headers_reach_the_reply_meta(
    make_client: MakeClient, sim: Simulator
) -> None:
    """``openai-poll-after-ms`` and ``x-ratelimit-*`` arrive parsed in ``Reply.meta``."""
    sim.poll_after_ms = 1500
    sim.set_rate_limit(RateLimit(100, 360))
    client, _ = make_client()
    reply = await client.retrieve_batch_reply(VS, BATCH)
    [record] = sim.stats.recent()
    assert reply.value.id == BATCH
    assert reply.meta.status == 200
    assert reply.meta.request_id == record.request_id
    assert reply.meta.poll_after == 1.5
    assert reply.meta.rate_limit == HeaderRateLimit(limit=100, remaining=99, reset_seconds=360.0)


async def test_observer_sees_every_exchange(make_client: MakeClient, sim: Simulator) -> None:
    """The observer hears of each exchange, good or bad, with or without a response."""
    seen: list[Exchange] = []
    client, _ = make_client(observer=seen.append)
    await client.retrieve_batch(VS, BATCH)
    sim.inject(Fault(FaultKind.SERVER_ERROR, times=1))
    with pytest.raises(Transient):
        await client.retrieve_batch(VS, BATCH)
    sim.inject(Fault(FaultKind.DROP, times=1))
    with pytest.raises(Transient):
        await client.retrieve_batch(VS, BATCH)
    await collect(client, DONE, status="failed")
    await client.cancel_batch(VS, BATCH)
    assert [(e.endpoint, e.status) for e in seen] == [
        ("retrieve", 200),
        ("retrieve", 500),
        ("retrieve", None),
        ("list_files", 200),
        ("list_files", 200),
        ("cancel", 200),
    ]
    assert seen[2].meta is None
    assert seen[1].meta is not None
    assert seen[1].meta.request_id is not None
    assert all(e.seconds >= 0 for e in seen)


async def test_azure_style_sends_api_key_and_the_extra_query(
    make_client: MakeClient, sim: Simulator
) -> None:
    """Azure auth sends ``api-key`` and ``api-version`` on every request, and the server that
    requires both accepts them."""
    sim.set_api_key(KEY)
    sim.required_query = {"api-version": "2025-04-01-preview"}
    client, transport = make_client(
        api_key=Secret(KEY), auth="azure", query={"api-version": "2025-04-01-preview"}
    )
    assert (await client.retrieve_batch(VS, BATCH)).id == BATCH
    assert len(await collect(client, DONE, status="failed")) == 150
    assert (await client.cancel_batch(VS, BATCH)).status == "cancelling"
    assert len(transport.requests) == 4
    for request in transport.requests:
        assert request.headers["api-key"] == KEY
        assert "authorization" not in request.headers
        assert request.url.params["api-version"] == "2025-04-01-preview"
    bearer, _ = make_client(api_key=Secret(KEY))
    with pytest.raises(APIError) as caught:
        await bearer.retrieve_batch(VS, BATCH)
    assert caught.value.status == 400


async def test_bearer_style_sends_authorization_and_identity_headers(
    make_client: MakeClient, sim: Simulator
) -> None:
    """Bearer auth sends the key, the organization, the project and our User-Agent."""
    sim.set_api_key(KEY)
    client, transport = make_client(api_key=Secret(KEY), organization="org-7", project="proj_9")
    await client.retrieve_batch(VS, BATCH)
    [request] = transport.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "api-key" not in request.headers
    assert request.headers["openai-organization"] == "org-7"
    assert request.headers["openai-project"] == "proj_9"
    assert request.headers["user-agent"] == f"batch-watcher/{__version__}"
    plain, plain_transport = make_client(api_key=Secret(KEY))
    await plain.retrieve_batch(VS, BATCH)
    assert "openai-organization" not in plain_transport.requests[0].headers
    assert "openai-project" not in plain_transport.requests[0].headers


async def test_settings_from_the_environment(base_url: str, sim: Simulator) -> None:
    """``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` are where the client goes and what it sends."""
    sim.set_api_key(KEY)
    settings = ClientSettings.from_env({"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": KEY})
    async with APIClient(settings) as client:
        assert (await client.retrieve_batch(VS, BATCH)).id == BATCH
    defaults = ClientSettings.from_env({})
    assert defaults.base_url == DEFAULT_BASE_URL
    assert isinstance(defaults.api_key, SecretSource)
    assert defaults.api_key.current() is None
    overridden = ClientSettings.from_env({"OPENAI_BASE_URL": base_url}, base_url="http://x/v1")
    assert overridden.base_url == "http://x/v1"


async def test_key_file_rotated_at_run_time_is_picked_up(
    make_client: MakeClient, sim: Simulator, tmp_path: Path
) -> None:
    """A key file rewritten while the client runs is read again, and the new key is sent."""
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    source_clock = FakeClock()
    source = SecretSource(file=key_file, recheck_seconds=1.0, clock=source_clock)
    sim.set_api_key(KEY)
    client, _ = make_client(api_key=source)
    await client.retrieve_batch(VS, BATCH)
    sim.set_api_key(OTHER_KEY)
    with pytest.raises(AuthError):
        await client.retrieve_batch(VS, BATCH)
    key_file.write_text(OTHER_KEY + "\n", encoding="utf-8")
    source_clock.advance(1.0)
    assert (await client.retrieve_batch(VS, BATCH)).id == BATCH


# -- a hostile server ---------------------------------------------------------------------------

HEADER_NAMES = (
    "content-type",
    "content-length",
    "content-encoding",
    "retry-after",
    "retry-after-ms",
    "x-request-id",
    "openai-poll-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)
ODD_VALUES = (
    b"application/json",
    b"text/html; charset=utf-8",
    b"gzip",
    b"-1",
    b"0",
    b"nan",
    b"inf",
    b"1e999",
    b"99999999999999999999999",
    "²".encode(),
    "٣٤".encode(),
    b"6m0s",
    b"1h2m3.5s",
    b"Wed, 21 Oct 2015 07:28:00 GMT",
    b"Fri, 31 Dec 9999 23:59:59 GMT",
    b"Mon, 01 Jan 2024 00:00:00 +9999",
    b"",
)
header_values = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.integers(-(10**20), 10**20).map(lambda n: str(n).encode()),
    st.binary(max_size=24).filter(lambda b: not any(c in b for c in b"\r\n\x00")),
    st.text(max_size=16).map(str.encode).filter(lambda b: not any(c in b for c in b"\r\n\x00")),
)
headers_strategy = st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values), max_size=6)


def _json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function: hypothesis reads a lambda's source to check that it recurses, and
    # misreads this one when it spans lines.
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    _json_containers,
    max_leaves=16,
)
batch_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from([BATCH, "", "x" * 200]) | json_values,
        "vector_store_id": st.just(VS) | json_values,
        "status": st.sampled_from(["in_progress", "completed", "paused", "bad\x00"]) | json_values,
        "file_counts": st.dictionaries(
            st.sampled_from(["in_progress", "completed", "failed", "cancelled", "total"]),
            json_values,
        )
        | json_values,
        "created_at": json_values,
    },
)
file_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["file-1", "file-2"]) | json_values,
        "status": json_values,
        "last_error": st.fixed_dictionaries(
            {}, optional={"code": json_values, "message": json_values}
        )
        | json_values,
    },
)
page_like = st.fixed_dictionaries(
    {},
    optional={"data": st.lists(file_like, max_size=3) | json_values, "has_more": json_values},
)
error_like = st.one_of(
    st.fixed_dictionaries({"error": st.fixed_dictionaries({"message": json_values}) | json_values}),
    st.fixed_dictionaries({"detail": json_values}),
)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    batch_like.map(lambda v: json.dumps(v).encode()),
    page_like.map(lambda v: json.dumps(v).encode()),
    error_like.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 200_000).map(_nested),
    st.integers(1, 5_000).map(lambda d: json.dumps({"error": {"message": 1}}).encode() * d),
)
statuses = st.one_of(
    st.sampled_from([200, 201, 204, 400, 401, 403, 404, 408, 409, 429, 500, 502, 503]),
    st.integers(100, 599),
)


async def _against(
    status: int, headers: list[tuple[str, bytes]], body: bytes, operation: str
) -> object:
    def handler(request: httpx.Request) -> httpx.Response:
        raw = [(name.encode(), value) for name, value in headers]
        return httpx.Response(status, headers=raw, content=body)

    async with mock_client(handler, max_response_bytes=256 * 1024) as client:
        if operation == "retrieve":
            return await client.retrieve_batch(VS, BATCH)
        if operation == "cancel":
            return await client.cancel_batch(VS, BATCH)
        return [f async for f in client.iter_batch_files(VS, BATCH, max_pages=3)]


async def _outcome(
    status: int, headers: list[tuple[str, bytes]], body: bytes, operation: str
) -> object:
    """What the client made of the reply: its value, or the WatcherError it raised."""
    try:
        return await _against(status, headers, body, operation)
    except WatcherError as exc:
        return exc


# Each part of a reply is drawn from a handful of shapes (a dozen statuses or any, seven kinds
# of body, three operations) and the worst cases are pinned as examples below: 200 examples
# combine them many times over (400 passed too, at twice the time).
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=statuses,
    headers=headers_strategy,
    body=bodies,
    operation=st.sampled_from(["retrieve", "list", "cancel"]),
)
@example(status=200, headers=[("content-length", "²".encode())], body=b"{}", operation="retrieve")
@example(status=200, headers=[], body=_nested(100_000), operation="list")
@example(
    status=429,
    headers=[("retry-after", b"Fri, 31 Dec 9999 23:59:59 GMT"), ("retry-after-ms", b"nan")],
    body=b"<html>",
    operation="cancel",
)
def test_a_hostile_server_gets_a_model_or_a_watcher_error(
    status: int, headers: list[tuple[str, bytes]], body: bytes, operation: str
) -> None:
    """Whatever status, headers and body a server sends, the client returns a model or raises a
    WatcherError, and an error after a reply carries that reply's status."""
    value = asyncio.run(_outcome(status, headers, body, operation))
    if isinstance(value, WatcherError):
        assert not isinstance(value, APIError) or value.status in (None, status)
        return
    if operation == "list":
        assert isinstance(value, list)
        assert all(isinstance(item, BatchFile) for item in value)
    else:
        assert isinstance(value, FileBatch)
        assert operation == "cancel" or value.id == BATCH
    assert 200 <= status < 300


@pytest.mark.parametrize(
    ("files", "pages"),
    [(None, 1000), (0, 5), (1, 6), (100, 6), (101, 7), (10_000, 115), (10**9, 1000)],
)
def test_a_file_list_may_take_the_pages_its_count_needs_and_a_margin(
    files: int | None, pages: int
) -> None:
    """A batch of ``files`` files may take the pages they need, plus five and a tenth, never
    more than the cap; with no count known, the cap."""
    assert file_page_limit(files) == pages
    assert file_page_limit(files, cap=50) == min(pages, 50)
