"""The API key, the control token and the webhook secret never show anywhere: not in output,
logs, metrics, the status page, the state file, webhooks or error messages."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from figures import record
from harness import DaemonProcess, WebhookReceiver, run_command, write_config
from hostile import HostileBatch, HostileServer, failed_files

VS = "vs_secrets"
WINDOW = 12  # a piece of a secret this long found anywhere is a leak


def _secret(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


#: Recognisable secrets; the Azure-style key has no prefix for a pattern to catch.
AZURE_KEY = secrets.token_hex(16)
BEARER_KEY = _secret("sk-proj-")
TOKEN = _secret("ctl-")
WEBHOOK_SECRET = _secret("whs-")
SECRETS = {
    "azure key": AZURE_KEY,
    "bearer key": BEARER_KEY,
    "control token": TOKEN,
    "webhook secret": WEBHOOK_SECRET,
}


def _pieces(secret: str) -> set[str]:
    core = secret.split("-")[-1]  # the random part: prefixes are not secret
    return {core[i : i + WINDOW] for i in range(len(core) - WINDOW + 1)}


PIECES = {name: _pieces(value) for name, value in SECRETS.items()}


def leaks(where: str, text: str | bytes) -> list[str]:
    """Which secrets show (a piece of them) in ``text``, as ``"<secret> in <where>"``."""
    data = text if isinstance(text, str) else text.decode("latin-1")
    return [
        f"{name} in {where}"
        for name, pieces in PIECES.items()
        if any(piece in data for piece in pieces)
    ]


def _batches() -> list[HostileBatch]:
    """Batches whose replies paste the caller's key into everything the server says."""
    files = failed_files("vsfb_s_files", ["unsupported_file", "invalid_file"])
    return [
        HostileBatch(VS, "vsfb_s_500", retrieve_tricks=["echo_500", "echo_500"]),
        HostileBatch(VS, "vsfb_s_400", retrieve_tricks=["echo_400_detail"]),
        HostileBatch(VS, "vsfb_s_html", retrieve_tricks=["echo_html"]),
        HostileBatch(VS, "vsfb_s_request_id", retrieve_tricks=["echo_request_id"]),
        HostileBatch(VS, "vsfb_s_status", retrieve_tricks=["echo_status", "echo_status"]),
        HostileBatch(VS, "vsfb_s_files", total=10, failed=files, list_tricks=["echo_files"]),
        HostileBatch(VS, "vsfb_s_failed", total=4, failed=files, status="failed"),
        # The same, with the key spelled in JSON escapes: only decoding makes it the key.
        HostileBatch(VS, "vsfb_s_500_esc", retrieve_tricks=["echo_500_escaped"]),
        HostileBatch(
            VS, "vsfb_s_status_esc", retrieve_tricks=["echo_status_escaped", "echo_status_escaped"]
        ),
        HostileBatch(
            VS, "vsfb_s_files_esc", total=10, failed=files, list_tricks=["echo_files_escaped"]
        ),
    ]


@pytest.fixture
def echo_server() -> Iterator[HostileServer]:
    """A server that echoes the caller's key; stopped after the test."""
    with HostileServer(_batches()) as server:
        yield server


def _watch(batch_id: str) -> dict[str, str]:
    return {"vector_store_id": VS, "batch_id": batch_id}


def _daemon_sinks(daemon: DaemonProcess) -> Iterator[tuple[str, str | bytes]]:
    """Everything the running daemon shows to the world."""
    yield "/metrics (text)", daemon.metrics_text()
    openmetrics = {"Accept": "application/openmetrics-text"}
    yield "/metrics (OpenMetrics)", daemon.request("GET", "/metrics", headers=openmetrics).text
    yield "the status page", daemon.request("GET", "/").text
    yield "/readyz", daemon.request("GET", "/readyz").text
    yield "/healthz", daemon.request("GET", "/healthz").text
    yield "/v1/watches", daemon.request("GET", "/v1/watches", token=TOKEN).text
    for batch in _batches():
        path = f"/v1/watches/{VS}/{batch.batch_id}"
        yield path, daemon.request("GET", path, token=TOKEN).text
    for wrong in ("", "Bearer", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}"):
        response = daemon.request("GET", "/v1/watches", headers={"Authorization": wrong})
        assert response.status_code == 401
        yield f"a 401 for {wrong[:6]!r}", f"{response.headers}\n{response.text}"
    yield "/proc/<pid>/cmdline", Path(f"/proc/{daemon.proc.pid}/cmdline").read_bytes()


def test_no_secret_shows_anywhere(
    echo_server: HostileServer,
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    """Through every code path (errors echoing the key, 401s, the control API with right and
    wrong tokens, webhooks, shutdown), the daemon, ``watch`` and ``check-config`` never show a
    piece of the API key, the control token or the webhook secret."""
    found: list[str] = []
    checked: list[str] = []

    def check(where: str, text: str | bytes) -> None:
        checked.append(where)
        found.extend(leaks(where, text))

    env = {
        "OPENAI_API_KEY": AZURE_KEY,
        "BATCH_WATCHER_CONTROL_TOKEN": TOKEN,
        "HOOK_SECRET": WEBHOOK_SECRET,
    }
    with WebhookReceiver() as hooks:
        config = {
            "api": {"base_url": echo_server.url, "auth": "azure", "timeout_seconds": 2.0},
            "poll": {
                "interval_seconds": 0.2,
                "min_interval_seconds": 0.1,
                "max_interval_seconds": 1.0,
                "stall_after_seconds": 0,
            },
            "log": {"level": "debug"},
            "notify": {"webhook_url": hooks.url, "webhook_secret_env": "HOOK_SECRET"},
            "watch": [_watch(b.batch_id) for b in _batches() if b.batch_id != "vsfb_s_failed"],
        }
        daemon = daemon_factory(config, env=env)
        added = daemon.request("POST", "/v1/watches", token=TOKEN, json=_watch("vsfb_s_failed"))
        assert added.status_code == 201
        daemon.wait_until(
            lambda: len(hooks.received()) == len(_batches()), what="every batch delivered"
        )
        for where, text in _daemon_sinks(daemon):
            check(where, text)

        # The key refused, with the server quoting it whole in its 401.
        echo_server.everything = "echo_401"
        # (The watch registered through the API: a configured one cannot be deleted.)
        one = f"/v1/watches/{VS}/vsfb_s_failed"
        assert daemon.request("DELETE", one, token=TOKEN).is_success
        daemon.request("POST", "/v1/watches", token=TOKEN, json=_watch("vsfb_s_failed"))
        daemon.wait_until(
            lambda: daemon.metric("batch_watcher_auth_failing") == 1.0, what="the key refused"
        )
        for where, text in _daemon_sinks(daemon):
            check(f"{where}, key refused", text)
        assert daemon.terminate() == 0
        deliveries = hooks.received()
    assert echo_server.tricks_played["echo_401"] >= 1
    assert echo_server.tricks_played["echo_files"] == 1
    for escaped in ("echo_500_escaped", "echo_status_escaped", "echo_files_escaped"):
        assert echo_server.tricks_played[escaped] >= 1, escaped

    for n, delivery in enumerate(deliveries):
        headers = {k: v for k, v in delivery.headers.items() if k != "webhook-signature"}
        check(f"webhook {n} headers", repr(headers))
        check(f"webhook {n} payload", delivery.body)
    logs = daemon.log_path.read_bytes()
    check("the daemon's stdout and stderr (logs)", logs)
    for event in (b"poll_failed", b"auth_failed", b"status_unknown", b"webhook_delivered"):
        assert event in logs, event
    for state in tmp_path.glob("state.sqlite3*"):
        check(f"the state file {state.name}", state.read_bytes())

    # The watch command, both outputs, then refused; each run against fresh scripts.
    targets = [f"{VS}/{b.batch_id}" for b in _batches()]
    tricks, requests = sum(echo_server.tricks_played.values()), echo_server.total_requests
    runs = (
        ("json", None, 1),
        ("text", None, 1),
        ("json", "echo_401", 4),
        ("text", "echo_401_escaped", 4),
    )
    for output, trick, status in runs:
        with HostileServer(_batches()) as server:
            server.everything = trick
            args = ["--base-url", server.url, "--interval", "0.2", "--log-level", "debug"]
            done = run_command(
                ["watch", *targets, *args, "--output", output], {"OPENAI_API_KEY": BEARER_KEY}
            )
            assert done.returncode == status, done.stderr[-2000:]
            assert server.tricks_played[trick or "echo_files"] >= 1
            tricks += sum(server.tricks_played.values())
            requests += server.total_requests
        check(f"watch --output {output} ({trick or 'echoes'}): stdout", done.stdout)
        check(f"watch --output {output} ({trick or 'echoes'}): stderr", done.stderr)

    # check-config, which describes every secret.
    path = write_config(tmp_path / "check.toml", config)
    shown = run_command(["check-config", "--config", str(path)], env=env)
    assert shown.returncode == 0, shown.stderr
    assert "control token: present" in shown.stdout
    check("check-config stdout", shown.stdout)
    check("check-config stderr", shown.stderr)

    record(
        tmp_path,
        "secrets",
        faults_injected=tricks,
        requests=requests,
        batches_finished=len({d.json["batch_id"] for d in deliveries}),
        secrets_leaked=len(found),
        places_checked=len(checked),
    )
    assert not found, "\n".join(found)
