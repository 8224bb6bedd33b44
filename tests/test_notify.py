"""The webhook notifier against a receiver on loopback: signatures, retries, and receivers that
misbehave."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
import stamina

from watcher.api.models import FileCounts
from watcher.core.events import BatchFinished
from watcher.core.results import BatchResult
from watcher.core.states import Phase, State
from watcher.core.watch import Watch
from watcher.credentials import SecretSource
from watcher.daemon.notify import Notifier, signature
from watcher.store.sqlite import SQLiteStore

#: An answer: status, extra headers, body.
Answer = tuple[int, dict[str, str], bytes]


class Receiver:
    """A loopback HTTP server that answers each POST with the next scripted answer (then 204)."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.posts: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
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


def test_signature_is_hmac_sha256_of_the_body() -> None:
    """The signature header's value is ``sha256=`` and the hex HMAC-SHA256 of the exact body."""
    body = b'{"batch_id":"vsfb_1"}'
    want = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature("s3cret", body) == f"sha256={want}"


async def test_each_delivery_is_posted_once_and_signed(
    receiver_factory: Callable[[list[Answer]], Receiver], store: SQLiteStore
) -> None:
    """Each outbox item is posted once, with its id and a valid signature, then leaves the
    outbox."""
    receiver = receiver_factory([])
    secret = "whsec-unit-0123456789"
    notifier = Notifier(
        receiver.url, store, secret=SecretSource(env="S", environ={"S": secret}), idle_seconds=0.05
    )
    events = [await finish(store, b) for b in ("vsfb_1", "vsfb_2")]
    await deliver(notifier, store, lambda: notifier.delivered == 2)
    assert len(receiver.posts) == 2
    for (headers, body), event in zip(receiver.posts, events, strict=True):
        assert json.loads(body) == event.result.as_dict()
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Batch-Watcher-Signature"] == expected
        assert headers["X-Batch-Watcher-Delivery"].isdigit()
    assert await store.pending_deliveries() == []


async def test_a_server_error_is_retried(
    receiver_factory: Callable[[list[Answer]], Receiver], store: SQLiteStore
) -> None:
    """A 503 then a 200 delivers the item on the second attempt."""
    receiver = receiver_factory([(503, {}, b"busy")])
    notifier = Notifier(receiver.url, store, secret=None, idle_seconds=0.05)
    await finish(store, "vsfb_1")
    await deliver(notifier, store, lambda: notifier.delivered == 1)
    assert len(receiver.posts) == 2
    assert "X-Batch-Watcher-Signature" not in receiver.posts[0][0]
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
