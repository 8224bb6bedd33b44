"""The control API's store watches (/v1/stores), on the daemon's app in process."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from watcher.api.settings import ClientSettings
from watcher.config import PollConfig
from watcher.core.engine import Engine
from watcher.core.settings import EngineSettings
from watcher.core.watch import STORE
from watcher.daemon.metrics import WatcherMetrics
from watcher.daemon.web import AppState, build_app
from watcher.store.sqlite import SQLiteStore


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Engine]]:
    """The app of an engine that is not polling, with its state store open, on loopback
    rules (no control token)."""
    store = SQLiteStore(tmp_path / "state.sqlite3")
    await store.open()
    engine = Engine.create(
        ClientSettings(base_url="http://127.0.0.1:9/v1"), EngineSettings(), store=store
    )
    state = AppState(
        engine=engine,
        metrics=WatcherMetrics(),
        store=store,
        poll=PollConfig(),
        control_token=None,
        loopback=True,
        declared_stores={"vs_declared": 0},
    )
    transport = httpx.ASGITransport(build_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client, engine
    await store.aclose()
    await engine.client.aclose()


def _stored(tmp_path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    try:
        return db.execute("SELECT vector_store_id, batch_id FROM watches").fetchall()
    finally:
        db.close()


async def test_store_watch_lifecycle_through_the_api(
    tmp_path: Path, app: tuple[httpx.AsyncClient, Engine]
) -> None:
    """POST watches a store (201, on disk before the answer; 200 again), GET lists and shows
    it apart from the batch watches, DELETE is 204 and then 404."""
    client, engine = app
    body = {"vector_store_id": "vs_api", "labels": {"team": "search"}}
    created = await client.post("/v1/stores", json=body)
    assert created.status_code == 201
    shown = created.json()
    assert shown["vector_store_id"] == "vs_api"
    assert shown["labels"] == {"team": "search"}
    assert shown["store"] is None
    assert _stored(tmp_path) == [("vs_api", STORE)]
    again = await client.post("/v1/stores", json={"vector_store_id": "vs_api"})
    assert again.status_code == 200
    assert engine.get("vs_api", STORE) is not None
    listed = (await client.get("/v1/stores")).json()["stores"]
    assert [s["vector_store_id"] for s in listed] == ["vs_api"]
    assert (await client.get("/v1/watches")).json() == {"watches": []}
    assert (await client.get("/v1/stores/vs_api")).json()["labels"] == {"team": "search"}
    assert (await client.delete("/v1/stores/vs_api")).status_code == 204
    assert _stored(tmp_path) == []
    gone = await client.get("/v1/stores/vs_api")
    assert gone.status_code == 404
    assert gone.json()["error"] == "not watching vector store vs_api"


async def test_bad_store_bodies_are_refused_with_reasons(
    app: tuple[httpx.AsyncClient, Engine],
) -> None:
    """A body with a bad id, an unknown field or no JSON object is refused, naming why."""
    client, engine = app
    bad_id = await client.post("/v1/stores", json={"vector_store_id": "vs/../x"})
    assert bad_id.status_code == 422
    assert bad_id.json()["problems"][0].startswith("body.vector_store_id: ")
    unknown = await client.post("/v1/stores", json={"vector_store_id": "vs_a", "batch_id": "b"})
    assert unknown.status_code == 422
    assert "unknown fields: batch_id" in unknown.json()["error"]
    json_type = {"Content-Type": "application/json"}
    not_json = await client.post("/v1/stores", content=b"{nope", headers=json_type)
    assert not_json.status_code == 400
    untyped = await client.post("/v1/stores", content=b'{"vector_store_id": "vs_a"}')
    assert untyped.status_code == 415
    assert (await client.get("/v1/stores/bad%20id")).status_code == 400
    assert len(engine) == 0


async def test_a_store_declared_in_the_file_is_not_deleted(
    app: tuple[httpx.AsyncClient, Engine],
) -> None:
    """DELETE of a [[store]] the configuration declares is 409, naming the table, and the store
    stays watched."""
    client, engine = app
    engine.add("vs_declared", STORE)
    refused = await client.delete("/v1/stores/vs_declared")
    assert refused.status_code == 409
    assert "store[0]" in refused.json()["error"]
    assert engine.get("vs_declared", STORE) is not None
