"""How the pages are served: off the event loop, briefly cached, read-only and without a token."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

import watcher.daemon.pages
from watcher.api.models import FileCounts
from watcher.api.settings import ClientSettings
from watcher.config import PollConfig
from watcher.core.engine import Engine
from watcher.core.events import BatchProgressed
from watcher.core.settings import EngineSettings
from watcher.core.watch import Watch
from watcher.credentials import SecretSource
from watcher.daemon.history import BatchHistory
from watcher.daemon.metrics import WatcherMetrics
from watcher.daemon.pages import HEADERS, Pages
from watcher.daemon.web import AppState, build_app
from watcher.store.sqlite import SQLiteStore

VS = "vs_pages"


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    """An engine that is never run: the tests set what its watches know."""
    e = Engine.create(ClientSettings(base_url="http://127.0.0.1:9/v1"), EngineSettings())
    yield e
    await e.client.aclose()


def seen(engine: Engine, batch_id: str, counts: FileCounts, **labels: str) -> Watch:
    """Watch the batch as if polled once: in progress, with these counts."""
    engine.remove(VS, batch_id)
    fresh = Watch.new(VS, batch_id, registered_at=1_800_000_000.0, labels=labels)
    polled = replace(
        fresh, status="in_progress", file_counts=counts, last_poll_at=fresh.registered_at
    )
    watch, _ = engine.add(VS, batch_id, restored=polled)
    return watch


def client_for(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://127.0.0.1",
    )


def state_for(engine: Engine, tmp_path: Path, **extra: object) -> AppState:
    return AppState(
        engine=engine,
        metrics=WatcherMetrics(),
        store=SQLiteStore(tmp_path / "state.sqlite3"),
        poll=PollConfig(),
        control_token=None,
        loopback=True,
        **extra,  # type: ignore[arg-type]
    )


async def test_a_page_is_rendered_once_per_ttl_however_many_ask(engine: Engine) -> None:
    """Within the TTL the same URL is served from the cache (what it shows may be that old);
    another URL is rendered for itself; after the TTL the page is rendered anew."""
    now = [0.0]
    pages = Pages(engine, BatchHistory(), clock=lambda: now[0])
    engine.add(VS, "vsfb_1")
    app = Starlette(routes=[Route("/", pages.status)])
    async with client_for(app) as client:
        first = await client.get("/")
        for _ in range(20):
            assert (await client.get("/")).text == first.text
        assert pages.renders == 1
        assert "not yet seen" in first.text

        seen(engine, "vsfb_1", FileCounts(in_progress=3, completed=1, total=4))
        assert "not yet seen" in (await client.get("/")).text  # still cached
        await client.get("/?status=active")
        assert pages.renders == 2

        now[0] = 1.5
        fresh = await client.get("/")
        assert pages.renders == 3
        assert "1/4 finished" in fresh.text


async def test_rendering_runs_in_a_worker_thread(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Both pages render off the event loop's thread, so a long render never holds a probe."""
    loop_thread = threading.get_ident()
    threads: list[int] = []
    for name in ("render_status", "render_batch"):
        original = getattr(watcher.daemon.pages, name)

        def record(*args: object, _original: object = original, **kwargs: object) -> str:
            threads.append(threading.get_ident())
            return _original(*args, **kwargs)  # type: ignore[operator, no-any-return]

        monkeypatch.setattr(watcher.daemon.pages, name, record)
    engine.add(VS, "vsfb_1")
    async with client_for(build_app(state_for(engine, tmp_path))) as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get(f"/batches/{VS}/vsfb_1")).status_code == 200
    assert len(threads) == 2
    assert loop_thread not in threads


async def test_a_batchs_page_answers_for_watched_batches_only(
    engine: Engine, tmp_path: Path
) -> None:
    """A watched batch's page is 200 with its counts and chart; an unknown batch is 404 and a
    malformed id 400, both as HTML pages that say why."""
    history = BatchHistory()
    seen(engine, "vsfb_1", FileCounts(in_progress=2, completed=2, total=4), team="search")
    for done in (0, 2):
        history.on_event(
            BatchProgressed(
                vector_store_id=VS,
                batch_id="vsfb_1",
                status="in_progress",
                file_counts=FileCounts(completed=done, in_progress=4 - done, total=4),
                eta_seconds=None,
            )
        )
    async with client_for(build_app(state_for(engine, tmp_path, history=history))) as client:
        page = await client.get(f"/batches/{VS}/vsfb_1")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "2/4 finished: 2 completed, 0 failed, 2 in progress" in page.text
        assert "<code>team=search</code>" in page.text
        assert '<polyline class="line"' in page.text

        missing = await client.get(f"/batches/{VS}/vsfb_none")
        assert missing.status_code == 404
        assert f"not watching {VS}/vsfb_none" in missing.text

        bad = await client.get(f"/batches/{VS}/bad%3Cid%3E")
        assert bad.status_code == 400
        assert "batch_id: &#39;bad&lt;id&gt;&#39;" in bad.text
        assert "<id>" not in bad.text

        query = await client.get("/?status=bogus")
        assert query.status_code == 400
        assert "status: &#39;bogus&#39; is not one of" in query.text


async def test_the_pages_need_no_token_and_load_nothing_from_elsewhere(
    engine: Engine, tmp_path: Path
) -> None:
    """With a control token set, the pages still answer without one (the control API does not),
    and every page forbids scripts and loads from elsewhere."""
    engine.add(VS, "vsfb_1")
    token = SecretSource(env="T", environ={"T": "a-control-token-for-tests"})
    state = state_for(engine, tmp_path)
    state.control_token = token
    async with client_for(build_app(state)) as client:
        assert (await client.get("/v1/watches")).status_code == 401
        for path in ("/", f"/batches/{VS}/vsfb_1", f"/batches/{VS}/nope", "/?page=x"):
            response = await client.get(path)
            assert response.status_code in (200, 404, 400), path
            for name, value in HEADERS.items():
                assert response.headers[name] == value, (path, name)
            assert "<script" not in response.text
            assert "a-control-token-for-tests" not in response.text
