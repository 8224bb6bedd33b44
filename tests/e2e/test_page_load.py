"""The status page under load leaves the daemon's event loop free: ``/healthz`` stays quick.

Sixteen clients reloading the pages as fast as they can, with 5,000 watches, once kept the loop
busy rendering: ``/healthz`` took 3–4 s, past a probe's 3 s timeout. Now the pages render in a
worker thread from a snapshot and are cached for a second.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import PYTHON, DaemonProcess, SimulatorProcess

VS = "vs_page_load"
WATCHES = 5_000
CLIENTS = 16
SECONDS = 15.0
#: /healthz p99 while the pages are hammered. Measured around 0.01–0.05 s on 2 busy cores;
#: before the fix it was 3–4 s. A probe with a 3 s timeout needs well under 1 s.
P99_BOUND = 0.5
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"

pytestmark = pytest.mark.e2e


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _probe(url: str, until: float) -> tuple[list[float], int]:
    """``/healthz`` every 50 ms until ``until``: each answer's latency, and how many failed."""
    latencies: list[float] = []
    failed = 0
    with httpx.Client(timeout=10) as http:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                ok = http.get(f"{url}/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            failed += not ok
            time.sleep(0.05)
    return latencies, failed


def test_healthz_stays_quick_while_the_pages_are_hammered(
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    """With 5,000 watches and 16 clients reloading the status page (several pages and filters)
    and batch pages without pause, ``/healthz`` answers every time with a p99 under 0.5 s, and
    the daemon keeps polling."""
    sim = simulator_factory(
        "--scenario",
        "template",
        "--batches",
        str(WATCHES),
        "--duration",
        "3600",
        "--vector-store-id",
        VS,
        "--prefix",
        "vsfb_load_",
    )
    ids = sorted(sim.truth())
    config: dict[str, Any] = {
        "api": {"base_url": sim.url, "max_requests_per_minute": 1200},
        "watch": [{"vector_store_id": VS, "batch_id": b, "labels": {"n": b[-1]}} for b in ids],
    }
    daemon = daemon_factory(config)
    daemon.wait_until(
        lambda: f"{WATCHES} watches" in daemon.request("GET", "/").text, what="every watch"
    )
    paths = [
        "/",
        "/?page=2",
        "/?page=50",
        "/?status=active&page=3",
        "/?label=n%3D7",
        "/?status=not_seen&per_page=500",
        *(f"/batches/{VS}/{b}" for b in ids[:: WATCHES // 10]),
    ]

    quiet, _ = _probe(daemon.url, time.monotonic() + 3)
    polls_before = sim.stats()["requests"]
    load = subprocess.Popen(
        [
            PYTHON,
            str(Path(__file__).with_name("page_load.py")),
            daemon.url,
            *paths,
            "--clients",
            str(CLIENTS),
            "--seconds",
            str(SECONDS),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert load.stdout is not None
        assert load.stdout.readline().strip() == "loading"  # every client connected and loading
        started = time.monotonic()
        latencies, failed = _probe(daemon.url, started + SECONDS - 2)
        polls = sim.stats()["requests"] - polls_before
        out, _ = load.communicate(timeout=SECONDS + 60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(10)
    hammered = json.loads(out)
    figures = {
        "watches": WATCHES,
        "clients": CLIENTS,
        "page_requests": hammered["requests"],
        "page_statuses": hammered["statuses"],
        "page_requests_per_second": round(hammered["requests"] / hammered["seconds"], 1),
        "healthz_samples": len(latencies),
        "healthz_failed": failed,
        "healthz_p50_seconds": round(statistics.median(latencies), 4),
        "healthz_p99_seconds": round(_percentile(latencies, 0.99), 4),
        "healthz_max_seconds": round(max(latencies), 4),
        "healthz_quiet_p99_seconds": round(_percentile(quiet, 0.99), 4),
        "polls_per_second_under_load": round(polls / (time.monotonic() - started), 1),
    }
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "page-load.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))

    assert set(hammered["statuses"]) == {"200"}, figures
    assert hammered["requests"] > 100, figures
    assert failed == 0, figures
    assert figures["healthz_p99_seconds"] < P99_BOUND, figures
    assert polls > 0, figures
