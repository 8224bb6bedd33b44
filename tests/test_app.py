"""The daemon's HTTP app on a real loopback server: health, the control API, the status page."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import structlog
import uvicorn
from factories import loopback_client
from prometheus_client.parser import text_string_to_metric_families

import watcher.daemon.service
from watcher.api.settings import ClientSettings
from watcher.config import Config, config_from_mapping
from watcher.core.engine import Engine
from watcher.core.policy import PollSettings
from watcher.core.settings import EngineSettings
from watcher.credentials import Secret
from watcher.daemon.service import Daemon
from watcher.daemon.web import HEALTHY_TICK_SECONDS, AppState, build_app, host_name
from watcher.errors import ConfigError
from watcher.serving import EmbeddedServer, ServerLimits, bind
from watcher.simulator import BatchSpec, Fault, FaultKind, Simulator, serve_simulator

VS = "vs_app"
TOKEN = "control-token-for-tests"
KEY = "sk-app-test-key-0001"


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, str]]:
    """The API simulator in this process, with three slow batches and one that ends at once."""
    simulator = Simulator(
        [
            BatchSpec(VS, "vsfb_slow", total_files=100, duration_seconds=600),
            BatchSpec(VS, "vsfb_slow2", total_files=100, duration_seconds=600),
            BatchSpec(VS, "vsfb_slow3", total_files=100, duration_seconds=600),
            BatchSpec(VS, "vsfb_quick", total_files=4, duration_seconds=0, failed_files=1),
        ],
        api_key=KEY,
    )
    async with serve_simulator(simulator) as url:
        yield simulator, url


def _config(
    tmp_path: Path, base_url: str, extra: Mapping[str, Any] | None = None, **environ: str
) -> Config:
    """A daemon configuration for the simulator at ``base_url``, polling fast."""
    data: dict[str, Any] = {
        "api": {"base_url": base_url},
        "poll": {"interval_seconds": 0.2, "min_interval_seconds": 0.1},
        "server": {"listen": "127.0.0.1:0"},
        "state": {"path": str(tmp_path / "state.sqlite3")},
    }
    for section, values in (extra or {}).items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return config_from_mapping(data, {"OPENAI_API_KEY": KEY, **environ})


@contextlib.asynccontextmanager
async def running_daemon(
    monkeypatch: pytest.MonkeyPatch, daemon: Daemon
) -> AsyncIterator[httpx.AsyncClient]:
    """``daemon.serve()`` in this task's event loop; yields a client for its server."""
    bound: list[socket.socket] = []

    def capture(host: str, port: int) -> socket.socket:
        sock = bind(host, port)
        bound.append(sock)
        return sock

    monkeypatch.setattr(watcher.daemon.service, "bind", capture)
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.serve)
        with anyio.fail_after(10):
            while True:  # serve() binds, restores, then starts the engine
                if bound and daemon.engine.started:
                    break
                await anyio.sleep(0.01)
        host, port = bound[0].getsockname()[:2]
        async with loopback_client(f"http://{host}:{port}", timeout=10) as client:
            with anyio.fail_after(10):
                while True:
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.02)
            yield client
        tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def serving(state: AppState) -> AsyncIterator[httpx.AsyncClient]:
    """``build_app(state)`` alone on a loopback server (for states ``serve`` would not build)."""
    sock = bind("127.0.0.1", 0)
    started = anyio.Event()
    server = EmbeddedServer(
        uvicorn.Config(build_app(state), lifespan="off", log_config=None, access_log=False),
        on_started=started.set,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            await started.wait()
        host, port = sock.getsockname()[:2]
        async with loopback_client(f"http://{host}:{port}", timeout=10) as client:
            yield client
        server.should_exit = True
    sock.close()


async def _until(check: Callable[[], Any], what: str, within: float = 10.0) -> None:
    """Poll ``check`` until it is true; fail (saying ``what``) after ``within`` seconds."""
    try:
        with anyio.fail_after(within):
            while True:
                if await check():
                    return
                await anyio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_healthz_and_readyz_follow_the_credentials(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/readyz`` is 503 naming the refused key while the API refuses it and 200 again once it
    works; ``/healthz`` stays 200 throughout."""
    simulator, url = sim
    config = _config(tmp_path, url, {"watch": [{"vector_store_id": VS, "batch_id": "vsfb_slow"}]})
    daemon = Daemon(config)
    # The probe that retries a refused key waits 30 s by default; the test has no such time.
    daemon.engine.settings = dataclasses.replace(daemon.engine.settings, auth_retry_seconds=0.2)
    async with running_daemon(monkeypatch, daemon) as client:
        await _until(lambda: _status(client, "/readyz", 200), "ready")
        assert (await client.get("/healthz")).json()["status"] == "ok"

        simulator.set_api_key("sk-a-different-key-9999")
        await _until(lambda: _status(client, "/readyz", 503), "not ready")
        body = (await client.get("/readyz")).json()
        assert body["status"] == "not ready"
        [problem] = body["problems"]
        assert problem.startswith("the API refuses the credentials")
        assert KEY not in problem
        assert (await client.get("/healthz")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert "batch_watcher_auth_failing 1.0" in metrics

        simulator.set_api_key(KEY)
        await _until(lambda: _status(client, "/readyz", 200), "ready again")
        assert (await client.get("/readyz")).json() == {"status": "ready", "problems": []}


async def _status(client: httpx.AsyncClient, path: str, status: int) -> bool:
    return (await client.get(path)).status_code == status


async def test_healthz_is_503_when_the_scheduler_stops_turning(
    tmp_path: Path, sim: tuple[Simulator, str]
) -> None:
    """``/healthz`` is 503 ``stuck`` when the scheduler's last tick is too old, and before the
    engine runs at all; ``/readyz`` then names the engine."""
    _, url = sim
    daemon = Daemon(_config(tmp_path, url))
    await daemon.store.open()
    now = [0.0]
    state = AppState(
        engine=daemon.engine,
        metrics=daemon.metrics,
        store=daemon.store,
        poll=daemon.config.poll,
        control_token=None,
        loopback=True,
        clock=lambda: daemon.engine.last_tick + now[0],
    )
    try:
        async with serving(state) as client:
            response = await client.get("/healthz")
            assert response.status_code == 503  # the engine has not started
            assert (await client.get("/readyz")).json()["problems"] == ["engine not running"]
            daemon.engine.started = True  # as run() says once its workers are up
            assert (await client.get("/healthz")).status_code == 200
            now[0] = 31.0
            response = await client.get("/healthz")
            assert response.status_code == 503
            assert response.json() == {"status": "stuck", "scheduler_tick_age_seconds": 31.0}
    finally:
        daemon.engine.started = False
        await daemon.store.aclose()
        await daemon.engine.client.aclose()


async def test_the_control_api_requires_the_token(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a control token configured, a missing or wrong token gets 401, the right one 200;
    the metrics, health and status page stay open."""
    _, url = sim
    daemon = Daemon(_config(tmp_path, url, BATCH_WATCHER_CONTROL_TOKEN=TOKEN))
    body = {"vector_store_id": VS, "batch_id": "vsfb_slow"}
    async with running_daemon(monkeypatch, daemon) as client:
        for headers in (
            {},
            _bearer("wrong-token"),
            _bearer(TOKEN[:-1]),
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
        ):
            for method, path in (
                ("GET", "/v1/watches"),
                ("GET", f"/v1/watches/{VS}/vsfb_slow"),
                ("DELETE", f"/v1/watches/{VS}/vsfb_slow"),
            ):
                response = await client.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                assert response.headers["www-authenticate"].startswith("Bearer")
            response = await client.post("/v1/watches", json=body, headers=headers)
            assert response.status_code == 401
        assert len(daemon.engine) == 0
        assert (await client.get("/v1/watches", headers=_bearer(TOKEN))).json() == {"watches": []}
        response = await client.post("/v1/watches", json=body, headers=_bearer(TOKEN))
        assert response.status_code == 201
        for path in ("/metrics", "/healthz", "/readyz", "/", f"/batches/{VS}/vsfb_slow"):
            assert (await client.get(path)).status_code == 200, path


async def test_without_a_token_the_control_api_answers_only_on_loopback(
    tmp_path: Path, sim: tuple[Simulator, str]
) -> None:
    """With no token and a non-loopback listen address the control API is 403; with a token, the
    token is what counts."""
    _, url = sim
    daemon = Daemon(_config(tmp_path, url, BATCH_WATCHER_CONTROL_TOKEN=TOKEN))
    await daemon.store.open()
    base = {
        "engine": daemon.engine,
        "metrics": daemon.metrics,
        "store": daemon.store,
        "poll": daemon.config.poll,
    }
    try:
        async with serving(AppState(**base, control_token=None, loopback=False)) as client:
            for method, path in (
                ("GET", "/v1/watches"),
                ("POST", "/v1/watches"),
                ("GET", f"/v1/watches/{VS}/vsfb_slow"),
                ("DELETE", f"/v1/watches/{VS}/vsfb_slow"),
            ):
                response = await client.request(method, path, headers=_bearer(TOKEN))
                assert response.status_code == 403, (method, path)
                assert "no control token" in response.json()["error"]
            assert (await client.get("/metrics")).status_code == 200
        token = daemon.config.server.control_token
        async with serving(AppState(**base, control_token=token, loopback=False)) as client:
            assert (await client.get("/v1/watches")).status_code == 401
            assert (await client.get("/v1/watches", headers=_bearer(TOKEN))).status_code == 200
        async with serving(AppState(**base, control_token=None, loopback=True)) as client:
            assert (await client.get("/v1/watches")).status_code == 200
    finally:
        await daemon.store.aclose()
        await daemon.engine.client.aclose()


async def test_watch_lifecycle_through_the_api(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST creates (201, on disk before the answer), POST again is 200, GET shows the watch as
    it progresses, DELETE is 204 and then 404."""
    _, url = sim
    daemon = Daemon(_config(tmp_path, url))
    body = {
        "vector_store_id": VS,
        "batch_id": "vsfb_quick",
        "labels": {"team": "search"},
        "deadline_seconds": 600,
    }
    one = f"/v1/watches/{VS}/vsfb_quick"
    async with running_daemon(monkeypatch, daemon) as client:
        assert (await client.get(one)).status_code == 404
        created = await client.post("/v1/watches", json=body)
        assert created.status_code == 201
        watch = created.json()
        assert (watch["vector_store_id"], watch["batch_id"]) == (VS, "vsfb_quick")
        assert watch["labels"] == {"team": "search"}
        assert watch["options"] == {"deadline_seconds": 600.0}
        assert watch["deadline_at"] == pytest.approx(watch["registered_at"] + 600)
        assert _stored(tmp_path) == [(VS, "vsfb_quick")]

        again = await client.post("/v1/watches", json={**body, "labels": {"team": "other"}})
        assert again.status_code == 200
        assert again.json()["labels"] == {"team": "search"}
        assert len(daemon.engine) == 1

        async def ended() -> bool:
            return (await client.get(one)).json()["state"] == "completed"

        await _until(ended, "the batch completed")
        shown = (await client.get(one)).json()
        assert shown["status"] == "completed"
        assert shown["file_counts"] == {
            "in_progress": 0,
            "completed": 3,
            "failed": 1,
            "cancelled": 0,
            "total": 4,
        }
        assert shown["result"]["failed_files_by_code"] == {"server_error": 1}
        listed = (await client.get("/v1/watches")).json()["watches"]
        assert [w["batch_id"] for w in listed] == ["vsfb_quick"]

        assert (await client.delete(one)).status_code == 204
        assert _stored(tmp_path) == []
        assert (await client.get(one)).status_code == 404
        gone = await client.delete(one)
        assert gone.status_code == 404
        assert gone.json()["error"] == f"not watching {VS}/vsfb_quick"
        assert (await client.get("/v1/watches")).json() == {"watches": []}


def _stored(tmp_path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    try:
        return db.execute("SELECT vector_store_id, batch_id FROM watches").fetchall()
    finally:
        db.close()


@pytest.mark.parametrize(
    ("content", "status", "says"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 422, "must be a JSON object"),
        (b'"vs_1/vsfb_1"', 422, "must be a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, 413, "over 65536 bytes"),
        (b"[" * 30_000 + b"]" * 30_000, 400, "not valid JSON"),
    ],
)
async def test_a_body_that_is_not_a_watch_is_refused(
    tmp_path: Path,
    sim: tuple[Simulator, str],
    monkeypatch: pytest.MonkeyPatch,
    content: bytes,
    status: int,
    says: str,
) -> None:
    """Malformed JSON is 400, JSON that is not an object 422, an oversized body 413."""
    _, url = sim
    async with running_daemon(monkeypatch, Daemon(_config(tmp_path, url))) as client:
        response = await client.post(
            "/v1/watches", content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status
        assert says in response.json()["error"]


async def test_invalid_watches_are_refused_with_reasons(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown fields, bad ids, bad labels and a bad deadline are 422 naming each problem; a bad
    id in the path is 400; nothing is watched."""
    _, url = sim
    async with running_daemon(monkeypatch, Daemon(_config(tmp_path, url))) as client:
        unknown = await client.post(
            "/v1/watches",
            json={"vector_store_id": VS, "batch_id": "b", "interval_seconds": 1, "zz": 1},
        )
        assert unknown.status_code == 422
        assert unknown.json()["error"] == "unknown fields: interval_seconds, zz"
        assert unknown.json()["allowed"] == [
            "batch_id",
            "deadline_seconds",
            "labels",
            "retry",
            "vector_store_id",
        ]

        bad = await client.post(
            "/v1/watches",
            json={
                "vector_store_id": "../etc",
                "labels": {"__x": "1", "team": "a\nb", "batch_id": "c"},
                "deadline_seconds": -5,
            },
        )
        assert bad.status_code == 422
        problems = bad.json()["problems"]
        assert bad.json()["error"] == "invalid watch"
        for start in (
            "body.vector_store_id: '../etc'",
            "body.labels: label name '__x'",
            "body.labels.team: 'a\\nb' contains control characters",
            "body.labels: label name 'batch_id' is reserved",
            "body.deadline_seconds: -5 is not >= 0",
            "body.batch_id: missing",
        ):
            assert any(p.startswith(start) for p in problems), (start, problems)

        path = await client.get("/v1/watches/vs_app/bad%20id")
        assert path.status_code == 400
        assert path.json()["problems"][0].startswith("batch_id: 'bad id'")
        assert (await client.delete("/v1/watches/vs%3F/b")).status_code == 400
        assert (await client.get("/v1/watches")).json() == {"watches": []}


async def test_too_many_watches_is_409(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``state.max_watches`` a new watch is 409; one already watched is still 200."""
    _, url = sim
    daemon = Daemon(_config(tmp_path, url, {"state": {"max_watches": 2}}))
    async with running_daemon(monkeypatch, daemon) as client:
        for batch_id in ("vsfb_slow", "vsfb_slow2"):
            body = {"vector_store_id": VS, "batch_id": batch_id}
            assert (await client.post("/v1/watches", json=body)).status_code == 201
        refused = await client.post("/v1/watches", json={"vector_store_id": VS, "batch_id": "x"})
        assert refused.status_code == 409
        assert "state.max_watches = 2" in refused.json()["error"]
        again = await client.post(
            "/v1/watches", json={"vector_store_id": VS, "batch_id": "vsfb_slow"}
        )
        assert again.status_code == 200
        assert len(daemon.engine) == 2


async def test_the_status_page_escapes_what_users_send(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labels holding markup show as text on the status page, never as markup."""
    _, url = sim
    hostile = {
        "team": "<script>alert('x')</script>",
        "note": '"><img src=x onerror=alert(1)>',
        "amp": "a&b ü ✓",
    }
    daemon = Daemon(_config(tmp_path, url))
    async with running_daemon(monkeypatch, daemon) as client:
        body = {"vector_store_id": VS, "batch_id": "vsfb_slow", "labels": hostile}
        assert (await client.post("/v1/watches", json=body)).status_code == 201
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "<script>" not in html
        assert "<img" not in html
        assert "team=&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
        assert "note=&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
        assert "amp=a&amp;b ü ✓" in html
        assert f'href="/batches/{VS}/vsfb_slow"' in html
        assert "/v1/watches/" not in html


async def test_metrics_are_served_in_either_format(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/metrics`` serves the text format by default and OpenMetrics when asked, both with the
    watched batch's series."""
    _, url = sim
    config = _config(tmp_path, url, {"watch": [{"vector_store_id": VS, "batch_id": "vsfb_slow"}]})
    async with running_daemon(monkeypatch, Daemon(config)) as client:
        text = await client.get("/metrics")
        assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
        names = {f.name for f in text_string_to_metric_families(text.text)}
        assert "openai_vector_store_file_batch_status" in names
        om = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.endswith("# EOF\n")
        assert 'batch_id="vsfb_slow"' in om.text


async def test_metrics_are_gzipped_when_the_scraper_asks(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/metrics`` is gzip-compressed for a scraper that accepts it (as Prometheus does), with
    the same exposition inside, and plain for one that does not."""
    _, url = sim
    config = _config(tmp_path, url, {"watch": [{"vector_store_id": VS, "batch_id": "vsfb_slow"}]})
    async with running_daemon(monkeypatch, Daemon(config)) as client:
        plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        async with client.stream("GET", "/metrics", headers={"Accept-Encoding": "gzip"}) as packed:
            raw = b"".join([chunk async for chunk in packed.aiter_raw()])
        assert packed.headers["content-encoding"] == "gzip"
        assert len(raw) < len(plain.content)
        inflated = gzip.decompress(raw).decode()
        assert 'batch_id="vsfb_slow"' in inflated
        names = {f.name for f in text_string_to_metric_families(inflated)}
        assert names == {f.name for f in text_string_to_metric_families(plain.text)}


async def test_a_damaged_state_store_stops_the_start_and_frees_the_port(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve`` refuses a damaged state file with a ConfigError naming ``state.path``, and the
    socket it bound is closed again."""
    _, url = sim
    (tmp_path / "state.sqlite3").write_bytes(b"garbage, not SQLite" * 100)
    bound: list[socket.socket] = []

    def capture(host: str, port: int) -> socket.socket:
        bound.append(bind(host, port))
        return bound[-1]

    monkeypatch.setattr(watcher.daemon.service, "bind", capture)
    daemon = Daemon(_config(tmp_path, url))
    with pytest.raises(ConfigError, match=r"^state\.path: "):
        await daemon.serve()
    await daemon.engine.client.aclose()
    [sock] = bound
    assert sock.fileno() == -1, "the listening socket was left open"


async def test_the_control_api_answers_503_while_the_store_cannot_write(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process holds the state file's lock, a registration is refused with 503
    and Retry-After (and not kept: it was never on disk), a deletion too, ``/readyz`` says why,
    and health, metrics and the list go on; once the lock is gone, all is as before."""
    _, url = sim
    daemon = Daemon(_config(tmp_path, url))
    daemon.store.busy_seconds, daemon.store.flush_seconds = 0.05, 0.05
    daemon.store.max_retry_seconds = 0.2
    body = {"vector_store_id": VS, "batch_id": "vsfb_slow"}
    one = f"/v1/watches/{VS}/vsfb_slow"
    async with running_daemon(monkeypatch, daemon) as client:
        assert (await client.post("/v1/watches", json=body)).status_code == 201
        holder = sqlite3.connect(tmp_path / "state.sqlite3", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            refused = await client.post("/v1/watches", json={**body, "batch_id": "vsfb_slow2"})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "5"
            assert refused.json()["error"].startswith("the state store ")
            assert "cannot write" in refused.json()["error"]
            assert "locked" in refused.json()["error"]
            assert daemon.engine.get(VS, "vsfb_slow2") is None
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            [problem] = ready.json()["problems"]
            assert problem.startswith("the state store cannot write")
            assert "locked" in problem
            assert (await client.delete(one)).status_code == 503
            assert daemon.engine.get(VS, "vsfb_slow") is not None
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200
            listed = await client.get("/v1/watches")
            assert [w["batch_id"] for w in listed.json()["watches"]] == ["vsfb_slow"]
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await _until(ready, "ready again once the lock is gone")
        added = await client.post("/v1/watches", json={**body, "batch_id": "vsfb_slow2"})
        assert added.status_code == 201
        assert (await client.delete(one)).status_code == 204
    again = daemon.store.__class__(tmp_path / "state.sqlite3")
    assert [w.batch_id for w in await again.open()] == ["vsfb_slow2"]
    await again.aclose()


async def test_healthz_stays_200_while_the_api_makes_everyone_wait(
    tmp_path: Path, sim: tuple[Simulator, str]
) -> None:
    """A 429 whose Retry-After outlasts the health threshold does not make ``/healthz`` fail:
    the API's wait is not a stuck scheduler."""
    simulator, url = sim
    shift = [0.0]

    def clock() -> float:
        return time.monotonic() + shift[0]

    engine = Engine.create(
        ClientSettings(base_url=url, api_key=Secret(KEY)),
        EngineSettings(max_concurrency=1, poll=PollSettings(interval=0.1, min_interval=0.05)),
        clock=clock,
    )
    daemon = Daemon(_config(tmp_path, url))
    await daemon.store.open()
    state = AppState(
        engine=engine,
        metrics=daemon.metrics,
        store=daemon.store,
        poll=daemon.config.poll,
        control_token=None,
        loopback=True,
        clock=clock,
    )
    simulator.inject(
        Fault(FaultKind.RATE_LIMIT, endpoint="retrieve", retry_after_seconds=120, times=1)
    )
    try:
        async with anyio.create_task_group() as tg, serving(state) as client:
            await tg.start(engine.run)
            # One watch gets the 429, one waits in the worker, one waits for the worker.
            for batch_id in ("vsfb_slow", "vsfb_slow2", "vsfb_slow3"):
                engine.add(VS, batch_id)

            async def paused() -> bool:
                return simulator.stats.as_json(per_batch=False)["statuses"].get("429", 0) >= 1

            await _until(paused, "the 429")
            await anyio.sleep(1.5)  # the scheduler now waits for the one worker, held 120 s
            shift[0] += HEALTHY_TICK_SECONDS + 1  # half a minute passes for the clocks
            await anyio.sleep(1.5)  # a turning scheduler ticks at least once a second
            response = await client.get("/healthz")
            tg.cancel_scope.cancel()
        assert response.status_code == 200, response.json()
    finally:
        await daemon.store.aclose()
        await daemon.engine.client.aclose()


# -- the control API against a web page, cut-off and slow bodies ---------------------------------


async def test_a_write_must_say_it_is_json(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A POST whose body is a valid watch but whose type is a form's or ``text/plain`` (what a
    cross-site page can send without a preflight) is 415 and registers nothing; JSON with a
    charset is accepted."""
    _, url = sim
    daemon = Daemon(_config(tmp_path, url))
    body = b'{"vector_store_id": "vs_app", "batch_id": "vsfb_slow"}'
    async with running_daemon(monkeypatch, daemon) as client:
        for content_type in (
            None,
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
        ):
            headers = {} if content_type is None else {"Content-Type": content_type}
            response = await client.post("/v1/watches", content=body, headers=headers)
            assert response.status_code == 415, content_type
            assert "application/json" in response.json()["error"]
        assert len(daemon.engine) == 0
        response = await client.post(
            "/v1/watches", content=body, headers={"Content-Type": "Application/JSON; charset=utf-8"}
        )
        assert response.status_code == 201


async def test_without_a_token_a_foreign_host_is_refused(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no control token, a request whose Host is not a loopback name (DNS rebinding) gets
    421 on every control route and changes nothing; loopback names pass, and health and metrics
    stay open to any Host."""
    _, url = sim
    daemon = Daemon(_config(tmp_path, url))
    one = f"/v1/watches/{VS}/vsfb_slow"
    async with running_daemon(monkeypatch, daemon) as client:
        port = client.base_url.port
        assert (
            await client.post("/v1/watches", json={"vector_store_id": VS, "batch_id": "vsfb_slow"})
        ).status_code == 201
        for host in (
            f"evil.example:{port}",
            "evil.example",
            f"127.0.0.1.evil.example:{port}",
            f"evil@127.0.0.1:{port}",
            "",
        ):
            for method, path in (("GET", "/v1/watches"), ("GET", one), ("DELETE", one)):
                response = await client.request(method, path, headers={"Host": host})
                assert response.status_code == 421, (host, method, path)
                assert "Host" in response.json()["error"]
            response = await client.post(
                "/v1/watches",
                json={"vector_store_id": VS, "batch_id": "vsfb_slow2"},
                headers={"Host": host},
            )
            assert response.status_code == 421
            for path in ("/healthz", "/metrics"):
                assert (await client.get(path, headers={"Host": host})).status_code == 200
        assert [w.batch_id for w in daemon.engine.watches()] == ["vsfb_slow"]
        for host in (
            f"localhost:{port}",
            f"LOCALHOST:{port}",
            f"127.0.0.1:{port}",
            "[::1]",
            "127.0.0.1",
        ):
            assert (await client.get(one, headers={"Host": host})).status_code == 200, host


async def test_with_a_token_the_host_is_not_checked(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a control token the token decides, whatever the Host (a sidecar is reached by a
    service name)."""
    _, url = sim
    daemon = Daemon(_config(tmp_path, url, BATCH_WATCHER_CONTROL_TOKEN=TOKEN))
    async with running_daemon(monkeypatch, daemon) as client:
        headers = {"Host": "batch-watcher.default.svc:9464"}
        assert (await client.get("/v1/watches", headers=headers)).status_code == 401
        response = await client.get("/v1/watches", headers={**headers, **_bearer(TOKEN)})
        assert response.status_code == 200


def test_host_name_reads_only_a_plain_host() -> None:
    """``host_name`` lower-cases the name, drops the port and IPv6 brackets, and gives None for
    anything that could hide a different name (userinfo, a path, a bad port)."""
    assert host_name("LocalHost:8080") == "localhost"
    assert host_name("[::1]:9464") == "::1"
    assert host_name("127.0.0.1") == "127.0.0.1"
    for bad in ("", "evil@127.0.0.1", "127.0.0.1/x", "127.0.0.1:port", "a b", "127.0.0.1#x"):
        assert host_name(bad) is None, bad


async def test_readyz_is_not_ready_without_an_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no API key anywhere and an API off this machine, ``/readyz`` is 503 saying so as
    ``check-config`` does."""
    # Never contacted: the daemon holds no watch, and .invalid never resolves.
    remote = "https://api.batch-watcher-test.invalid/v1"
    daemon = Daemon(_config(tmp_path, remote, OPENAI_API_KEY=""))
    async with running_daemon(monkeypatch, daemon) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        [problem] = response.json()["problems"]
        assert problem.startswith("api.api_key: no API key in environment variable OPENAI_API_KEY")


async def test_readyz_needs_no_key_for_an_api_on_this_machine(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no API key and the API on loopback (the simulator), ``/readyz`` is ready."""
    _, url = sim
    daemon = Daemon(_config(tmp_path, url, OPENAI_API_KEY=""))
    async with running_daemon(monkeypatch, daemon) as client:
        assert (await client.get("/readyz")).json() == {"status": "ready", "problems": []}


async def test_a_watch_from_the_configuration_file_cannot_be_deleted(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DELETE of a watch the configuration file declares is 409 saying to remove it there, and
    the watch stays, on disk too; a watch registered through the API is deleted (204)."""
    _, url = sim
    watches = [{"vector_store_id": VS, "batch_id": b} for b in ("vsfb_slow", "vsfb_slow2")]
    daemon = Daemon(_config(tmp_path, url, {"watch": watches}))
    async with running_daemon(monkeypatch, daemon) as client:
        response = await client.delete(f"/v1/watches/{VS}/vsfb_slow2")
        assert response.status_code == 409
        message = response.json()["error"]
        assert "configuration file (watch[1])" in message
        assert "remove it there" in message
        assert (await client.get(f"/v1/watches/{VS}/vsfb_slow2")).status_code == 200
        body = {"vector_store_id": VS, "batch_id": "vsfb_slow3"}
        assert (await client.post("/v1/watches", json=body)).status_code == 201
        assert (await client.delete(f"/v1/watches/{VS}/vsfb_slow3")).status_code == 204
    assert sorted(_stored(tmp_path)) == [(VS, "vsfb_slow"), (VS, "vsfb_slow2")]


async def _raw_exchange(client: httpx.AsyncClient, request: bytes, then_close: bool) -> bytes:
    """Send ``request`` on a raw socket to the client's server; read the answer until the server
    closes (or return at once, having closed our side, when ``then_close``)."""
    host, port = client.base_url.host, client.base_url.port
    assert port is not None
    stream = await anyio.connect_tcp(host, port)
    async with stream:
        await stream.send(request)
        if then_close:
            return b""
        received = b""
        with anyio.fail_after(10):
            while True:
                try:
                    received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return received


async def test_a_body_that_stops_coming_is_answered_408(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A POST that declares more body than it sends is answered 408 once the body deadline
    passes, and the connection is closed."""
    _, url = sim
    daemon = Daemon(_config(tmp_path, url), limits=ServerLimits(body_timeout_seconds=0.5))
    async with running_daemon(monkeypatch, daemon) as client:
        head = (
            b"POST /v1/watches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        answer = await _raw_exchange(client, head + b'{"vector_store_id": ', then_close=False)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert b"connection: close" in answer.lower()
        assert len(daemon.engine) == 0


async def test_a_body_cut_off_is_one_quiet_log_line(
    tmp_path: Path,
    sim: tuple[Simulator, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that hangs up in the middle of a POST body leaves one ``request_aborted`` event
    and no traceback; the next request is served."""
    _, url = sim
    daemon = Daemon(_config(tmp_path, url))
    async with running_daemon(monkeypatch, daemon) as client:
        head = (
            b"POST /v1/watches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        with structlog.testing.capture_logs() as captured:
            await _raw_exchange(client, head + b'{"vector_store_id": ', then_close=True)

            async def logged() -> bool:
                return any(e["event"] == "request_aborted" for e in captured)

            await _until(logged, "request_aborted")
        [event] = [e for e in captured if e["event"] == "request_aborted"]
        assert event["path"] == "/v1/watches"
        assert event["received_bytes"] == len(b'{"vector_store_id": ')
        assert (await client.get("/healthz")).status_code == 200
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_openapi_json_is_the_document_in_docs(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/openapi.json`` serves exactly ``docs/openapi.json``, an OpenAPI 3.1 document that
    lists every control route with the methods the app answers."""
    _, url = sim
    document = Path(__file__).parents[1] / "docs" / "openapi.json"
    daemon = Daemon(_config(tmp_path, url))
    async with running_daemon(monkeypatch, daemon) as client:
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.content == document.read_bytes()
        spec = response.json()
        assert spec["openapi"] == "3.1.0"
        paths = spec["paths"]
        assert set(paths["/v1/watches"]) == {"get", "post"}
        assert set(paths["/v1/watches/{vector_store_id}/{batch_id}"]) - {"parameters"} == {
            "get",
            "delete",
        }
        # The app's 405 names the same methods the document does.
        allow = (await client.put("/v1/watches")).headers["allow"]
        assert {m.strip().lower() for m in allow.split(",")} - {"head"} == {"get", "post"}


async def test_a_control_token_file_that_goes_missing_closes_the_api(
    tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the configured token file disappears, the control API on loopback answers 503 to
    everyone instead of opening, ``/readyz`` names the key; once the file is back, the token
    works again."""
    _, url = sim
    token_file = tmp_path / "control-token"
    token_file.write_text(TOKEN)
    daemon = Daemon(_config(tmp_path, url, {"server": {"control_token_file": str(token_file)}}))
    async with running_daemon(monkeypatch, daemon) as client:
        assert (await client.get("/v1/watches", headers=_bearer(TOKEN))).status_code == 200
        assert (await client.get("/v1/watches")).status_code == 401
        token_file.unlink()
        await _until(lambda: _status(client, "/v1/watches", 503), "the API closed")
        body = {"vector_store_id": VS, "batch_id": "vsfb_slow"}
        assert (await client.post("/v1/watches", json=body)).status_code == 503
        assert len(daemon.engine) == 0
        response = await client.get("/readyz")
        assert response.status_code == 503
        [problem] = response.json()["problems"]
        assert problem.startswith("server.control_token_file: no token in ")
        token_file.write_text(TOKEN)

        async def open_with_the_token() -> bool:
            response = await client.get("/v1/watches", headers=_bearer(TOKEN))
            return response.status_code == 200

        await _until(open_with_the_token, "the token accepted again")
        assert (await client.get("/readyz")).status_code == 200
