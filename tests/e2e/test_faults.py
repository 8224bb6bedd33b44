"""The real daemon against the simulator injecting every fault it knows."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from figures import record
from harness import DaemonProcess, SimulatorProcess, announced, http

from watcher.core.settings import EngineSettings

VS = "vs_faults"
TIMEOUT_SECONDS = 1.0
SLOW_SECONDS = TIMEOUT_SECONDS + 0.5  # a slow reply comes after the daemon gave up on it
BUDGET_PER_MINUTE = 1200
CONCURRENCY = 4
MAX_FAILED_FILES = 100
POLL = {
    "interval_seconds": 0.2,
    "min_interval_seconds": 0.1,
    "max_interval_seconds": 1.0,
    "stall_after_seconds": 0,
}
Fault = dict[str, Any]


def _fault(kind: str, endpoint: str | None = None, **fields: Any) -> Fault:
    return {"kind": kind, **({"endpoint": endpoint} if endpoint else {}), **fields}


#: batch id → (its spec beyond the defaults, its faults). Every fault the simulator knows.
MATRIX: dict[str, tuple[dict[str, Any], list[Fault]]] = {
    "vsfb_429": ({}, [_fault("rate_limit", "retrieve", times=2, retry_after_seconds=1)]),
    "vsfb_429_bare": (
        {},
        [
            _fault("rate_limit_bare", "retrieve", times=2),
            _fault("rate_limit_bare", "list", times=1),
        ],
    ),
    "vsfb_5xx_burst": (
        {},
        [
            _fault("server_error", "retrieve", times=5, status=503),
            _fault("server_error", "list", times=3, status=500),
        ],
    ),
    "vsfb_html": (
        {},
        [
            _fault("html_error", "retrieve", times=3),
            _fault("html_error", "list", times=2, status=504),
        ],
    ),
    "vsfb_truncated": (
        {},
        [_fault("truncated_json", "retrieve", times=3), _fault("truncated_json", "list", times=2)],
    ),
    "vsfb_dropped": ({}, [_fault("drop", "retrieve", times=3), _fault("drop", "list", times=2)]),
    "vsfb_cut": (
        {},
        [_fault("cut_body", "retrieve", times=2), _fault("cut_body", "list", times=2)],
    ),
    "vsfb_slow": (
        {"duration_seconds": 5},
        [
            _fault("slow", "retrieve", times=2, delay_seconds=SLOW_SECONDS),
            _fault("slow", "list", times=1, delay_seconds=SLOW_SECONDS),
        ],
    ),
    "vsfb_unknown": ({}, [_fault("unknown_status", "retrieve", times=3, value="paused")]),
    "vsfb_vanish": ({"duration_seconds": 120}, []),
    "vsfb_loop": ({"total_files": 300, "failed_files": 150}, [_fault("pagination_loop", "list")]),
    "vsfb_empty_page": ({}, [_fault("empty_page", "list")]),
    "vsfb_failed": ({"final_status": "failed"}, [_fault("server_error", "retrieve", times=2)]),
    "vsfb_cancelled": (
        {"final_status": "cancelled", "cancelled_files": 10, "failed_files": 5},
        [_fault("drop", "retrieve", times=1)],
    ),
    "vsfb_many_failed": ({"total_files": 400, "failed_files": 250}, []),
}
#: Batches whose failed-file list the server's pagination never lets anyone finish.
BROKEN_LISTS = {"vsfb_loop": "loops", "vsfb_empty_page": "is empty"}


def _spec(batch_id: str, extra: Mapping[str, Any], faults: list[Fault]) -> dict[str, Any]:
    return {
        "vector_store_id": VS,
        "batch_id": batch_id,
        "total_files": 40,
        "failed_files": 12,
        "duration_seconds": 2.5,
        **extra,
        "faults": faults,
    }


def _watch(batch_id: str) -> dict[str, str]:
    return {"vector_store_id": VS, "batch_id": batch_id}


def _watches(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    return {w["batch_id"]: w for w in daemon.request("GET", "/v1/watches").json()["watches"]}


def _counter(
    samples: Iterable[tuple[str, dict[str, str], float]], name: str, label: str
) -> Counter[str]:
    totals: Counter[str] = Counter()
    for sample, labels, value in samples:
        if sample == name:
            totals[labels[label]] += int(value)
    return totals


def _check_result(
    batch_id: str, result: Mapping[str, Any], truth: Mapping[str, Any], cap: int = MAX_FAILED_FILES
) -> None:
    """The watch ended as the simulator's truth says, with the failed files it holds."""
    assert result["status"] == truth["status"], batch_id
    assert result["file_counts"] == truth["file_counts"], batch_id
    true_files = {f["id"]: f["code"] for f in truth["failed_files"]}
    kept = {f["id"]: f["last_error"]["code"] for f in result["failed_files"]}
    assert kept.items() <= true_files.items(), batch_id
    if batch_id in BROKEN_LISTS:
        assert result["failed_files_complete"] is False, batch_id
        assert BROKEN_LISTS[batch_id] in result["note"], (batch_id, result["note"])
        return
    assert result["failed_files_complete"] is True, (batch_id, result["note"])
    assert result["failed_files_listed"] == len(true_files), batch_id
    assert result["failed_files_by_code"] == dict(Counter(true_files.values())), batch_id
    assert len(kept) == min(len(true_files), cap), batch_id
    assert result["failed_files_truncated"] is (len(true_files) > cap), batch_id


def test_every_fault_the_simulator_knows(
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    """With one fault kind per batch, the daemon stays up and ready, sees every batch end with
    the right counts and failed files (the vanished one ``not_found``), stops polling what ended,
    stays within its request budget, and its metrics count what happened."""
    sim = simulator_factory("--scenario", "empty", "--seed", "7")
    for batch_id, (extra, faults) in MATRIX.items():
        sim.control("POST", "batches", _spec(batch_id, extra, faults))
    started = time.monotonic()
    daemon = daemon_factory(
        {
            "api": {
                "base_url": sim.url,
                "timeout_seconds": TIMEOUT_SECONDS,
                "max_requests_per_minute": BUDGET_PER_MINUTE,
                "max_concurrency": CONCURRENCY,
            },
            "poll": POLL,
            "state": {"max_failed_files": MAX_FAILED_FILES},
            "watch": [_watch(b) for b in MATRIX],
        }
    )
    unready: list[str] = []
    vanished = False

    def everything_ended() -> dict[str, dict[str, Any]] | None:
        nonlocal vanished
        for path in ("/healthz", "/readyz"):
            if (status := daemon.request("GET", path).status_code) != 200:
                unready.append(f"{path}: {status}")
        watches = _watches(daemon)
        if not vanished and watches["vsfb_vanish"]["file_counts"] is not None:
            sim.control("POST", "batches/vsfb_vanish/vanish")
            vanished = True
        return watches if all("result" in w for w in watches.values()) else None

    watches = daemon.wait_until(everything_ended, timeout=90, what="every watch ended")
    elapsed = time.monotonic() - started
    assert unready == []
    assert daemon.proc.poll() is None

    truth = sim.truth()
    for batch_id, watch in watches.items():
        if batch_id == "vsfb_vanish":
            assert watch["result"]["status"] == "not_found"
            assert watch["result"]["failed_files"] == []
            continue
        _check_result(batch_id, watch["result"], truth[batch_id])
    unknown = [e["batch_id"] for e in daemon.events("status_unknown")]
    assert unknown == ["vsfb_unknown"]

    # Polling of what ended stops: no retrieve ever followed a reply that showed it ended, and
    # nothing at all is asked while the daemon idles for longer than its longest interval (and
    # than the slowest reply takes to go out, so that the simulator has counted it).
    before = sim.stats()["requests"]
    time.sleep(max(POLL["max_interval_seconds"], SLOW_SECONDS) + 0.5)
    stats = sim.stats()
    assert stats["requests"] == before
    assert stats["retrieves_after_terminal"] == 0, stats["retrieves_after_terminal_by_batch"]

    # Within the budget: requests are spaced 60 / budget seconds apart.
    allowed = (time.monotonic() - started) * BUDGET_PER_MINUTE / 60 + 1
    assert stats["requests"] <= allowed

    # The metrics say what happened: every reply the simulator sent is counted under its
    # status, and every exchange that got no complete reply under "error".
    samples = daemon.samples()
    by_code = _counter(samples, "batch_watcher_api_requests_total", "code")
    faults = Counter(stats["faults"])
    no_reply = faults["drop"] + faults["slow"] + faults["cut_body"]
    sent = Counter(stats["statuses"])
    # A slow reply is not sent once the client gave up (the simulator sees it hang up); a cut
    # one announced its status but never arrived whole.
    sent["200"] -= faults["cut_body"]
    assert +Counter({k: v for k, v in by_code.items() if k != "error"}) == +sent
    assert by_code["error"] >= no_reply
    for code in ("429", "500", "502", "503", "504"):
        assert by_code[code] > 0, code
    finished = _counter(samples, "batch_watcher_batches_finished_total", "status")
    assert +finished == Counter(w["result"]["status"] for w in watches.values())
    for batch_id, watch in watches.items():
        status = watch["result"]["status"]
        assert (
            daemon.metric(
                "openai_vector_store_file_batch_status",
                vector_store_id=VS,
                batch_id=batch_id,
                status=status,
            )
            == 1.0
        ), batch_id
    failed_metric = {
        (labels["batch_id"], labels["code"]): value
        for name, labels, value in samples
        if name == "openai_vector_store_file_batch_failed_files"
    }
    for batch_id, watch in watches.items():
        for code, count in watch["result"]["failed_files_by_code"].items():
            assert failed_metric[(batch_id, code)] == count, (batch_id, code)

    logs = daemon.logs()
    assert [e for e in logs if e.get("event") == "internal_error"] == []
    failures = [e for e in logs if e.get("event") == "poll_failed"]
    assert {e["error"] for e in failures} >= {"RateLimited", "Transient", "ProtocolError"}
    # Every failed reply is logged with its request id, except a proxy's HTML page, which has none.
    with_reply = [
        e for e in failures if e["http_status"] is not None and "HTML" not in e["message"]
    ]
    assert with_reply
    assert all(e["request_id"] for e in with_reply)
    ended = announced(logs)
    record(
        tmp_path,
        "fault_matrix",
        faults_injected=sum(faults.values()) + 1,  # and the vanishing
        requests=stats["requests"],
        batches_finished=len(watches),
        watches_lost=len(MATRIX) - len(watches),
        duplicates=len(ended) - len(set(ended)),
        elapsed_seconds=round(elapsed, 1),
    )
    assert len(watches) == len(MATRIX)
    assert sorted(ended) == sorted(MATRIX)


RATE_LIMIT = (12, 1.0)  # the server allows 12 requests a second
KEY = "sk-test-reliability-key"
AUTH_RETRY_SECONDS = EngineSettings().auth_retry_seconds  # how often a refused key is probed


def test_global_rate_limit_and_a_key_refused_then_accepted(
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    """Under a global rate limit the daemon slows down before the server must refuse it; when
    the key is refused mid-run it stops polling, stays alive and reports not ready, and once the
    key works again it resumes and sees every batch end correctly."""
    requests, window = RATE_LIMIT
    sim = simulator_factory(
        "--scenario",
        "empty",
        "--api-key-env",
        "SIM_KEY",
        "--rate-limit",
        f"{requests}/{window}",
        env={"SIM_KEY": KEY},
    )
    batches = {f"vsfb_rl_{n}": 20 + 10 * n for n in range(9)}
    batches["vsfb_rl_pages"] = 400
    for batch_id, total in batches.items():
        sim.control(
            "POST",
            "batches",
            _spec(
                batch_id,
                {"total_files": total, "failed_files": total // 2, "duration_seconds": 6.0},
                [],
            ),
        )
    # However slow the machine, one batch is still running when the key is refused: it ends
    # only when the test cancels it, after the key works again.
    hold = "vsfb_rl_hold"
    batches[hold] = 20
    sim.control(
        "POST",
        "batches",
        _spec(hold, {"total_files": 20, "failed_files": 0, "duration_seconds": 86_400.0}, []),
    )
    started = time.monotonic()
    daemon = daemon_factory(
        {
            "api": {
                "base_url": sim.url,
                "timeout_seconds": TIMEOUT_SECONDS,
                # Twice what the server allows: its headers must slow the daemon down.
                "max_requests_per_minute": int(2 * 60 * requests / window),
                "max_concurrency": CONCURRENCY,
            },
            "poll": POLL,
            "watch": [_watch(b) for b in batches],
        },
        env={"OPENAI_API_KEY": KEY},
    )
    # Ten batches polled every 0.2 s want 50 requests a second: let the limit bite a while.
    daemon.wait_until(lambda: sim.stats()["requests"] >= 5 * requests, what="some polling")

    flipped = time.monotonic()
    sim.set_api_key("sk-someone-else")
    daemon.wait_until(
        lambda: daemon.metric("batch_watcher_auth_failing") == 1.0, what="the key refused"
    )
    # Refused before the daemon knew: what it had under way when the key changed, and the file
    # lookups of turns that went on meanwhile (a lookup refused ends only its own turn's
    # lookups), as many as a busy machine let through.
    refused_before = Counter(sim.stats()["statuses"])["401"]
    ready = daemon.request("GET", "/readyz")
    assert ready.status_code == 503
    assert any("refuses the credentials" in p for p in ready.json()["problems"])
    assert daemon.request("GET", "/healthz").status_code == 200
    refused_at = sim.stats()["requests"]
    sim.set_api_key(KEY)
    refused_for = time.monotonic() - flipped
    daemon.wait_until(
        lambda: daemon.metric("batch_watcher_auth_failing") == 0.0,
        timeout=60,
        what="the key accepted again",
    )
    assert daemon.request("GET", "/readyz").status_code == 200
    cancel = http().post(
        f"{sim.url}/vector_stores/{VS}/file_batches/{hold}/cancel",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert cancel.status_code == 200, cancel.text

    watches = daemon.wait_until(
        lambda: (w := _watches(daemon)) and all("result" in x for x in w.values()) and w,
        timeout=60,
        what="every batch ended",
    )
    truth = sim.truth()
    for batch_id, watch in watches.items():
        _check_result(batch_id, watch["result"], truth[batch_id], cap=1000)
    elapsed = time.monotonic() - started
    stats = sim.stats()
    statuses = Counter(stats["statuses"])
    seen = (
        f"{stats} in {elapsed:.1f} s, the key refused for {refused_for:.1f} s,"
        f" {refused_before} refusals before the daemon said so"
    )
    # Once the daemon knows the key is refused it stops: what was still in flight (one request
    # per worker, and the one handed to the first worker free), then one probe every 30 s for
    # as long as the key stayed refused (however long a busy machine took to notice).
    probes = 1 + int(refused_for // AUTH_RETRY_SECONDS)
    assert refused_before >= 1, seen
    assert statuses["401"] - refused_before <= CONCURRENCY + 1 + probes, seen
    assert [e["event"] for e in daemon.logs() if e.get("event", "").startswith("auth_")] == [
        "auth_failed",
        "auth_recovered",
    ]
    assert refused_at > 0
    # The rate-limit headers slow the daemon down before the server has to refuse it (a rare
    # 429 remains possible for requests given their turn before the window ran out).
    assert statuses["429"] <= stats["requests"] // 25, seen
    allowed = elapsed * 2 * requests / window + 1
    assert stats["requests"] <= allowed, seen
    ended = announced(daemon.logs())
    record(
        tmp_path,
        "rate_limit_and_key_flip",
        faults_injected=statuses["429"] + statuses["401"],
        requests=stats["requests"],
        batches_finished=len(watches),
        watches_lost=len(batches) - len(watches),
        duplicates=len(ended) - len(set(ended)),
        rate_limited=statuses["429"],
        refused=statuses["401"],
    )
    assert sorted(ended) == sorted(batches)
