"""Retrying failed files: which files, how they are split, the request's key, and creating the
batch through the client against the simulator's app (detach on refusal, one batch per key)."""

from __future__ import annotations

import httpx
import pytest

from watcher.api.client import APIClient
from watcher.api.models import BatchFile, LastError
from watcher.api.settings import ClientSettings
from watcher.core.retry import (
    MAX_FILES_PER_BATCH,
    RetryFile,
    create_retry_batch,
    failed_file_ids,
    idempotency_key,
    read_files,
    split,
    wanted,
)
from watcher.errors import AlreadyAttached
from watcher.simulator import BatchSpec, Simulator, SimulatorApp

VS, BATCH = "vs_r", "vsfb_r"


def test_only_failed_files_of_the_wanted_codes_are_retried() -> None:
    """A failed file is wanted when no code is given or its code is one of them."""
    bad = BatchFile("f1", "failed", LastError("server_error", ""))
    odd = BatchFile("f2", "failed", None)
    done = BatchFile("f3", "completed")
    assert wanted(bad, ())
    assert wanted(bad, {"server_error"})
    assert not wanted(bad, {"invalid_file"})
    assert wanted(odd, {"unknown"})
    assert not wanted(done, ())


def test_files_are_split_at_2000_a_request() -> None:
    """4,001 files make three requests: 2,000, 2,000 and 1."""
    assert [len(part) for part in split(list(range(4001)))] == [2000, 2000, 1]
    assert MAX_FILES_PER_BATCH == 2000
    assert split([]) == []


def test_the_key_follows_from_what_is_retried() -> None:
    """The same store, batch, attempt and part give the same key; any change, another."""
    key = idempotency_key(VS, BATCH, "1", 0)
    assert key == idempotency_key(VS, BATCH, "1", 0)
    others = {
        idempotency_key(VS, BATCH, "2", 0),
        idempotency_key(VS, BATCH, "1", 1),
        idempotency_key(VS, "vsfb_other", "1", 0),
    }
    assert key not in others
    assert len(others) == 3


@pytest.fixture
def sim() -> Simulator:
    sim = Simulator()
    sim.add_batch(BatchSpec(VS, BATCH, total_files=10, duration_seconds=0, failed_files=3))
    return sim


def client(sim: Simulator) -> APIClient:
    settings = ClientSettings(base_url="http://simulator.test/v1")
    return APIClient(settings, transport=httpx.ASGITransport(SimulatorApp(sim)))


async def test_a_refused_attached_file_is_detached_and_the_request_sent_again(
    sim: Simulator,
) -> None:
    """The API refuses files still in the store; they are detached and the same request (same
    key) makes the batch; sent once more with that key, it gives the same batch back."""
    async with client(sim) as api:
        ids = await failed_file_ids(api, VS, BATCH)
        files = [f async for f in read_files(api, VS, ids)]
        assert all(f.attached and f.chunking_strategy for f in files)
        with pytest.raises(AlreadyAttached):
            await api.create_batch(VS, [f.as_request() for f in files])
        made = await create_retry_batch(api, VS, files, key="k1")
        again = await create_retry_batch(api, VS, files, key="k1")
    assert made.id == again.id
    assert made.file_counts.total == 3
    assert sim.stats.by_endpoint["detach_file"] == 3
    assert sim.stats.by_endpoint["create_batch"] == 4  # refused, refused, made, the same


async def test_a_file_the_store_no_longer_has_is_sent_bare(sim: Simulator) -> None:
    """A file already detached is sent without attributes, and not detached again."""
    async with client(sim) as api:
        [first, *_] = await failed_file_ids(api, VS, BATCH)
        await api.detach_file(VS, first)
        [f] = [f async for f in read_files(api, VS, [first])]
        assert f == RetryFile(first, attached=False)
        made = await create_retry_batch(api, VS, [f], key="k2")
    assert made.file_counts.total == 1
    assert sim.stats.by_endpoint["create_batch"] == 1
