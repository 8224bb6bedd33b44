"""The daemon's HTTP app on a real loopback server: health, the control API, the status page."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

import watcher.daemon.service
from watcher.api.client import ClientSettings
from watcher.config import Config, config_from_mapping
from watcher.core.engine import Engine
from watcher.core.policy import PollSettings
from watcher.core.settings import EngineSettings
from watcher.credentials import Secret
from watcher.daemon.service import Daemon
from watcher.daemon.web import HEALTHY_TICK_SECONDS, AppState, build_app
from watcher.errors import ConfigError
from watcher.serving import EmbeddedServer, bind
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
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
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
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
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
        for path in ("/metrics", "/healthz", "/readyz", "/"):
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
        assert "team=&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
        assert "note=&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
        assert "amp=a&amp;b ü ✓" in html
        assert f'href="/v1/watches/{VS}/vsfb_slow"' in html


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
