"""The read-only page of a watched vector store, and its link on the status page: server text
and user labels are escaped, nothing secret shows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from watcher.api.models import FileCounts, LastError
from watcher.api.settings import ClientSettings
from watcher.api.vector_stores import VectorStore
from watcher.config import PollConfig
from watcher.core import store_lifecycle
from watcher.core.engine import Engine
from watcher.core.failed_files import FailedFileListing
from watcher.core.results import FailedFile
from watcher.core.settings import EngineSettings
from watcher.core.watch import STORE, Watch
from watcher.credentials import Secret
from watcher.daemon.metrics import WatcherMetrics
from watcher.daemon.web import AppState, build_app
from watcher.store.sqlite import SQLiteStore

KEY = "sk-page-secret-0123456789abcdef"
EVIL = '<script>alert("x")</script>'


def ended_store() -> Watch:
    """A store watch that ended completed with one failed file, its texts hostile."""
    watch = Watch.new("vs_page", STORE, registered_at=1.0, labels={"team": EVIL})
    store = VectorStore(
        "vs_page",
        "completed",
        FileCounts(completed=3, failed=1, total=4),
        name=f"Docs {EVIL}",
        usage_bytes=2048,
        expires_at=1_900_000_000,
        last_active_at=1_800_000_000,
        expires_after_days=7,
    )
    watch = store_lifecycle.replied(
        replace(watch, until_idle=True),
        store,
        poll_after=None,
        now=0.0,
        wall=2.0,
        settings=EngineSettings(),
        random=lambda: 0.5,
    ).watch
    listing = FailedFileListing(
        kept=(FailedFile("file-evil", LastError("invalid_file", f"bad {EVIL}")),),
        by_code={"invalid_file": 1},
        listed=1,
    )
    return store_lifecycle.listed(watch, listing, wall=3.0).watch


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = SQLiteStore(tmp_path / "state.sqlite3")
    await store.open()
    engine = Engine.create(
        ClientSettings(base_url="http://127.0.0.1:9/v1", api_key=Secret(KEY)),
        EngineSettings(),
        store=store,
    )
    engine.add("vs_page", STORE, restored=ended_store())
    state = AppState(
        engine=engine,
        metrics=WatcherMetrics(),
        store=store,
        poll=PollConfig(),
        control_token=None,
        loopback=True,
    )
    transport = httpx.ASGITransport(build_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http
    await store.aclose()
    await engine.client.aclose()


async def test_the_store_page_shows_the_store_escaped(client: httpx.AsyncClient) -> None:
    """The page shows the store's status, counts, usage, expiry and failed files, with every
    server and user text escaped and no key."""
    page = await client.get("/stores/vs_page")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "<script>" not in html
    assert "Docs &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "team=&lt;script&gt;" in html
    assert "3 completed, 1 failed, 0 cancelled, 0 in progress of 4" in html
    assert "2048 bytes" in html
    assert "2030-03-17" in html  # expires_at 1_900_000_000
    assert "file-evil" in html
    assert "bad &lt;script&gt;" in html
    assert KEY not in html


async def test_the_status_page_links_each_store(client: httpx.AsyncClient) -> None:
    """/ lists the store watches, each linking to its page; unknown or bad ids are 404/400."""
    home = (await client.get("/")).text
    assert 'href="/stores/vs_page"' in home
    assert "<script>" not in home
    assert (await client.get("/stores/vs_nope")).status_code == 404
    assert (await client.get("/stores/bad%20id")).status_code == 400
