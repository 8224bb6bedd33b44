"""A bounded soak: wave after wave of batches through the control API, with random faults;
the daemon's memory stays flat."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from figures import record
from harness import DaemonProcess, SimulatorProcess, announced

VS = "vs_soak"
WAVES = 12
PER_WAVE = 40
WARM_UP_WAVES = 4
#: Random faults on every API request, as the simulator's --fault arguments.
FAULTS = [
    {"kind": "server_error", "probability": 0.03, "status": 503},
    {"kind": "rate_limit_bare", "probability": 0.01},
    {"kind": "truncated_json", "probability": 0.01},
    {"kind": "drop", "probability": 0.01},
]
#: Growth of resident memory between the first samples after warm-up and the last ones that
#: would mean a leak: some 10 KB per batch watched since, against the allocator's noise (under
#: 0.5 MiB over a run).
MAX_GROWTH_MIB = 3.0


def _wave(prefix: str, count: int, duration: float) -> dict[str, Any]:
    """Simulator batches for one wave: they start when added, and end ``duration`` later."""
    return {
        "template": {
            "vector_store_id": VS,
            "batch_id": "template",
            "total_files": 50,
            "failed_files": 4,
            "duration_seconds": duration,
        },
        "count": count,
        "prefix": prefix,
        "start_jitter_seconds": 0.3,
        "duration_jitter": 0.5,
        "seed": len(prefix),
    }


def _rss_mib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def test_memory_stays_flat_over_a_soak(
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    """Through waves of batches registered and deleted over the control API, with random 5xx,
    429, truncated replies and dropped connections, every batch is watched to its end, finished
    watches are pruned, and the daemon's resident memory ends where it was after warm-up."""
    fault_args = [arg for fault in FAULTS for arg in ("--fault", json.dumps(fault))]
    sim = simulator_factory("--scenario", "empty", "--seed", "5", *fault_args)
    daemon = daemon_factory(
        {
            "api": {
                "base_url": sim.url,
                "max_requests_per_minute": 12000,
                "max_concurrency": 8,
                "timeout_seconds": 2.0,
            },
            "poll": {
                "interval_seconds": 0.2,
                "min_interval_seconds": 0.1,
                "max_interval_seconds": 1.0,
                "stall_after_seconds": 0,
            },
            "state": {"retention_seconds": 1.0},
        }
    )
    started = time.monotonic()
    samples: list[float] = []
    registered = deleted = 0

    def register(batch_id: str) -> None:
        body = {"vector_store_id": VS, "batch_id": batch_id, "labels": {"wave": batch_id[6:9]}}
        assert daemon.request("POST", "/v1/watches", json=body).status_code == 201

    with ThreadPoolExecutor(max_workers=8) as pool:
        for wave in range(WAVES):
            ids = sim.control("POST", "batches", _wave(f"vsfb_w{wave:02d}_", PER_WAVE, 0.6))
            # Two long batches per wave are registered, then deleted while still running.
            dropped = sim.control("POST", "batches", _wave(f"vsfb_d{wave:02d}_", 2, 120.0))
            list(pool.map(register, [*ids["ids"], *dropped["ids"]]))
            registered += len(ids["ids"]) + len(dropped["ids"])
            for batch_id in dropped["ids"]:
                path = f"/v1/watches/{VS}/{batch_id}"
                assert daemon.request("DELETE", path).status_code == 204
                deleted += 1
            # The wave ends, and is pruned, before the next: the daemon holds one wave at a time.
            daemon.wait_until(
                lambda: not daemon.request("GET", "/v1/watches").json()["watches"],
                timeout=60,
                what=f"wave {wave} ended and pruned",
            )
            assert daemon.request("GET", "/healthz").status_code == 200
            samples.append(_rss_mib(daemon.proc.pid))
    elapsed = time.monotonic() - started

    warm = samples[WARM_UP_WAVES : WARM_UP_WAVES + 3]
    end = samples[-3:]
    growth = statistics.mean(end) - statistics.mean(warm)
    logs = daemon.logs()
    ended = announced(logs)
    stats = sim.stats()
    finished = sum(
        value
        for name, _, value in daemon.samples()
        if name == "batch_watcher_batches_finished_total"
    )
    record(
        tmp_path,
        "soak",
        faults_injected=sum(stats["faults"].values()),
        requests=stats["requests"],
        batches_finished=int(finished),
        watches_lost=registered - deleted - int(finished),
        duplicates=len(ended) - len(set(ended)),
        duration_seconds=round(elapsed),
        rss_start_mib=round(statistics.mean(warm), 1),
        rss_end_mib=round(statistics.mean(end), 1),
        rss_by_wave_mib=[round(s, 1) for s in samples],
    )
    assert finished == registered - deleted
    assert len(ended) == len(set(ended))
    assert [e for e in logs if e.get("event") == "internal_error"] == []
    assert stats["faults"], "the soak injected no fault"
    assert growth < MAX_GROWTH_MIB, samples
