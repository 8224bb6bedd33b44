"""The simulator's file endpoints over loopback HTTP: a file's name, a store's file, detaching
it, and creating a batch of existing files (its limits, the attached-file rule, and
``Idempotency-Key``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from factories import FakeClock, loopback_client

from watcher.simulator import BatchSpec, Fault, FaultKind, Simulator, file_id, serve_simulator
from watcher.simulator.scenario import failed_file_index

VS = "vs_files"
BATCH = "vsfb_files"
SPEC = BatchSpec(VS, BATCH, total_files=100, duration_seconds=10, failed_files=10, created_at=1)
FAILED_ID = file_id(BATCH, failed_file_index(SPEC, 0))
CREATE = f"/vector_stores/{VS}/file_batches"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    sim = Simulator(clock=clock, created_batch_seconds=10.0)
    sim.add_batch(SPEC)
    clock.advance(20)
    return sim


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_simulator(sim) as base_url,
        loopback_client(base_url, timeout=5) as client,
    ):
        yield client


async def test_a_file_has_a_name_and_size_that_follow_from_its_id(api: httpx.AsyncClient) -> None:
    """``GET /files/{id}`` names the file, the same way every time; an unknown id is a 404."""
    first = (await api.get(f"/files/{FAILED_ID}")).json()
    again = (await api.get(f"/files/{FAILED_ID}")).json()
    assert first == again
    assert first["id"] == FAILED_ID
    assert first["object"] == "file"
    assert first["filename"].startswith("document-")
    assert first["bytes"] > 0
    other = (await api.get(f"/files/{file_id(BATCH, 99)}")).json()
    assert other["filename"] != first["filename"]
    assert (await api.get("/files/file-nobody")).status_code == 404


async def test_a_store_file_is_read_and_detached(api: httpx.AsyncClient) -> None:
    """A store's file is its ``vector_store.file``; after ``DELETE`` the store no longer has it."""
    url = f"/vector_stores/{VS}/files/{FAILED_ID}"
    body = (await api.get(url)).json()
    assert body["status"] == "failed"
    assert body["last_error"]["code"]
    assert body["chunking_strategy"]["type"] == "static"
    assert (await api.get(f"/vector_stores/vs_other/files/{FAILED_ID}")).status_code == 404
    deleted = await api.delete(url)
    assert deleted.json() == {
        "id": FAILED_ID,
        "object": "vector_store.file.deleted",
        "deleted": True,
    }
    assert (await api.get(url)).status_code == 404
    assert (await api.delete(url)).status_code == 404
    assert (await api.get(f"/files/{FAILED_ID}")).status_code == 200  # the file itself stays


async def test_a_file_still_attached_is_refused_until_detached(api: httpx.AsyncClient) -> None:
    """A new batch of a file still in the store is refused, naming it; detached, it is taken."""
    files = {"files": [{"file_id": FAILED_ID, "attributes": {"team": "a"}}]}
    refused = await api.post(CREATE, json=files)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "file_already_attached"
    assert FAILED_ID in error["message"]
    await api.delete(f"/vector_stores/{VS}/files/{FAILED_ID}")
    made = await api.post(CREATE, json=files)
    assert made.status_code == 200
    batch = made.json()
    assert batch["status"] == "in_progress"
    assert batch["file_counts"]["total"] == 1
    listed = (await api.get(f"{CREATE}/{batch['id']}/files")).json()["data"]
    assert [(f["id"], f["attributes"]) for f in listed] == [(FAILED_ID, {"team": "a"})]
    store_file = (await api.get(f"/vector_stores/{VS}/files/{FAILED_ID}")).json()
    assert store_file["attributes"] == {"team": "a"}
    assert store_file["status"] == "in_progress"


async def test_a_created_batch_progresses_like_the_others(
    api: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A created batch finishes after the simulator's ``created_batch_seconds``."""
    await api.delete(f"/vector_stores/{VS}/files/{FAILED_ID}")
    batch = (await api.post(CREATE, json={"file_ids": [FAILED_ID]})).json()
    clock.advance(11)
    now = (await api.get(f"{CREATE}/{batch['id']}")).json()
    assert now["status"] == "completed"
    assert now["file_counts"]["completed"] == 1


async def test_the_same_idempotency_key_returns_the_same_batch(api: httpx.AsyncClient) -> None:
    """A request sent again with its ``Idempotency-Key`` gets the batch it made, not another."""
    await api.delete(f"/vector_stores/{VS}/files/{FAILED_ID}")
    body = {"files": [{"file_id": FAILED_ID}]}
    key = {"Idempotency-Key": "retry-1"}
    first = (await api.post(CREATE, json=body, headers=key)).json()
    # The file is attached again now: without the key this would be refused.
    second = await api.post(CREATE, json=body, headers=key)
    assert second.status_code == 200
    assert second.json()["id"] == first["id"]
    other = await api.post(CREATE, json=body, headers={"Idempotency-Key": "retry-2"})
    assert other.status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"file_ids": ["x"], "files": [{"file_id": "x"}]},
        {"file_ids": []},
        {"file_ids": [FAILED_ID] * 2001},
        {"files": [{"attributes": {}}]},
        {"files": [{"file_id": FAILED_ID, "attributes": "no"}]},
        {"file_ids": ["file-nobody"]},
    ],
)
async def test_a_batch_request_must_be_well_formed(
    api: httpx.AsyncClient, body: dict[str, object]
) -> None:
    """``file_ids`` xor ``files``, 1 to 2,000 known files, objects where objects belong."""
    assert (await api.post(CREATE, json=body)).status_code == 400


async def test_faults_apply_to_the_new_endpoints(api: httpx.AsyncClient, sim: Simulator) -> None:
    """An armed fault fires on the file, store-file, detach and create endpoints too."""
    sim.inject(Fault(FaultKind.SERVER_ERROR, endpoint="file", times=1))
    assert (await api.get(f"/files/{FAILED_ID}")).status_code == 500
    assert (await api.get(f"/files/{FAILED_ID}")).status_code == 200
    sim.inject(Fault(FaultKind.SERVER_ERROR, status=503, endpoint="create_batch", times=1))
    assert (await api.post(CREATE, json={"file_ids": [FAILED_ID]})).status_code == 503
    sim.inject(Fault(FaultKind.RATE_LIMIT, times=1), batch_id=BATCH)
    assert (await api.delete(f"/vector_stores/{VS}/files/{FAILED_ID}")).status_code == 429


async def test_a_late_reply_takes_effect_though_the_client_gave_up(
    api: httpx.AsyncClient, sim: Simulator
) -> None:
    """``late_reply``: the batch is made at once; a client that stops waiting never hears of
    it, and asking again with the same key finds it."""
    await api.delete(f"/vector_stores/{VS}/files/{FAILED_ID}")
    sim.inject(Fault(FaultKind.LATE_REPLY, endpoint="create_batch", delay_seconds=2.0, times=1))
    key = {"Idempotency-Key": "late"}
    body = {"file_ids": [FAILED_ID]}
    with pytest.raises(httpx.ReadTimeout):
        await api.post(CREATE, json=body, headers=key, timeout=0.2)
    [made] = [b for b in sim.batch_ids() if b.startswith("vsfb_created")]
    again = await api.post(CREATE, json=body, headers=key)
    assert again.json()["id"] == made
