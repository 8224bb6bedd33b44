"""Hostile input: what servers, users and configuration files send is refused with the
project's own errors, never crashes, never echoes a secret, and never stores anything."""

from __future__ import annotations

import contextlib
import gzip
import hmac
import json
import math
import re
import sqlite3
import string
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import anyio
import anyio.from_thread
import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from watcher import logs
from watcher.api.client import APIClient
from watcher.api.settings import ClientSettings
from watcher.config import SECTIONS, WatchConfig, config_from_mapping, env_name, load_config
from watcher.credentials import Secret, SecretSource
from watcher.daemon.service import Daemon
from watcher.daemon.web import AppState, build_app
from watcher.errors import ConfigError, Transient, WatcherError
from watcher.logs import register_secret

VS = "vs_hostile"
BATCH = "vsfb_hostile"
_KEY_CHARS = string.ascii_letters + string.digits + "_-"


def _client(
    handler: Any, key: str | None = None, **settings: Any
) -> contextlib.AbstractAsyncContextManager[APIClient]:
    return APIClient(
        ClientSettings(
            base_url="http://127.0.0.1:9/v1",
            api_key=Secret(key) if key else None,
            **settings,
        ),
        transport=httpx.MockTransport(handler),
    )


async def _outcome(client: APIClient, operation: str) -> object:
    """What the client made of the server: a value, or the WatcherError it raised."""
    try:
        if operation == "retrieve":
            return await client.retrieve_batch_reply(VS, BATCH)
        return [f async for f in client.iter_batch_files(VS, BATCH, max_pages=3)]
    except WatcherError as exc:
        return exc


def _shown(outcome: object) -> str:
    """Everything of an outcome that could reach a log, a file, a page or a webhook."""
    if isinstance(outcome, WatcherError):
        return f"{outcome}|{outcome!r}|{getattr(outcome, 'request_id', '')}"
    return repr(outcome)


# -- what a server says: an echoed key, control characters, bombs, trickles ------------------

#: Where a server may paste the caller's key: (status, content type, body, request id), with
#: KEY standing for it.
ECHOES = [
    (500, "application/json", '{"error": {"message": "refused KEY"}}', None),
    (400, "application/json", '{"detail": "No batch found for KEY"}', None),
    (502, "text/html", "<html>proxy saw Bearer KEY</html>", None),
    (503, "application/json", '{"error": {"message": "again"}}', "KEY"),
    (200, "application/json", '{"id": "vsfb_hostile", "status": "KEY", "file_counts": {}}', None),
    (200, "application/json", '{"id": "KEY", "status": "completed"}', None),
    (200, "application/json", '{"id": "vsfb_hostile", "status": "completed"}', "req-KEY-1"),
    (
        200,
        "application/json",
        '{"data": [{"id": "KEY", "status": "failed", "last_error": {"code": "KEY", '
        '"message": "key KEY is bad"}}], "has_more": false}',
        None,
    ),
]


@settings(max_examples=150, deadline=None)
@given(
    key=st.text(_KEY_CHARS, min_size=20, max_size=60),
    echo=st.sampled_from(ECHOES),
    auth=st.sampled_from(["bearer", "azure"]),
    operation=st.sampled_from(["retrieve", "list"]),
    gzipped=st.booleans(),
)
def test_a_key_the_server_echoes_never_leaves_the_client(
    key: str, echo: tuple[int, str, str, str | None], auth: str, operation: str, gzipped: bool
) -> None:
    """Wherever a server pastes the caller's key (an error, a status, an id, a failed file's
    code or message, the request id), neither the value nor the error the client returns
    holds it."""
    status, content_type, body, request_id = echo

    def handler(request: httpx.Request) -> httpx.Response:
        sent = request.headers.get("api-key") or request.headers["authorization"].split()[-1]
        raw = body.replace("KEY", sent).encode()
        headers = {"content-type": content_type}
        if request_id is not None:
            headers["x-request-id"] = request_id.replace("KEY", sent)
        if gzipped:
            raw, headers["content-encoding"] = gzip.compress(raw), "gzip"
        return httpx.Response(status, headers=headers, content=raw)

    async def run() -> object:
        async with _client(handler, key, auth=auth) as client:
            return await _outcome(client, operation)

    assert key not in _shown(anyio.run(run))


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=300),
    where=st.sampled_from(["error", "detail", "last_error"]),
)
@example(text="bad\x1b[2J\x00 \ud800 file\nmessage\u2028", where="last_error")
@example(text="\ud800", where="error")
def test_server_text_arrives_as_one_printable_line(text: str, where: str) -> None:
    """Whatever a server writes in an error or a failed file's message (lone surrogates,
    escape sequences, NULs, line breaks), it arrives printable, on one line, and encodable."""
    if where == "last_error":
        item = {"id": "file-1", "status": "failed", "last_error": {"code": "x", "message": text}}
        body: dict[str, Any] = {"data": [item], "has_more": False}
        status = 200
    else:
        body = {"error": {"message": text}} if where == "error" else {"detail": text}
        status = 500

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=json.dumps(body).encode())

    async def run() -> object:
        async with _client(handler) as client:
            return await _outcome(client, "list")

    outcome = anyio.run(run)
    if isinstance(outcome, WatcherError):
        shown = str(outcome)
    else:
        assert isinstance(outcome, list)
        [file] = outcome
        assert file.last_error is not None
        shown = file.last_error.message
    assert shown.isprintable(), repr(shown)
    shown.encode("utf-8")


class _Chunks(httpx.AsyncByteStream):
    """A streamed body, in chunks, optionally one every ``pause`` seconds."""

    def __init__(self, data: bytes, size: int, pause: float = 0.0) -> None:
        self.data, self.size, self.pause = data, size, pause
        self.sent = 0  # chunks taken by the reader

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), self.size):
            if self.pause:
                await anyio.sleep(self.pause)
            self.sent += 1
            yield self.data[start : start + self.size]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compression_bomb_is_refused_without_inflating_it(encoding: str) -> None:
    """200 MiB of zeros squeezed into 200 KB are refused at the size cap: the reader stops
    within the first chunks of the compressed body instead of inflating the bomb."""
    zeros = b"0" * (200 * 2**20)
    bomb = gzip.compress(zeros, 9) if encoding == "gzip" else _deflate(zeros)
    cap = 2**20
    body = _Chunks(bomb, 16 * 1024)
    chunks = -(-len(bomb) // body.size)

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/json", "content-encoding": encoding}
        return httpx.Response(200, headers=headers, stream=body)

    async with _client(handler, max_response_bytes=cap) as client:
        with pytest.raises(WatcherError, match="over the 1048576-byte cap"):
            await client.retrieve_batch(VS, BATCH)
    # A MiB of zeros is about a KiB of deflate: the cap is crossed in the first chunk.
    assert chunks > 10
    assert body.sent <= 2


def _deflate(data: bytes) -> bytes:
    import zlib

    return zlib.compress(data, 9)


async def test_a_reply_with_an_encoding_we_did_not_ask_for_is_refused() -> None:
    """A body in an encoding the client never offered (brotli, or stacked) is a ProtocolError."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "gzip, deflate"
        headers = {"content-type": "application/json", "content-encoding": "br"}
        return httpx.Response(200, headers=headers, stream=_Chunks(b"\x8b\x00\x80{}\x03", 4))

    async with _client(handler) as client:
        with pytest.raises(WatcherError, match="Content-Encoding 'br'"):
            await client.retrieve_batch(VS, BATCH)


async def test_a_reply_that_trickles_in_is_cut_at_the_timeout() -> None:
    """A reply arriving a byte at a time, each within the read timeout, still ends at
    ``timeout_seconds`` for the whole exchange, as a Transient error."""
    body = json.dumps({"id": BATCH, "status": "completed", "vector_store_id": VS}).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/json", "x-request-id": "req_trickle"}
        return httpx.Response(200, headers=headers, stream=_Chunks(body, 1, pause=0.05))

    async with _client(handler, timeout_seconds=0.5) as client:
        with pytest.raises(Transient, match=r"no reply within 0\.5s") as caught:
            await client.retrieve_batch(VS, BATCH)
    assert caught.value.request_id == "req_trickle"


# -- secrets -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
@example("pässwörd", "pässwörd")
@example("日本語のトークン", "sk-ascii")
def test_secrets_of_any_characters_compare_and_register(a: str, b: str) -> None:
    """Secrets compare (in constant time) by value whatever their characters, and registering
    one for scrubbing never fails."""
    assert (Secret(a) == Secret(b)) is (a == b)
    assert Secret(a).matches(b) is (a == b)
    registered = list(logs._secrets)
    try:
        register_secret(Secret(a))
        register_secret(Secret(b))
    finally:  # the registry is the process's: leave no random "secret" to mask later logs
        logs._secrets[:] = registered


def test_the_control_api_compares_tokens_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every token presented to the control API is checked with ``hmac.compare_digest``."""
    token = "ctl-0123456789abcdef0123"
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    presented = [token, token[:-1], token + "x", "x" * len(token), "é"]
    with _control_app(tmp_path, {"CTL": token}) as ask:
        for candidate in presented:
            status, _ = ask("GET", b"/v1/watches", b"", [(b"authorization", _bearer(candidate))])
            assert status == (200 if candidate == token else 401)
    # Header bytes read as latin-1, as HTTP has it.
    as_read = [c.encode().decode("latin-1") for c in presented]
    assert calls == [(token.encode(), c.encode()) for c in as_read]


def _bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


# -- the control API ---------------------------------------------------------------------------

Ask = Any  # (method, target, body, headers) -> (status, body)


@contextlib.contextmanager
def _control_app(tmp_path: Path, environ: Mapping[str, str] | None = None) -> Iterator[Ask]:
    """The daemon's HTTP app with an open store, in an event loop in a thread; yields a
    function sending one raw ASGI request (nothing between it and the app normalises it)."""
    data = {
        "api": {"base_url": "http://127.0.0.1:9/v1"},
        "server": {"listen": "127.0.0.1:0", "control_token_env": "CTL"},
        "state": {"path": str(tmp_path / "state.sqlite3"), "max_watches": 5},
    }
    config = config_from_mapping(data, {"OPENAI_API_KEY": "sk-hostile-input", **(environ or {})})
    with anyio.from_thread.start_blocking_portal() as portal:
        daemon = portal.call(lambda: Daemon(config))
        portal.call(daemon.restore)
        state = AppState(
            engine=daemon.engine,
            metrics=daemon.metrics,
            store=daemon.store,
            poll=config.poll,
            control_token=config.server.control_token,
            loopback=True,
        )
        app = portal.call(lambda: build_app(state))

        def ask(
            method: str, target: bytes, body: bytes, headers: list[tuple[bytes, bytes]]
        ) -> tuple[int, bytes]:
            return portal.call(_asgi, app, method, target, body, headers)

        ask.daemon = daemon  # type: ignore[attr-defined]
        ask.portal = portal  # type: ignore[attr-defined]
        try:
            yield ask
        finally:
            portal.call(daemon.engine.client.aclose)
            portal.call(daemon.store.aclose)


async def _asgi(
    app: Any, method: str, target: bytes, body: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    """One request as uvicorn would hand it over: path percent-decoded, body in 16 KiB parts."""
    raw_path, _, query = target.partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9464),
    }
    parts = [body[i : i + 16384] for i in range(0, len(body), 16384)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": n < len(parts) - 1}
        for n, part in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


_VALID_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_HOSTILE_IDS = [
    "..", ".", "a/b", "a b", " a", "a\x00b", "a\nb", "a\x1b[2J", "x" * 129, "", "%2F", "é",
    "\ud800", "vs_1", "vsfb_1", "a:b.c-d_e",
]  # fmt: skip
_ids = st.sampled_from(_HOSTILE_IDS) | st.text(max_size=20)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_watch_bodies = st.fixed_dictionaries(
    {},
    optional={
        "vector_store_id": _ids | _json_values,
        "batch_id": _ids | _json_values,
        "labels": st.dictionaries(st.text(max_size=8), st.text(max_size=300) | _json_values)
        | _json_values,
        "deadline_seconds": st.sampled_from([-1, 0, 1e309, 2**80, "60", True]) | _json_values,
        "surprise": _json_values,
    },
)
_raw_bodies = st.one_of(
    _watch_bodies.map(lambda b: json.dumps(b).encode("utf-8", "surrogatepass")),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b"[" * 100_000, b'{"vector_store_id": NaN}', b"\xff\xfe{}"]),
    st.integers(64 * 1024 + 1, 300_000).map(lambda n: b'{"labels": "' + b"x" * n + b'"}'),
)


def _count_rows(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM watches").fetchone()[0])
    finally:
        db.close()


def _valid(body: bytes) -> bool:
    """Whether a body is a watch the README's rules accept (written apart from the app's)."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    if not isinstance(data, dict) or set(data) - {"vector_store_id", "batch_id", "labels"} - {
        "deadline_seconds"
    }:
        return False
    deadline = data.get("deadline_seconds")
    if deadline is not None and not (
        type(deadline) in (int, float) and 0 <= deadline < math.inf  # 0: no deadline
    ):
        return False
    ids = [data.get("vector_store_id"), data.get("batch_id")]
    if not all(isinstance(i, str) and _VALID_ID.fullmatch(i) and i not in (".", "..") for i in ids):
        return False
    labels = data.get("labels", {})
    return isinstance(labels, dict) and not labels


def test_hostile_requests_to_the_control_api_are_refused_and_store_nothing(
    tmp_path: Path,
) -> None:
    """Malformed JSON, huge bodies, wrong types and ids with ``/``, ``..``, spaces or control
    characters, in the body or the path, get a 4xx and leave no watch in the engine or on disk;
    only a valid watch is ever accepted."""
    with _control_app(tmp_path) as ask:
        daemon: Daemon = ask.daemon

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            body=_raw_bodies,
            declared=st.sampled_from(["exact", "none", "lie", "junk"]),
            vs=_ids,
            batch=_ids,
            safe=st.sampled_from(["", "/", "/.%"]),
            method=st.sampled_from(["GET", "DELETE", "PUT", "PATCH"]),
        )
        def run(body: bytes, declared: str, vs: str, batch: str, safe: str, method: str) -> None:
            length = {"exact": str(len(body)), "lie": "3", "junk": "1e9"}.get(declared)
            headers = [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")]
            if length is not None:
                headers.append((b"content-length", length.encode()))
            status, answer = ask("POST", b"/v1/watches", body, headers)
            accepted = status in (200, 201)
            if accepted:
                assert _valid(body), (body[:200], answer[:200])
                data = json.loads(body)
                assert ask.portal.call(
                    daemon.engine.remove, data["vector_store_id"], data["batch_id"]
                )
                ask.portal.call(daemon.store.flush)
            else:
                assert 400 <= status < 500, (status, answer[:300])
            enc = "utf-8", "surrogatepass"
            target = (
                "/v1/watches/"
                + quote(vs.encode(*enc), safe)
                + "/"
                + quote(batch.encode(*enc), safe)
            )
            status, answer = ask(method, target.encode("ascii"), b"", [(b"host", b"localhost")])
            assert 400 <= status < 500, (method, target, status, answer[:300])
            assert len(daemon.engine) == 0
            assert _count_rows(tmp_path / "state.sqlite3") == 0

        run()


def test_past_max_watches_a_watch_is_refused_clearly_and_not_stored(tmp_path: Path) -> None:
    """With ``state.max_watches`` watches held, one more is refused with 409 naming the key,
    and is neither watched nor written."""
    with _control_app(tmp_path) as ask:
        daemon: Daemon = ask.daemon
        headers = [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")]
        for n in range(5):
            body = json.dumps({"vector_store_id": VS, "batch_id": f"vsfb_{n}"}).encode()
            assert ask("POST", b"/v1/watches", body, headers)[0] == 201
        body = json.dumps({"vector_store_id": VS, "batch_id": "vsfb_one_more"}).encode()
        status, answer = ask("POST", b"/v1/watches", body, headers)
        assert status == 409
        assert "state.max_watches = 5" in json.loads(answer)["error"]
        assert daemon.engine.get(VS, "vsfb_one_more") is None
        assert _count_rows(tmp_path / "state.sqlite3") == 5


# -- configuration -------------------------------------------------------------------------

_KEYS = [(section, key) for section, model in SECTIONS.items() for key in model.model_fields]
_BAD_VALUES: list[object] = [
    "", "x", "-1", -1, 0, -0.5, 1e300, float("nan"), float("inf"), True, [], {}, [1], {"a": 1},
    {"a": [1]}, "ftp://x", "127.0.0.1", "host:99999", "a b", "\x00", "..", 2**60,
    "https://u:p@h/v1", "http://h/v1?q=1", "Ünïcode", "x" * 300,
]  # fmt: skip
_BAD = st.one_of(
    st.sampled_from(_BAD_VALUES),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.text(max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(where=st.sampled_from(_KEYS), value=_BAD)
def test_a_bad_value_in_the_file_is_refused_naming_its_key(
    where: tuple[str, str], value: object
) -> None:
    """Any one value a key does not accept is refused with problems about that key alone,
    each starting with ``section.key``."""
    section, key = where
    for problem in (found := _problems(lambda: config_from_mapping({section: {key: value}}, {}))):
        assert problem.startswith(f"{section}.{key}"), problem
    named = re.compile(rf"{section}\.{key}(\.\S+)?: ")  # the key, or a name inside its table
    assert not found or any(named.match(problem) for problem in found)


def _problems(load: Any) -> list[str]:
    """The problems a load reports, or none if it loads."""
    try:
        load()
    except ConfigError as exc:
        return exc.problems or ["(a ConfigError listing no problem)"]
    return []


@settings(max_examples=300, deadline=None)
@given(where=st.sampled_from(_KEYS), text=_BAD.map(str))
def test_a_bad_environment_override_is_refused_naming_its_variable(
    where: tuple[str, str], text: str
) -> None:
    """A variable ``BATCH_WATCHER_<SECTION>_<KEY>`` whose text the key does not accept is
    refused with a problem naming the key and the variable."""
    section, key = where
    variable = env_name(section, key)
    for problem in _problems(lambda: config_from_mapping({}, {variable: text})):
        assert variable in problem, problem
        assert problem.startswith((f"{section}.{key}: ", f"{variable}: ")), problem


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(list(WatchConfig.model_fields)), value=_BAD)
def test_a_bad_value_in_a_watch_table_is_refused_naming_the_table_and_key(
    key: str, value: object
) -> None:
    """In ``[[watch]]`` tables a value the key does not accept is refused as ``watch[i].key``."""
    watch: dict[str, object] = {"vector_store_id": "vs_1", "batch_id": "vsfb_1", key: value}
    document = {"watch": [{"vector_store_id": "vs_0", "batch_id": "b"}, watch]}
    for problem in _problems(lambda: config_from_mapping(document, {})):
        assert problem.startswith(f"watch[1].{key}"), problem


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.binary(max_size=300)
    | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
@example(raw=b"\xef\xbb\xbf[api]\nbase_url = 1")
@example(raw=b"[api]\ntimeout_seconds = nan\n[[watch]]\nbatch_id = '..'")
def test_any_file_loads_or_is_refused_with_config_error(raw: bytes) -> None:
    """Whatever bytes the configuration file holds, it loads or raises ConfigError, whose
    problems each start with the file or a key."""
    with _temp_file(raw) as path:
        found = _problems(lambda: load_config(path, {}))
    for problem in found:
        assert re.match(rf"({re.escape(str(path))}|[A-Za-z_]\w*(\[\d+\])?[.:])", problem), problem


@contextlib.contextmanager
def _temp_file(raw: bytes) -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.toml"
        path.write_bytes(raw)
        yield path


def test_secret_sources_read_from_files_of_any_bytes(tmp_path: Path) -> None:
    """A key file that is not UTF-8, or empty, reads as no secret rather than an error."""
    for raw in (b"\xff\xfe\x00", b"", b"\n \n"):
        path = tmp_path / "key"
        path.write_bytes(raw)
        assert SecretSource(file=path, recheck_seconds=0).current() is None
