"""The daemon and the ``watch`` command against a hostile server the project has never seen."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from figures import record
from harness import DaemonProcess, announced, run_command
from hostile import HostileBatch, HostileServer, failed_files
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

VS = "vs_hostile"
#: Tricks on retrieves, each played twice on its own batch before it answers properly.
RETRIEVE_TRICKS = (
    "wrong_content_type",
    "chunked_garbage",
    "huge_headers",
    "trickle",
    "trickle_body",
    "deep_json",
    "gzip_bomb",
    "error_body_200",
    "redirect_loop",
    "bad_utf8",
    "status_line_garbage",
    "close_early",
    "lying_length",
    "html_200",
    "status_999",
    "nan",
    "huge_number",
    "duplicate_keys",
    "control_char_id",
    "wrong_batch",
    "unicode_status",
    "absurd_hints",
)
#: Tricks on failed-file lists, each played twice on its own batch before it answers properly.
LIST_TRICKS = (
    "has_more_string",
    "null_data",
    "file_control_id",
    "deep_json",
    "gzip_bomb",
    "chunked_garbage",
    "lying_length",
    "status_line_garbage",
    "error_body_200",
)
#: Retrieve tricks played forever: these batches never finish, and must stay watched.
FOREVER = ("trickle", "gzip_bomb", "html_200")
#: Replies that are odd but valid: no error is logged for them.
BENIGN = frozenset({"duplicate_keys", "unicode_status", "absurd_hints"})
#: Replies that break before their headers are read: there is no request id to log.
HEADERLESS = frozenset({"status_line_garbage", "close_early", "huge_headers", "trickle"})
#: Error codes that could break the exposition format or a terminal, and what must become of them.
NASTY_CODES = {
    "unsupported_file": "unsupported_file",
    'quote"code': 'quote"code',
    "back\\slash\\": "back\\slash\\",
    "brace}{,=": "brace}{,=",
    "ошибка": "ошибка",
    "new\nline": "unknown",
    "esc\x1b[31m": "unknown",
    "x" * 200: "unknown",
    "": "unknown",
}
TIMEOUT_SECONDS = 1.0


def _batches() -> list[HostileBatch]:
    batches = []
    codes = ["unsupported_file", "invalid_file", "server_error"]
    for name in RETRIEVE_TRICKS:
        batch_id = f"vsfb_r_{name}"
        batches.append(
            HostileBatch(
                VS,
                batch_id,
                total=12,
                failed=failed_files(batch_id, codes, "bad\x1b[2J\x00 \ud800 file\nmessage"),
                retrieve_tricks=[name, name],
            )
        )
    for name in LIST_TRICKS:
        batch_id = f"vsfb_l_{name}"
        many = [codes[n % 3] for n in range(150)]  # two pages of 100
        batches.append(
            HostileBatch(
                VS, batch_id, total=200, failed=failed_files(batch_id, many), list_tricks=[name]
            )
        )
    batches.append(
        HostileBatch(VS, "vsfb_nasty_codes", total=30, failed=failed_files("n", list(NASTY_CODES)))
    )
    batches.append(HostileBatch(VS, "vsfb_failed", total=5, status="failed"))
    batches += [HostileBatch(VS, f"vsfb_forever_{name}", forever=name) for name in FOREVER]
    return batches


def _finishing(server: HostileServer) -> list[HostileBatch]:
    return [b for b in server.batches.values() if b.forever is None]


def _expected_code(code: str) -> str:
    return NASTY_CODES.get(code, code)


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    """A hostile server with one batch per trick; stopped after the test."""
    with HostileServer(_batches()) as server:
        yield server


def _peak_rss_mib(pid: int) -> float:
    """The process's resident-memory high-water mark (Linux ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return psutil.Process(pid).memory_info().rss / 2**20


def test_daemon_survives_the_hostile_server(
    hostile: HostileServer, daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    """Against every trick the daemon stays up and ready, sees every batch that can finish end
    with the right counts and failed files, keeps the others watched, and logs each error with
    its request id."""
    daemon = daemon_factory(
        {
            "api": {
                "base_url": hostile.url,
                "timeout_seconds": TIMEOUT_SECONDS,
                "max_concurrency": 4,
                "max_requests_per_minute": 6000,
            },
            "poll": {
                "interval_seconds": 0.2,
                "min_interval_seconds": 0.1,
                "max_interval_seconds": 1.0,
                "stall_after_seconds": 0,
            },
            "watch": [
                {"vector_store_id": b.vector_store_id, "batch_id": b.batch_id}
                for b in hostile.batches.values()
            ],
        }
    )
    finishing = {b.batch_id: b for b in _finishing(hostile)}
    unhealthy: list[str] = []

    def all_finished() -> dict[str, dict[str, Any]] | None:
        for path in ("/healthz", "/readyz"):
            if (status := daemon.request("GET", path).status_code) != 200:
                unhealthy.append(f"{path} {status}")
        watches = {w["batch_id"]: w for w in daemon.request("GET", "/v1/watches").json()["watches"]}
        done = all("result" in watches[b] for b in finishing)
        return watches if done else None

    watches = daemon.wait_until(all_finished, timeout=90, what="every finishing batch ended")
    assert daemon.proc.poll() is None
    assert unhealthy == []

    for batch_id, batch in finishing.items():
        result = watches[batch_id]["result"]
        assert result["status"] == batch.status, batch_id
        assert result["file_counts"] == batch.counts, batch_id
        assert result["failed_files_complete"] is True, (batch_id, result["note"])
        got = {f["id"]: f["last_error"]["code"] for f in result["failed_files"]}
        assert got == {f.id: _expected_code(f.code) for f in batch.failed}, batch_id
        for f in result["failed_files"]:
            assert f["last_error"]["message"].isprintable(), (batch_id, f)
    for name in FOREVER:
        forever = watches[f"vsfb_forever_{name}"]
        assert forever["state"] == "watching"
        assert forever["consecutive_failures"] >= 1

    logs = daemon.logs()
    assert [e for e in logs if e.get("event") == "internal_error"] == []
    assert "Traceback" not in daemon.log_path.read_text(errors="replace")
    logged_ids = {e.get("request_id") for e in logs}
    unlogged = {
        rid: trick
        for rid, trick in hostile.trick_request_ids.items()
        if trick not in BENIGN | HEADERLESS
        and hostile.trick_batches[rid] in finishing
        and rid not in logged_ids
    }
    assert unlogged == {}
    unknown = {e["batch_id"] for e in logs if e.get("event") == "status_unknown"}
    assert unknown == {"vsfb_r_unicode_status"}

    # The nasty codes come out of both exposition formats exactly as they went in.
    text = daemon.metrics_text()
    openmetrics = daemon.request(
        "GET", "/metrics", headers={"Accept": "application/openmetrics-text"}
    ).text
    for families in (text_string_to_metric_families(text), openmetrics_families(openmetrics)):
        codes = {
            s.labels["code"]
            for family in families
            for s in family.samples
            if s.name == "openai_vector_store_file_batch_failed_files"
            and s.labels["batch_id"] == "vsfb_nasty_codes"
        }
        assert codes == set(NASTY_CODES.values())
    # Gzip bombs never grow the daemon past a few response caps.
    peak = _peak_rss_mib(daemon.proc.pid)
    assert peak < 250, f"peak RSS {peak:.0f} MiB"

    played = sum(hostile.tricks_played.values())
    finished = sum(1 for w in watches.values() if "result" in w)
    record(
        tmp_path,
        "hostile_server_daemon",
        faults_injected=played,
        requests=hostile.total_requests,
        batches_finished=finished,
        watches_lost=len(hostile.batches) - len(watches),
        duplicates=_duplicates(logs),
        peak_rss_mib=round(peak, 1),
    )
    assert len(watches) == len(hostile.batches)
    assert _duplicates(logs) == 0


def _duplicates(logs: list[dict[str, Any]]) -> int:
    """Batches announced finished more than once."""
    ended = announced(logs)
    return len(ended) - len(set(ended))


#: One trickled reply costs the command its 30-second request timeout.
WATCH_SKIPS = frozenset({"trickle", "trickle_body"})


def test_watch_command_survives_the_hostile_server(hostile: HostileServer, tmp_path: Path) -> None:
    """``watch`` against every trick prints one valid JSON line per batch, with the right
    result for each batch that can finish, times out the others, exits 3 and never crashes."""
    finishing = [b for b in _finishing(hostile) if not b.batch_id.endswith(tuple(WATCH_SKIPS))]
    forever = [f"vsfb_forever_{name}" for name in FOREVER if name not in WATCH_SKIPS]
    targets = [f"{VS}/{b.batch_id}" for b in finishing] + [f"{VS}/{f}" for f in forever]
    started = time.monotonic()
    done = run_command(
        [
            "watch",
            *targets,
            "--base-url",
            hostile.url,
            "--interval",
            "0.2",
            "--timeout",
            "8",
            "--max-requests-per-minute",
            "6000",
            "--output",
            "json",
        ],
        env={"OPENAI_API_KEY": "sk-hostile-test"},
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 3, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    by_batch = {line["batch_id"]: line for line in lines}
    assert len(lines) == len(targets) == len(by_batch)
    for batch in finishing:
        line = by_batch[batch.batch_id]
        assert line["status"] == batch.status, batch.batch_id
        assert line["file_counts"] == batch.counts, batch.batch_id
        got = {f["id"]: f["last_error"]["code"] for f in line["failed_files"]}
        assert got == {f.id: _expected_code(f.code) for f in batch.failed}, batch.batch_id
    for batch_id in forever:
        assert by_batch[batch_id]["status"] == "timed_out"
    stderr_lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    failures = [e for e in stderr_lines if e.get("event") == "poll_failed"]
    assert failures
    assert any(e.get("request_id", "").startswith("req_hostile_") for e in failures)
    record(
        tmp_path,
        "hostile_server_watch",
        faults_injected=sum(hostile.tricks_played.values()),
        requests=hostile.total_requests,
        batches_finished=len(lines),
        watches_lost=len(targets) - len(lines),
        duplicates=len(lines) - len(by_batch),
        elapsed_seconds=round(elapsed, 1),
    )


def test_watch_text_output_carries_no_terminal_control_sequences(
    hostile: HostileServer,
) -> None:
    """Messages and ids full of escape sequences reach the text summary as harmless text."""
    targets = [f"{VS}/vsfb_r_wrong_content_type", f"{VS}/vsfb_nasty_codes"]
    done = run_command(
        ["watch", *targets, "--base-url", hostile.url, "--interval", "0.2", "--output", "text"],
        env={"OPENAI_API_KEY": "sk-hostile-test"},
        timeout=60,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "vsfb_nasty_codes: completed" in done.stdout
    for ch in done.stdout:
        assert ch.isprintable() or ch in "\n", repr(ch)
