"""The webhook notifier against a receiver on loopback: signatures, retries, and receivers that
misbehave."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
import stamina
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from watcher.api.models import FileCounts
from watcher.core.events import BatchFinished
from watcher.core.results import BatchResult
from watcher.core.states import Phase, State
from watcher.core.watch import Watch
from watcher.credentials import SecretSource
from watcher.daemon.notify import Notifier, signature, signing_key
from watcher.errors import ConfigError
from watcher.store.sqlite import SQLiteStore

#: An answer: status, extra headers, body.
Answer = tuple[int, dict[str, str], bytes]
#: A secret in the Standard Webhooks form: ``whsec_`` and base64 of random bytes.
WHSEC = "whsec_" + base64.b64encode(b"unit-test-key-0123456789abcdefgh").decode()


class Receiver:
    """A loopback HTTP server that answers each POST with the next scripted answer (then 204)."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.paths: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append((self.path, body))
                receiver.posts.append((dict(self.headers.items()), body))
                status, headers, reply = (
                    receiver.answers.pop(0) if receiver.answers else (204, {}, b"")
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[list[Answer]], Receiver]]:
    started: list[Receiver] = []

    def start(answers: list[Answer]) -> Receiver:
        started.append(Receiver(answers))
        return started[-1]

    yield start
    for r in started:
        r.stop()


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    """Retries without their waits, at most three attempts."""
    with stamina.set_testing(True, attempts=3):
        yield


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "state.sqlite3", outbox=True)
    await s.open()
    yield s
    await s.aclose()


async def finish(store: SQLiteStore, batch_id: str) -> BatchFinished:
    """Record a finished watch as the engine does, and the event it then announces."""
    counts = FileCounts(completed=3, failed=0, total=3)
    result = BatchResult(
        vector_store_id="vs_1",
        batch_id=batch_id,
        status=State.COMPLETED,
        file_counts=counts,
        failed_files=(),
        failed_by_code={},
        failed_files_listed=0,
        failed_files_truncated=False,
        failed_files_complete=True,
        elapsed_seconds=3.0,
        finished_at=1_700_000_003.0,
    )
    watch = replace(
        Watch.new("vs_1", batch_id, registered_at=1_700_000_000.0),
        file_counts=counts,
        result=result,
        finished_at=1_700_000_003.0,
        phase=Phase.FINISHED,
    )
    await store.save_finished(watch)
    return BatchFinished(vector_store_id="vs_1", batch_id=batch_id, result=watch.result)


def outbox_rows(store: SQLiteStore) -> int:
    """Rows in the outbox, read from the file through a connection of its own."""
    with closing(sqlite3.connect(store.path)) as db:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


async def deliver(notifier: Notifier, store: SQLiteStore, until: Callable[[], bool]) -> None:
    """Run the notifier until ``until()`` holds (at most 10 s), then stop it."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        with anyio.fail_after(10):
            while True:
                if until():
                    break
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()


def test_signature_is_the_standard_webhooks_v1_scheme() -> None:
    """``webhook-signature`` is ``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body``, with
    the key decoded from base64 after ``whsec_``, else the secret's own bytes."""
    body = b'{"batch_id":"vsfb_1"}'
    raw = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(raw).decode()
    assert signing_key(secret) == raw
    assert signing_key(secret.rstrip("=")) == raw  # unpadded, as some tools print it
    assert signing_key("plain-secret") == b"plain-secret"
    mac = hmac.new(raw, b"bw_1_x.1700000000." + body, hashlib.sha256).digest()
    assert signature(raw, "bw_1_x", 1_700_000_000, body) == "v1," + base64.b64encode(mac).decode()
    for bad in ("whsec_", "whsec_not base64!"):
        with pytest.raises(ValueError, match="whsec_"):
            signing_key(bad)


def test_a_secret_after_whsec_that_is_not_base64_is_a_config_error(store: SQLiteStore) -> None:
    """A ``whsec_`` secret whose rest is not base64 stops the start, naming the key."""
    source = SecretSource(env="S", environ={"S": "whsec_@@@"})
    with pytest.raises(ConfigError, match=r"^notify\.webhook_secret: "):
        Notifier("http://127.0.0.1:9/hook", store, secret=source)


async def test_each_delivery_is_posted_once_and_verifies_with_standardwebhooks(
    receiver_factory: Callable[[list[Answer]], Receiver], store: SQLiteStore
) -> None:
    """Each outbox item is posted once, and the ``standardwebhooks`` library verifies it with
    the secret as configured (``whsec_`` form) and as raw bytes; then it leaves the outbox."""
    receiver = receiver_factory([])
    for secret, verifier in (
        (WHSEC, Webhook(WHSEC)),
        ("a-plain-secret-0123456789", Webhook(b"a-plain-secret-0123456789")),
    ):
        receiver.posts.clear()
        notifier = Notifier(
            receiver.url,
            store,
            secret=SecretSource(env="S", environ={"S": secret}),
            idle_seconds=0.05,
        )
        events = [await finish(store, b) for b in ("vsfb_1", "vsfb_2")]
        # Until the outbox is empty, not just posted to: a delivery is settled after the answer.
        await deliver(notifier, store, lambda: not outbox_rows(store))
        assert len(receiver.posts) == 2
        for (headers, body), event in zip(receiver.posts, events, strict=True):
            assert verifier.verify(body, headers) == event.result.as_dict()
            assert headers["Content-Type"] == "application/json"
        assert await store.pending_deliveries() == []


async def test_a_captured_delivery_cannot_be_replayed_later(
    receiver_factory: Callable[[list[Answer]], Receiver], store: SQLiteStore
) -> None:
    """The signature covers the timestamp: a receiver's verifier refuses the same request an
    hour later, and refuses it with the timestamp moved to now."""
    receiver = receiver_factory([])
    notifier = Notifier(
        receiver.url, store, secret=SecretSource(env="S", environ={"S": WHSEC}), idle_seconds=0.05
    )
    await finish(store, "vsfb_1")
    await deliver(notifier, store, lambda: notifier.delivered == 1)
    [(headers, body)] = receiver.posts
    verifier = Webhook(WHSEC)
    verifier.verify(body, headers)
    with pytest.raises(WebhookVerificationError, match="too new"):
        # The same request, checked as if an hour had passed... backwards: a clock an hour
        # behind sees it as from the future; either way outside the five-minute window.
        verifier.verify(body, {**headers, "webhook-timestamp": str(int(time.time()) + 3600)})
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verifier.verify(body, {**headers, "webhook-timestamp": str(int(time.time()) + 1)})


async def test_a_retry_keeps_its_id_and_signs_a_fresh_timestamp(
    receiver_factory: Callable[[list[Answer]], Receiver], store: SQLiteStore
) -> None:
    """Every attempt of one delivery carries the same ``webhook-id`` with its own timestamp and a
    signature over it; another delivery has another id."""
    receiver = receiver_factory([(503, {}, b"busy")])
    now = [1_700_000_000.0]

    def clock() -> float:
        now[0] += 7
        return now[0]

    notifier = Notifier(
        receiver.url,
        store,
        secret=SecretSource(env="S", environ={"S": WHSEC}),
        idle_seconds=0.05,
        clock=clock,
    )
    await finish(store, "vsfb_1")
    await finish(store, "vsfb_2")
    await deliver(notifier, store, lambda: notifier.delivered == 2)
    ids = [headers["webhook-id"] for headers, _ in receiver.posts]
    stamps = [headers["webhook-timestamp"] for headers, _ in receiver.posts]
    assert ids[0] == ids[1] != ids[2]
    assert len(set(stamps)) == 3
    key = signing_key(WHSEC)
    for headers, body in receiver.posts:
        expected = signature(key, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
        assert headers["webhook-signature"] == expected


async def test_a_server_error_is_retried(
    receiver_factory: Callable[[list[Answer]], Receiver], store: SQLiteStore
) -> None:
    """A 503 then a 200 delivers the item on the second attempt."""
    receiver = receiver_factory([(503, {}, b"busy")])
    notifier = Notifier(receiver.url, store, secret=None, idle_seconds=0.05)
    await finish(store, "vsfb_1")
    await deliver(notifier, store, lambda: notifier.delivered == 1)
    assert len(receiver.posts) == 2
    assert "webhook-signature" not in receiver.posts[0][0]
    assert await store.pending_deliveries() == []


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed(
    receiver_factory: Callable[[list[Answer]], Receiver], store: SQLiteStore
) -> None:
    """A 3xx is retried at the same URL (its Location is never visited) and the delivery stays
    queued until the receiver accepts it; it is not dropped as a refusal."""
    receiver = receiver_factory(
        [(status, {"Location": "/elsewhere"}, b"") for status in (302, 307, 308)]
    )
    notifier = Notifier(receiver.url, store, idle_seconds=3600)
    await finish(store, "vsfb_1")
    # Three redirects end the first round (three attempts at most here): still queued.
    await deliver(notifier, store, lambda: len(receiver.posts) == 3)
    assert notifier.delivered == 0
    assert len(await store.pending_deliveries()) == 1
    # The next round (a notifier started again) is accepted.
    notifier = Notifier(receiver.url, store, idle_seconds=0.05)
    await deliver(notifier, store, lambda: notifier.delivered == 1)
    assert [path for path, _ in receiver.paths] == ["/hook"] * 4
    assert await store.pending_deliveries() == []


async def test_a_refusal_drops_the_item_and_a_failure_keeps_it(
    receiver_factory: Callable[[list[Answer]], Receiver], store: SQLiteStore
) -> None:
    """A 4xx drops the delivery for good; when every attempt of a round fails, it stays queued
    for the next round."""
    receiver = receiver_factory([(400, {}, b"no")])
    notifier = Notifier(receiver.url, store, idle_seconds=3600)
    await finish(store, "vsfb_1")
    # Until the outbox row is gone, not just posted: the refusal is settled after the answer.
    await deliver(notifier, store, lambda: bool(receiver.posts) and not outbox_rows(store))
    assert await store.pending_deliveries() == []
    assert notifier.delivered == 0

    # Three failed attempts (the most this test allows) end the first round; the item stays
    # queued, so the next round posts it again and the receiver accepts it.
    failing = receiver_factory([(500, {}, b"")] * 3)
    notifier = Notifier(failing.url, store, idle_seconds=0.05)
    await finish(store, "vsfb_2")
    await deliver(notifier, store, lambda: notifier.delivered == 1)
    assert [json.loads(body)["batch_id"] for _, body in failing.posts] == ["vsfb_2"] * 4
    assert await store.pending_deliveries() == []


async def test_a_receiver_answer_that_cannot_be_decoded_does_not_stop_the_notifier(
    receiver_factory: Callable[[list[Answer]], Receiver], store: SQLiteStore
) -> None:
    """An answer whose body claims gzip but is not, is still a 200: the item is delivered and the
    notifier goes on to the next one."""
    receiver = receiver_factory([(200, {"Content-Encoding": "gzip"}, b"not gzip at all")])
    notifier = Notifier(receiver.url, store, idle_seconds=0.05)
    await finish(store, "vsfb_1")
    await finish(store, "vsfb_2")
    await deliver(notifier, store, lambda: notifier.delivered == 2)
    assert [json.loads(body)["batch_id"] for _, body in receiver.posts] == ["vsfb_1", "vsfb_2"]
    assert await store.pending_deliveries() == []


async def test_a_store_that_cannot_write_neither_stops_nor_repeats_a_delivery(
    receiver_factory: Callable[[list[Answer]], Receiver], tmp_path: Path
) -> None:
    """While the outbox cannot be updated (another process holds the file's lock), a delivered
    item is not posted again round after round, and the notifier keeps running; once the store
    can write, the item leaves the outbox, posted once."""
    store = SQLiteStore(tmp_path / "state.sqlite3", outbox=True, busy_seconds=0.05)
    await store.open()
    receiver = receiver_factory([])
    notifier = Notifier(receiver.url, store, idle_seconds=0.05)
    await finish(store, "vsfb_1")
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        with anyio.fail_after(10):
            while True:
                failure = store.write_failure
                if failure is not None and failure.attempts >= 3:
                    break
                await anyio.sleep(0.02)
        assert len(receiver.posts) == 1
        assert outbox_rows(store) == 1
        holder.execute("ROLLBACK")
        holder.close()
        with anyio.fail_after(10):
            while True:
                if outbox_rows(store) == 0:
                    break
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    assert len(receiver.posts) == 1
    assert store.write_failure is None
    await store.aclose()
