"""The simulator over real loopback HTTP: the API's behaviour, each fault on the wire, the
control plane, and running it (embedded, in a thread, as its own process)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from factories import FakeClock, loopback_client

from watcher.simulator import (
    DEMO_VECTOR_STORE,
    BatchSpec,
    Fault,
    FaultKind,
    RateLimit,
    Simulator,
    demo_scenario,
    file_id,
    serve_simulator,
    serve_simulator_in_thread,
)

VS = "vs_test"
BATCH = "vsfb_test"
BATCH_URL = f"/vector_stores/{VS}/file_batches/{BATCH}"
FILES_URL = f"{BATCH_URL}/files"


@dataclass
class Served:
    sim: Simulator
    clock: FakeClock
    api: httpx.AsyncClient
    control: httpx.AsyncClient
    base_url: str


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    sim = Simulator(clock=clock, cancel_seconds=2.0)
    sim.add_batch(
        BatchSpec(VS, BATCH, total_files=100, duration_seconds=100, failed_files=10, created_at=1)
    )
    return sim


@pytest.fixture
async def served(sim: Simulator, clock: FakeClock) -> AsyncIterator[Served]:
    async with serve_simulator(sim) as base_url:
        root = base_url.removesuffix("/v1")
        async with (
            loopback_client(base_url, timeout=5) as api,
            loopback_client(root, timeout=5) as control,
        ):
            yield Served(sim, clock, api, control, base_url)


async def all_pages(api: httpx.AsyncClient, url: str, **params: Any) -> list[list[str]]:
    """Walk a file list with ``after`` cursors; the ids of each page."""
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        query = dict(params, **({"after": after} if after else {}))
        body = (await api.get(url, params=query)).json()
        pages.append([f["id"] for f in body["data"]])
        if not body["has_more"]:
            return pages
        after = body["data"][-1]["id"]
        assert len(pages) < 50


# -- the batch endpoint ---------------------------------------------------------------------


async def test_retrieve_returns_the_batch_object(served: Served) -> None:
    """A retrieve answers the API's batch object with JSON and a request id."""
    reply = await served.api.get(BATCH_URL)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"].startswith("req_")
    assert reply.json() == {
        "id": BATCH,
        "object": "vector_store.file_batch",
        "created_at": 1,
        "vector_store_id": VS,
        "status": "in_progress",
        "file_counts": {
            "in_progress": 100,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "total": 100,
        },
    }


async def test_request_ids_are_unique(served: Served) -> None:
    """Every reply carries its own x-request-id."""
    ids = {(await served.api.get(BATCH_URL)).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20


async def test_batch_progresses_with_the_clock(served: Served) -> None:
    """Files finish at an even rate, failures spread among them, until the batch completes."""
    served.clock.advance(50)
    half = (await served.api.get(BATCH_URL)).json()
    assert half["status"] == "in_progress"
    assert half["file_counts"] == {
        "in_progress": 50,
        "completed": 45,
        "failed": 5,
        "cancelled": 0,
        "total": 100,
    }
    served.clock.advance(50)
    done = (await served.api.get(BATCH_URL)).json()
    assert done["status"] == "completed"
    assert done["file_counts"]["completed"] == 90
    assert done["file_counts"]["failed"] == 10
    assert done["file_counts"]["in_progress"] == 0


async def test_terminal_at_is_exact(served: Served) -> None:
    """The batch is in progress just before ``terminal_at`` and terminal at it."""
    at = served.sim.terminal_at(VS, BATCH)
    assert at == pytest.approx(served.clock.now + 100)
    served.clock.now = at - 1e-6
    assert (await served.api.get(BATCH_URL)).json()["status"] == "in_progress"
    served.clock.now = at
    assert (await served.api.get(BATCH_URL)).json()["status"] == "completed"


async def test_start_delay_and_stall_hold_progress(served: Served) -> None:
    """Nothing moves before the start delay, and progress pauses at the stall point."""
    spec = BatchSpec(
        VS,
        "vsfb_stall",
        total_files=10,
        duration_seconds=10,
        start_delay_seconds=5,
        stall_after_files=4,
        stall_seconds=30,
    )
    served.sim.add_batch(spec)
    url = f"/vector_stores/{VS}/file_batches/vsfb_stall"

    async def completed() -> int:
        count: int = (await served.api.get(url)).json()["file_counts"]["completed"]
        return count

    served.clock.advance(4.9)
    assert await completed() == 0
    served.clock.advance(0.1 + 4)  # 4 s of work: the stall point
    assert await completed() == 4
    served.clock.advance(29.9)
    assert await completed() == 4
    served.clock.advance(0.1 + 3)
    assert await completed() == 7
    assert served.sim.terminal_at(VS, "vsfb_stall") == pytest.approx(1000 + 5 + 10 + 30)


async def test_batch_can_end_failed(served: Served) -> None:
    """A spec ending ``failed`` reports failed with its failed files at the end."""
    served.sim.add_batch(
        BatchSpec(
            VS, "vsfb_f", total_files=8, duration_seconds=4, final_status="failed", failed_files=6
        )
    )
    served.clock.advance(3.99)
    assert (await served.api.get(f"/vector_stores/{VS}/file_batches/vsfb_f")).json()[
        "status"
    ] == "in_progress"
    served.clock.advance(0.01)
    body = (await served.api.get(f"/vector_stores/{VS}/file_batches/vsfb_f")).json()
    assert body["status"] == "failed"
    assert body["file_counts"]["failed"] == 6
    assert body["file_counts"]["completed"] == 2


async def test_batch_can_end_cancelled(served: Served) -> None:
    """A spec ending ``cancelled`` cancels its unprocessed files at the end."""
    served.sim.add_batch(
        BatchSpec(
            VS,
            "vsfb_c",
            total_files=10,
            duration_seconds=6,
            final_status="cancelled",
            cancelled_files=4,
        )
    )
    served.clock.advance(6)
    body = (await served.api.get(f"/vector_stores/{VS}/file_batches/vsfb_c")).json()
    assert body["status"] == "cancelled"
    assert body["file_counts"] == {
        "in_progress": 0,
        "completed": 6,
        "failed": 0,
        "cancelled": 4,
        "total": 10,
    }


async def test_unknown_batch_is_404_with_openai_error(served: Served) -> None:
    """An unknown batch, or a batch asked for under another vector store, is a 404."""
    for url in (
        f"/vector_stores/{VS}/file_batches/vsfb_nope",
        f"/vector_stores/vs_x/file_batches/{BATCH}",
    ):
        reply = await served.api.get(url)
        assert reply.status_code == 404
        assert reply.headers["x-request-id"].startswith("req_")
        batch_id = url.rsplit("/", 1)[1]
        assert reply.json() == {
            "error": {
                "message": f"No file batch found with id '{batch_id}'",
                "type": "invalid_request_error",
                "code": None,
                "param": None,
            }
        }


async def test_unknown_path_is_404(served: Served) -> None:
    """A path that is no endpoint answers 404 with an error body."""
    reply = await served.api.get("/vector_stores/vs/bogus")
    assert reply.status_code == 404
    assert reply.json()["error"]["message"] == "Invalid URL (GET /v1/vector_stores/vs/bogus)"
    wrong_method = await served.api.post(BATCH_URL)
    assert wrong_method.status_code == 404


async def test_poll_after_header_is_configurable(served: Served) -> None:
    """``openai-poll-after-ms`` is off by default, set by the simulator or per batch."""
    assert "openai-poll-after-ms" not in (await served.api.get(BATCH_URL)).headers
    served.sim.poll_after_ms = 1500
    assert (await served.api.get(BATCH_URL)).headers["openai-poll-after-ms"] == "1500"
    served.sim.add_batch(BatchSpec(VS, "vsfb_hint", 1, 1, poll_after_ms=250))
    reply = await served.api.get(f"/vector_stores/{VS}/file_batches/vsfb_hint")
    assert reply.headers["openai-poll-after-ms"] == "250"


# -- cancel ---------------------------------------------------------------------------------


async def test_cancel_goes_through_cancelling_to_cancelled(served: Served) -> None:
    """Cancel answers ``cancelling``; after a moment the batch is cancelled, its unfinished
    files with it."""
    served.clock.advance(30)
    reply = await served.api.post(f"{BATCH_URL}/cancel")
    assert reply.status_code == 200
    assert reply.json()["status"] == "cancelling"
    assert served.sim.terminal_at(VS, BATCH) == pytest.approx(1030 + 2)
    served.clock.advance(1.9)
    assert (await served.api.get(BATCH_URL)).json()["status"] == "cancelling"
    served.clock.advance(0.1)
    body = (await served.api.get(BATCH_URL)).json()
    assert body["status"] == "cancelled"
    assert body["file_counts"] == {
        "in_progress": 0,
        "completed": 27,
        "failed": 3,
        "cancelled": 70,
        "total": 100,
    }
    cancelled = await served.api.get(FILES_URL, params={"filter": "cancelled", "limit": 100})
    assert len(cancelled.json()["data"]) == 70


async def test_cancelling_twice_is_harmless(served: Served) -> None:
    """A second cancel while cancelling answers the batch again, without moving the end."""
    await served.api.post(f"{BATCH_URL}/cancel")
    at = served.sim.terminal_at(VS, BATCH)
    served.clock.advance(1)
    again = await served.api.post(f"{BATCH_URL}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelling"
    assert served.sim.terminal_at(VS, BATCH) == at


async def test_cancel_of_a_terminal_batch_is_400(served: Served) -> None:
    """A finished batch cannot be cancelled."""
    served.clock.advance(100)
    reply = await served.api.post(f"{BATCH_URL}/cancel")
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert "completed" in reply.json()["error"]["message"]


# -- the files endpoint ---------------------------------------------------------------------


async def test_list_defaults_to_20_newest_first(served: Served) -> None:
    """Without parameters: 20 files, descending, ``has_more`` set, ids as cursors."""
    body = (await served.api.get(FILES_URL)).json()
    ids = [f["id"] for f in body["data"]]
    assert body["object"] == "list"
    assert ids == [file_id(BATCH, n) for n in range(99, 79, -1)]
    assert body["first_id"] == ids[0]
    assert body["last_id"] == ids[-1]
    assert body["has_more"] is True


async def test_list_file_objects_follow_the_batch(served: Served) -> None:
    """Files carry the API's fields; failed ones have ``last_error`` with cycling codes."""
    served.clock.advance(100)
    body = (await served.api.get(FILES_URL, params={"limit": 100, "order": "asc"})).json()
    files = body["data"]
    assert set(files[0]) >= {
        "id",
        "object",
        "usage_bytes",
        "created_at",
        "vector_store_id",
        "status",
        "last_error",
    }
    assert all(f["object"] == "vector_store.file" and f["vector_store_id"] == VS for f in files)
    assert [f["created_at"] for f in files] == sorted(f["created_at"] for f in files)
    failed = [f for f in files if f["status"] == "failed"]
    completed = [f for f in files if f["status"] == "completed"]
    assert len(failed) == 10
    assert len(completed) == 90
    assert all(f["last_error"] is None and f["usage_bytes"] > 0 for f in completed)
    codes = [f["last_error"]["code"] for f in failed]
    assert codes[:4] == ["server_error", "unsupported_file", "invalid_file", "server_error"]
    assert all(f["last_error"]["message"] for f in failed)


async def test_list_shows_progress_per_file(served: Served) -> None:
    """Mid-way, the first files are done and the rest in progress."""
    served.clock.advance(25)
    body = (await served.api.get(FILES_URL, params={"limit": 100, "order": "asc"})).json()
    statuses = [f["status"] for f in body["data"]]
    assert statuses[25:] == ["in_progress"] * 75
    assert set(statuses[:25]) <= {"completed", "failed"}
    assert len(statuses) == 100


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_after_cursors_walk_every_file_once(served: Served, order: str) -> None:
    """Paging with ``after`` visits every file exactly once, in order."""
    pages = await all_pages(served.api, FILES_URL, limit=30, order=order)
    ids = [i for page in pages for i in page]
    expected = [file_id(BATCH, n) for n in range(100)]
    assert ids == (expected if order == "asc" else expected[::-1])
    assert [len(p) for p in pages] == [30, 30, 30, 10]


async def test_before_cursor_pages_backwards(served: Served) -> None:
    """``before`` gives the files right before the cursor, in the requested order."""
    params: dict[str, str | int] = {"order": "asc", "limit": 3, "before": file_id(BATCH, 10)}
    body = (await served.api.get(FILES_URL, params=params)).json()
    assert [f["id"] for f in body["data"]] == [file_id(BATCH, n) for n in (7, 8, 9)]
    assert body["has_more"] is True
    params["before"] = file_id(BATCH, 2)
    start = (await served.api.get(FILES_URL, params=params)).json()
    assert [f["id"] for f in start["data"]] == [file_id(BATCH, 0), file_id(BATCH, 1)]
    assert start["has_more"] is False


async def test_after_and_before_together_bound_the_page(served: Served) -> None:
    """With both cursors, only the files between them are listed."""
    params = {"order": "desc", "after": file_id(BATCH, 50), "before": file_id(BATCH, 45)}
    body = (await served.api.get(FILES_URL, params=params)).json()
    assert [f["id"] for f in body["data"]] == [file_id(BATCH, n) for n in (49, 48, 47, 46)]
    assert body["has_more"] is False


async def test_150_failed_files_come_in_two_pages_of_100(served: Served) -> None:
    """A batch with 150 failed files lists them in two pages at limit=100, like the API."""
    served.sim.add_batch(BatchSpec(VS, "vsfb_many", 300, 10, failed_files=150))
    served.clock.advance(10)
    url = f"/vector_stores/{VS}/file_batches/vsfb_many/files"
    first = (await served.api.get(url, params={"filter": "failed", "limit": 100})).json()
    assert len(first["data"]) == 100
    assert first["has_more"] is True
    second = (
        await served.api.get(
            url, params={"filter": "failed", "limit": 100, "after": first["data"][-1]["id"]}
        )
    ).json()
    assert len(second["data"]) == 50
    assert second["has_more"] is False
    every = first["data"] + second["data"]
    assert all(f["status"] == "failed" and f["last_error"] for f in every)
    assert len({f["id"] for f in every}) == 150


@pytest.mark.parametrize("status", ["in_progress", "completed", "failed", "cancelled"])
async def test_filter_keeps_only_that_status(served: Served, status: str) -> None:
    """``filter`` lists only files of that status."""
    if status == "cancelled":
        await served.api.post(f"{BATCH_URL}/cancel")
    served.clock.advance(50)
    ids = [i for p in await all_pages(served.api, FILES_URL, limit=100, filter=status) for i in p]
    body = (await served.api.get(BATCH_URL)).json()
    assert len(ids) == body["file_counts"][status]
    assert len(ids) > 0


@pytest.mark.parametrize("limit", ["0", "101", "-5"])
async def test_limit_out_of_bounds_is_400(served: Served, limit: str) -> None:
    """``limit`` outside 1..100 is refused with the API's error body."""
    reply = await served.api.get(FILES_URL, params={"limit": limit})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "limit"
    assert error["code"] is None
    assert limit in error["message"]


@pytest.mark.parametrize("limit", [1, 100])
async def test_limit_bounds_are_allowed(served: Served, limit: int) -> None:
    """``limit`` 1 and 100 are both fine."""
    body = (await served.api.get(FILES_URL, params={"limit": limit})).json()
    assert len(body["data"]) == limit
    assert body["has_more"] is (limit < 100)


@pytest.mark.parametrize(
    ("param", "value"),
    [("order", "sideways"), ("filter", "pending"), ("after", "file-nope"), ("limit", "ten")],
)
async def test_bad_list_parameters_are_400(served: Served, param: str, value: str) -> None:
    """A bad order, filter, cursor or non-integer limit is refused."""
    reply = await served.api.get(FILES_URL, params={param: value})
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"


# -- auth and query parameters --------------------------------------------------------------


async def test_auth_accepts_bearer_and_api_key(served: Served) -> None:
    """With a key set, both ``Authorization: Bearer`` and ``api-key`` are accepted."""
    served.sim.set_api_key("sk-right")
    bearer = await served.api.get(BATCH_URL, headers={"Authorization": "Bearer sk-right"})
    azure = await served.api.get(BATCH_URL, headers={"api-key": "sk-right"})
    assert bearer.status_code == 200
    assert azure.status_code == 200


async def test_auth_refuses_missing_and_wrong_keys_without_echo(served: Served) -> None:
    """No key or a wrong key gets 401 ``invalid_api_key``, never echoing what was sent."""
    served.sim.set_api_key("sk-right")
    missing = await served.api.get(BATCH_URL)
    wrong = await served.api.get(BATCH_URL, headers={"Authorization": "Bearer sk-wrong-xyz"})
    for reply in (missing, wrong):
        assert reply.status_code == 401
        assert reply.headers["x-request-id"]
        assert reply.json()["error"]["code"] == "invalid_api_key"
        assert reply.json()["error"]["type"] == "invalid_request_error"
    assert "sk-wrong" not in wrong.text
    assert "sk-right" not in wrong.text


async def test_key_can_change_at_run_time(served: Served) -> None:
    """A key that stops working, then works again, in-process and over ``/_sim/api-key``."""
    headers = {"Authorization": "Bearer sk-1"}
    served.sim.set_api_key("sk-1")
    assert (await served.api.get(BATCH_URL, headers=headers)).status_code == 200
    changed = await served.control.post("/_sim/api-key", json={"api_key": "sk-2"})
    assert changed.json() == {"auth": "required"}
    assert "sk-2" not in changed.text
    assert (await served.api.get(BATCH_URL, headers=headers)).status_code == 401
    served.sim.set_api_key("sk-1")
    assert (await served.api.get(BATCH_URL, headers=headers)).status_code == 200
    await served.control.post("/_sim/api-key", json={"api_key": None})
    assert (await served.api.get(BATCH_URL)).status_code == 200


async def test_required_query_parameter(served: Served) -> None:
    """A required ``api-version`` is refused when missing or different, accepted when right."""
    served.sim.required_query = {"api-version": "2024-10-21"}
    missing = await served.api.get(BATCH_URL)
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "api-version"
    wrong = await served.api.get(BATCH_URL, params={"api-version": "1999"})
    assert wrong.status_code == 400
    right = await served.api.get(BATCH_URL, params={"api-version": "2024-10-21"})
    assert right.status_code == 200


# -- faults ---------------------------------------------------------------------------------


async def test_rate_limit_fault_sends_both_retry_headers(served: Served) -> None:
    """A 429 fault carries ``Retry-After`` in whole seconds and ``retry-after-ms``, once."""
    served.sim.inject(Fault(FaultKind.RATE_LIMIT, times=1, retry_after_seconds=1.5))
    limited = await served.api.get(BATCH_URL)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert limited.headers["retry-after-ms"] == "1500"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert (await served.api.get(BATCH_URL)).status_code == 200


async def test_bare_rate_limit_has_no_retry_headers(served: Served) -> None:
    """The bare 429 fault says nothing about when to come back."""
    served.sim.inject(Fault(FaultKind.RATE_LIMIT_BARE, times=1))
    reply = await served.api.get(BATCH_URL)
    assert reply.status_code == 429
    assert "retry-after" not in reply.headers
    assert "retry-after-ms" not in reply.headers


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_fault_has_json_body(served: Served, status: int) -> None:
    """5xx faults answer the given status with an OpenAI-style JSON error."""
    served.sim.inject(Fault(FaultKind.SERVER_ERROR, status=status, times=1))
    reply = await served.api.get(BATCH_URL)
    assert reply.status_code == status
    assert reply.json()["error"]["type"] == "server_error"
    assert reply.headers["x-request-id"]


async def test_html_error_fault_looks_like_a_proxy(served: Served) -> None:
    """The HTML fault is a 502 page in ``text/html`` without a request id."""
    served.sim.inject(Fault(FaultKind.HTML_ERROR, times=1))
    reply = await served.api.get(BATCH_URL)
    assert reply.status_code == 502
    assert reply.headers["content-type"].startswith("text/html")
    assert "<html>" in reply.text
    assert "x-request-id" not in reply.headers


async def test_truncated_json_fault_is_a_complete_reply_with_broken_json(served: Served) -> None:
    """The truncated-JSON fault is a well-framed 200 whose body is not valid JSON."""
    served.sim.inject(Fault(FaultKind.TRUNCATED_JSON, times=1))
    reply = await served.api.get(BATCH_URL)
    assert reply.status_code == 200
    assert int(reply.headers["content-length"]) == len(reply.content)
    assert reply.content.startswith(b'{"id":')
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.content)


async def test_drop_fault_closes_the_connection_without_a_reply(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """The drop fault closes the socket before any byte of a reply, and the next request works."""
    served.sim.inject(Fault(FaultKind.DROP, times=1))
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await served.api.get(BATCH_URL)
    assert (await served.api.get(BATCH_URL)).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert served.sim.stats.faults["drop"] == 1


async def test_cut_body_fault_breaks_the_reply_mid_body(served: Served) -> None:
    """The cut-body fault sends headers promising more than it sends, then closes."""
    served.sim.inject(Fault(FaultKind.CUT_BODY, times=1))
    with pytest.raises(httpx.RemoteProtocolError, match=r"complete message body"):
        await served.api.get(BATCH_URL)
    assert (await served.api.get(BATCH_URL)).status_code == 200


async def test_slow_fault_delays_the_reply(served: Served) -> None:
    """The slow fault answers normally, late; a short client timeout gives up."""
    served.sim.inject(Fault(FaultKind.SLOW, delay_seconds=0.4, times=2))
    started = time.monotonic()
    reply = await served.api.get(BATCH_URL)
    assert time.monotonic() - started >= 0.4
    assert reply.status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        await served.api.get(BATCH_URL, timeout=0.1)


async def test_unknown_status_fault_reports_an_odd_status(served: Served) -> None:
    """The unknown-status fault replaces the batch status, keeps the counts, spares lists."""
    served.sim.inject(Fault(FaultKind.UNKNOWN_STATUS, value="paused", times=1))
    listed = await served.api.get(FILES_URL)
    assert listed.status_code == 200
    body = (await served.api.get(BATCH_URL)).json()
    assert body["status"] == "paused"
    assert body["file_counts"]["total"] == 100
    assert (await served.api.get(BATCH_URL)).json()["status"] == "in_progress"


async def test_vanish_fault_makes_the_batch_404_for_good(served: Served) -> None:
    """After the vanish fault fires the batch is 404 on every endpoint, and the truth says so."""
    served.sim.inject(Fault(FaultKind.VANISH, times=1), BATCH)
    assert (await served.api.get(BATCH_URL)).status_code == 404
    assert (await served.api.get(BATCH_URL)).status_code == 404
    assert (await served.api.get(FILES_URL)).status_code == 404
    truth = (await served.control.get(f"/_sim/batches/{BATCH}")).json()
    assert truth["vanished"] is True


async def test_pagination_loop_fault_repeats_the_first_page(served: Served) -> None:
    """The loop fault ignores the cursor: the same page with ``has_more`` forever."""
    first = (await served.api.get(FILES_URL, params={"limit": 100})).json()
    served.sim.inject(Fault(FaultKind.PAGINATION_LOOP))
    for _ in range(3):
        again = (
            await served.api.get(FILES_URL, params={"limit": 100, "after": first["data"][-1]["id"]})
        ).json()
        assert again["data"] == first["data"]
        assert again["has_more"] is True
    assert (await served.api.get(BATCH_URL)).status_code == 200


async def test_empty_page_fault_claims_more(served: Served) -> None:
    """The empty-page fault answers no files with ``has_more: true``."""
    served.sim.inject(Fault(FaultKind.EMPTY_PAGE, times=1))
    body = (await served.api.get(FILES_URL)).json()
    assert body["data"] == []
    assert body["has_more"] is True
    assert body["first_id"] is None


async def test_faults_can_target_one_endpoint_and_one_batch(served: Served) -> None:
    """A fault limited to a batch and an endpoint leaves everything else alone."""
    served.sim.add_batch(BatchSpec(VS, "vsfb_other", 5, 5))
    served.sim.inject(Fault(FaultKind.SERVER_ERROR, endpoint="list"), BATCH)
    assert (await served.api.get(BATCH_URL)).status_code == 200
    assert (
        await served.api.get(f"/vector_stores/{VS}/file_batches/vsfb_other/files")
    ).status_code == 200
    assert (await served.api.get(FILES_URL)).status_code == 500
    assert (await served.api.get(FILES_URL)).status_code == 500


async def test_probabilistic_faults_follow_the_seed() -> None:
    """A fault with a probability fires on some requests, the same ones for the same seed."""

    async def pattern(seed: int) -> list[int]:
        sim = Simulator([BatchSpec(VS, BATCH, 10, 10)], seed=seed)
        sim.inject(Fault(FaultKind.SERVER_ERROR, status=503, probability=0.5))
        async with serve_simulator(sim) as base_url, loopback_client(base_url) as api:
            return [(await api.get(BATCH_URL)).status_code for _ in range(40)]

    first = await pattern(7)
    assert 5 < first.count(503) < 35
    assert set(first) == {200, 503}
    assert await pattern(7) == first
    assert await pattern(8) != first


async def test_global_rate_limit(served: Served) -> None:
    """Over the window's budget requests get 429; every reply reports the budget."""
    served.sim.set_rate_limit(RateLimit(3, 60))
    replies = [await served.api.get(BATCH_URL) for _ in range(4)]
    assert [r.status_code for r in replies] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in replies] == ["2", "1", "0", "0"]
    assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in replies)
    assert replies[0].headers["x-ratelimit-reset-requests"] == "1m0s"
    assert replies[3].headers["retry-after"] == "60"
    served.clock.advance(59.98)
    late = await served.api.get(BATCH_URL)
    assert late.headers["x-ratelimit-reset-requests"] == "20ms"
    served.clock.advance(0.02)
    assert (await served.api.get(BATCH_URL)).status_code == 200
    assert served.sim.stats.rate_limited == 2


# -- observability --------------------------------------------------------------------------


async def test_stats_count_requests(served: Served) -> None:
    """Stats count requests by endpoint, batch and status, the largest limit and 429s."""
    await served.api.get(BATCH_URL)
    await served.api.get(FILES_URL, params={"limit": 77})
    await served.api.get(FILES_URL, params={"limit": 500})
    await served.api.get(f"/vector_stores/{VS}/file_batches/vsfb_nope")
    served.sim.inject(Fault(FaultKind.RATE_LIMIT, times=1))
    await served.api.get(BATCH_URL)
    stats = (await served.control.get("/_sim/stats")).json()
    assert stats["requests"] == 5
    assert stats["by_endpoint"] == {"retrieve": 3, "list": 2}
    assert stats["by_batch"][BATCH] == {"retrieve": 2, "list": 2}
    assert stats["statuses"] == {"200": 2, "400": 1, "404": 1, "429": 1}
    assert stats["max_limit"] == 500
    assert stats["rate_limited"] == 1
    assert stats["faults"] == {"rate_limit": 1}
    assert 1 <= stats["max_requests_per_second"] <= 5
    assert served.sim.stats.requests_for(BATCH) == 4


async def test_stats_count_retrieves_after_terminal_was_seen(served: Served) -> None:
    """Retrieves after the first reply showing the batch terminal are counted as wasted."""
    served.clock.advance(100)
    await served.api.get(FILES_URL)
    served.sim.inject(Fault(FaultKind.TRUNCATED_JSON, times=1), BATCH)
    await served.api.get(BATCH_URL)  # terminal, but the client could not read it
    assert served.sim.stats.retrieves_after_terminal == 0
    await served.api.get(BATCH_URL)  # the first reply that shows it terminal
    assert served.sim.stats.retrieves_after_terminal == 0
    await served.api.get(BATCH_URL)
    await served.api.get(BATCH_URL)
    await served.api.get(FILES_URL)
    assert served.sim.stats.retrieves_after_terminal == 2
    stats = (await served.control.get("/_sim/stats")).json()
    assert stats["retrieves_after_terminal_by_batch"] == {BATCH: 2}
    truth = (await served.control.get(f"/_sim/batches/{BATCH}")).json()
    assert truth["seen_terminal_at"] == served.clock.now


async def test_request_log_keeps_recent_requests(served: Served) -> None:
    """The request log records each API request's query, status, fault and request id."""
    ok = await served.api.get(FILES_URL, params={"limit": 100, "after": file_id(BATCH, 3)})
    served.sim.inject(Fault(FaultKind.DROP, times=1))
    with pytest.raises(httpx.RemoteProtocolError):
        await served.api.get(BATCH_URL)
    await served.api.get("/nowhere")
    log = (await served.control.get("/_sim/requests")).json()["data"]
    assert [(r["endpoint"], r["status"], r["fault"]) for r in log] == [
        ("list", 200, None),
        ("retrieve", None, "drop"),
        ("unknown", 404, None),
    ]
    assert log[0]["query"] == f"limit=100&after={file_id(BATCH, 3)}"
    assert log[0]["request_id"] == ok.headers["x-request-id"]
    only = await served.control.get("/_sim/requests", params={"batch_id": BATCH, "limit": 1})
    assert [r["endpoint"] for r in only.json()["data"]] == ["retrieve"]


async def test_stats_reset(served: Served) -> None:
    """Resetting the stats starts the counts from zero."""
    await served.api.get(BATCH_URL)
    await served.control.post("/_sim/stats/reset")
    assert (await served.control.get("/_sim/stats")).json()["requests"] == 0


async def test_control_plane_is_free_of_auth_and_faults(served: Served) -> None:
    """``/_sim/`` answers with a key required, faults armed and the budget spent."""
    served.sim.set_api_key("sk-1")
    served.sim.inject(Fault(FaultKind.DROP))
    served.sim.set_rate_limit(RateLimit(1, 60))
    for _ in range(3):
        assert (await served.control.get("/_sim/stats")).status_code == 200
    assert served.sim.stats.requests == 0


async def test_truth_lists_batches_with_failed_files(served: Served) -> None:
    """``/_sim/batches`` tells each batch's status, counts, end and failed files with codes."""
    served.clock.advance(100)
    truth = (await served.control.get("/_sim/batches")).json()
    assert truth["now"] == served.clock.now
    (batch,) = truth["data"]
    assert batch["status"] == "completed"
    assert batch["terminal_at"] == pytest.approx(1100)
    assert batch["terminal_at_unix"] == pytest.approx(truth["now_unix"], abs=1)
    listed = await all_pages(served.api, FILES_URL, limit=100, filter="failed", order="asc")
    assert [f["id"] for f in batch["failed_files"]] == listed[0]
    assert batch["failed_files"][0]["code"] == "server_error"
    brief = (await served.control.get("/_sim/batches", params={"failed_files": "0"})).json()
    assert "failed_files" not in brief["data"][0]


async def test_control_arms_lists_and_clears_faults(served: Served) -> None:
    """Faults armed over HTTP fire, are listed with their counters, and can be cleared."""
    armed = await served.control.post(
        "/_sim/faults", json={"kind": "server_error", "status": 503, "times": 2, "batch_id": BATCH}
    )
    assert armed.status_code == 201
    assert armed.json()["remaining"] == 2
    assert (await served.api.get(BATCH_URL)).status_code == 503
    listed = (await served.control.get("/_sim/faults")).json()["data"]
    assert [(f["kind"], f["remaining"], f["fired"]) for f in listed] == [("server_error", 1, 1)]
    cleared = await served.control.delete("/_sim/faults")
    assert cleared.json() == {"cleared": 1}
    assert (await served.api.get(BATCH_URL)).status_code == 200


async def test_control_refuses_bad_faults(served: Served) -> None:
    """An unknown kind or field is a 400, an unknown batch a 404."""
    bad_kind = await served.control.post("/_sim/faults", json={"kind": "meteor"})
    bad_field = await served.control.post("/_sim/faults", json={"kind": "slow", "sleep": 3})
    no_batch = await served.control.post("/_sim/faults", json={"kind": "slow", "batch_id": "x"})
    assert bad_kind.status_code == 400
    assert "meteor" in bad_kind.json()["error"]["message"]
    assert bad_field.status_code == 400
    assert no_batch.status_code == 404


async def test_control_adds_batches_and_templates(served: Served) -> None:
    """Batches and templates can be added over HTTP, then served by the API."""
    one = await served.control.post(
        "/_sim/batches",
        json={
            "vector_store_id": VS,
            "batch_id": "vsfb_new",
            "total_files": 3,
            "duration_seconds": 1,
            "errors": [{"code": "weird", "message": "odd"}],
            "failed_files": 1,
        },
    )
    assert one.json() == {"ids": ["vsfb_new"]}
    many = await served.control.post(
        "/_sim/batches",
        json={
            "template": {
                "vector_store_id": VS,
                "batch_id": "t",
                "total_files": 2,
                "duration_seconds": 1,
            },
            "count": 3,
            "prefix": "vsfb_t_",
        },
    )
    assert many.json() == {"ids": ["vsfb_t_00000", "vsfb_t_00001", "vsfb_t_00002"]}
    served.clock.advance(1)
    url = f"/vector_stores/{VS}/file_batches/vsfb_new/files"
    failed = (await served.api.get(url, params={"filter": "failed"})).json()["data"]
    assert failed[0]["last_error"] == {"code": "weird", "message": "odd"}
    bad = await served.control.post("/_sim/batches", json={"batch_id": "x"})
    assert bad.status_code == 400


async def test_control_sets_the_rate_limit(served: Served) -> None:
    """The rate limit can be set and removed over HTTP."""
    await served.control.post("/_sim/rate-limit", json={"requests": 1, "window_seconds": 10})
    assert (await served.api.get(BATCH_URL)).status_code == 200
    assert (await served.api.get(BATCH_URL)).status_code == 429
    await served.control.post("/_sim/rate-limit", json={"requests": None})
    reply = await served.api.get(BATCH_URL)
    assert reply.status_code == 200
    assert "x-ratelimit-limit-requests" not in reply.headers


async def test_control_vanishes_a_batch(served: Served) -> None:
    """``POST /_sim/batches/<id>/vanish`` makes the batch 404 at once."""
    assert (await served.control.post(f"/_sim/batches/{BATCH}/vanish")).status_code == 200
    assert (await served.api.get(BATCH_URL)).status_code == 404


# -- load and demo --------------------------------------------------------------------------


async def test_template_of_10000_batches_stays_cheap(served: Served) -> None:
    """10,000 batches from one template get their ids in order, spread ends, and behave
    (what they cost is measured by the benchmark, not here)."""
    template = BatchSpec("vs_load", "t", total_files=100, duration_seconds=60, failed_files=5)
    ids = served.sim.add_template(
        10_000, template, "vsfb_load_", start_jitter_seconds=30, duration_jitter=0.2, seed=3
    )
    assert len(ids) == 10_000
    assert ids[0] == "vsfb_load_00000"
    assert ids[-1] == "vsfb_load_09999"
    ends = {served.sim.terminal_at("vs_load", i) for i in ids[:100]}
    assert len(ends) == 100  # the jitter spread them
    assert all(1000 + 48 <= end <= 1000 + 30 + 72 for end in ends)
    served.clock.advance(200)
    for batch_id in ("vsfb_load_00000", "vsfb_load_04567", "vsfb_load_09999"):
        url = f"/vector_stores/vs_load/file_batches/{batch_id}"
        assert (await served.api.get(url)).json()["status"] == "completed"
        failed = (await served.api.get(f"{url}/files", params={"filter": "failed"})).json()
        assert len(failed["data"]) == 5


async def test_demo_scenario_covers_every_case(clock: FakeClock) -> None:
    """The demo has a clean, a many-failures, a failed, a cancelled, a slow and a flaky batch."""
    specs = {s.batch_id: s for s in demo_scenario()}
    sim = Simulator(specs.values(), clock=clock)
    failures = specs["vsfb_demo_failures"]
    assert failures.total_files == 250
    assert failures.failed_files == 130
    assert {e.code for e in failures.errors} >= {
        "server_error",
        "unsupported_file",
        "invalid_file",
        "parsing_timeout",
    }
    ends = {b: sim.terminal_at(DEMO_VECTOR_STORE, b) - clock.now for b in specs}
    assert ends.pop("vsfb_demo_slow") >= 120
    assert max(ends.values()) <= 30
    assert specs["vsfb_demo_flaky"].faults
    clock.advance(60)
    statuses = {b: sim.progress(b).status for b in specs}
    assert statuses == {
        "vsfb_demo_clean": "completed",
        "vsfb_demo_failures": "completed",
        "vsfb_demo_failed": "failed",
        "vsfb_demo_cancelled": "cancelled",
        "vsfb_demo_slow": "in_progress",
        "vsfb_demo_flaky": "completed",
    }


async def test_demo_flaky_batch_fails_transiently_then_answers(clock: FakeClock) -> None:
    """The flaky demo batch's retrieves hit 503s, a 429 and broken JSON, then succeed."""
    sim = Simulator(demo_scenario(), clock=clock)
    url = f"/vector_stores/{DEMO_VECTOR_STORE}/file_batches/vsfb_demo_flaky"
    async with serve_simulator(sim) as base_url, loopback_client(base_url) as api:
        replies = [await api.get(url) for _ in range(12)]
    codes = [r.status_code for r in replies]
    assert codes[:4] == [503, 503, 429, 200]
    with pytest.raises(json.JSONDecodeError):
        replies[3].json()
    assert replies[-1].status_code == 200
    assert replies[-1].json()["id"] == "vsfb_demo_flaky"


# -- running it -----------------------------------------------------------------------------


def test_thread_server_serves_synchronous_clients() -> None:
    """The thread-based server answers a synchronous client and stops on exit."""
    sim = Simulator([BatchSpec(VS, BATCH, 1, 0)])
    with serve_simulator_in_thread(sim) as base_url, httpx.Client(base_url=base_url) as api:
        assert api.get(BATCH_URL).json()["status"] == "completed"
    with pytest.raises(httpx.ConnectError):
        httpx.get(base_url + BATCH_URL)


async def test_server_stops_listening_on_exit(sim: Simulator) -> None:
    """Leaving ``serve_simulator`` closes the port."""
    async with serve_simulator(sim) as base_url, loopback_client() as client:
        assert (await client.get(base_url + BATCH_URL)).status_code == 200
    async with loopback_client() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(base_url + BATCH_URL)


@pytest.mark.e2e
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_module_runs_as_a_process_until_signalled(stop: signal.Signals) -> None:
    """``python -m watcher.simulator`` prints its URL, serves with a key, exits 0 on a signal."""
    env = dict(os.environ, SIM_TEST_KEY="sk-process")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "watcher.simulator",
            "--scenario",
            "template",
            "--batches",
            "50",
            "--duration",
            "5",
            "--api-key-env",
            "SIM_TEST_KEY",
            "--rate-limit",
            "1000/1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening http://127.0.0.1:")
        base_url = line.split(" ", 1)[1]
        assert base_url.endswith("/v1")
        url = f"{base_url}/vector_stores/vs_load/file_batches/vsfb_load_00049"
        assert httpx.get(url).status_code == 401
        reply = httpx.get(url, headers={"Authorization": "Bearer sk-process"})
        assert reply.json()["file_counts"]["total"] == 100
        assert reply.headers["x-ratelimit-limit-requests"] == "1000"
    finally:
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "sk-process" not in err


@pytest.mark.e2e
def test_module_refuses_an_unset_key_variable() -> None:
    """Naming an unset variable for the key is a usage error, not a server without auth."""
    env = {k: v for k, v in os.environ.items() if k != "SIM_UNSET_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "watcher.simulator", "--api-key-env", "SIM_UNSET_KEY"],
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
        check=False,
    )
    assert done.returncode == 2
    assert "SIM_UNSET_KEY" in done.stderr


# -- a clock that starts at the first poll ----------------------------------------------------


async def test_a_batch_clock_can_start_at_its_first_poll(clock: FakeClock) -> None:
    """With ``clock_from_first_poll``, a batch added long before anyone asks has not moved; its
    first retrieve starts it, and it ends its duration after that."""
    sim = Simulator(clock=clock, clock_from_first_poll=True)
    sim.add_batches([BatchSpec(VS, BATCH, 10, 10), BatchSpec(VS, "vsfb_other", 10, 10)])
    clock.advance(500)
    assert sim.truth(BATCH)["started"] is False
    assert sim.truth(BATCH)["terminal_at"] is None
    async with serve_simulator(sim) as base_url, loopback_client(base_url) as api:
        first = (await api.get(BATCH_URL)).json()
        assert (first["status"], first["file_counts"]["completed"]) == ("in_progress", 0)
        assert sim.truth(BATCH)["terminal_at"] == pytest.approx(clock.now + 10)
        clock.advance(5)
        assert (await api.get(BATCH_URL)).json()["file_counts"]["completed"] == 5
        clock.advance(5)
        assert (await api.get(BATCH_URL)).json()["status"] == "completed"
    assert sim.truth("vsfb_other")["started"] is False
    assert sim.progress("vsfb_other").processed == 0


def test_by_default_a_batch_clock_starts_when_it_is_added(clock: FakeClock) -> None:
    """Without the option, a batch progresses from the moment it is added, polled or not."""
    sim = Simulator([BatchSpec(VS, BATCH, 10, 10)], clock=clock)
    clock.advance(10)
    assert sim.truth(BATCH)["started"] is True
    assert sim.progress(BATCH).status == "completed"
