"""``python -m bench.soak_rss``: the daemon's RSS over a long run of scrapes.

    python -m bench.soak_rss --batches 10000 --minutes 60 --scrape-every 15 --out soak.json
    python -m bench.soak_rss --batches 200 --minutes 2 --scrape-every 5     # a quick check

Starts the simulator (batches that progress on every poll and never end) and the real daemon
watching all of them, polling at the budget (12,000 requests/min by default, the steady run's
settings: interval 1 s, so every watch is always due), then scrapes ``/metrics`` every
``--scrape-every`` seconds as Prometheus does (its ``Accept`` and ``Accept-Encoding: gzip``)
and samples the daemon's RSS every ``--sample-every`` seconds (a minute by default). Writes
every sample and every scrape as JSON to ``--out`` as it goes (so a run cut short still has its
curve) and prints the table minute → RSS at the end.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .processes import BenchError, DaemonProcess, SimulatorProcess, wait_for
from .report import loadavg, machine
from .scenarios import (
    PROMETHEUS_ACCEPT,
    STEADY_FILES,
    VECTOR_STORE_ID,
    daemon_sections,
    plan_for,
    sim_args,
)
from .scenarios import STEADY_DURATION as DURATION


def _say(message: str) -> None:
    print(f"soak_rss: {message}", file=sys.stderr, flush=True)


def run(
    batches: int,
    minutes: float,
    scrape_every: float,
    sample_every: float,
    budget_per_minute: int,
    out: Path,
    workdir: Path,
) -> dict[str, Any]:
    plan = replace(plan_for(batches), budget_per_minute=budget_per_minute)
    plan = replace(
        plan, server_limit_per_second=max(plan.server_limit_per_second, int(plan.rate * 1.2))
    )
    result: dict[str, Any] = {
        "settings": {
            "batches": batches,
            "minutes": minutes,
            "scrape_every_seconds": scrape_every,
            "sample_every_seconds": sample_every,
            "budget_per_minute": budget_per_minute,
            "poll_interval_seconds": plan.steady_interval,
            "accept": PROMETHEUS_ACCEPT,
            "accept_encoding": "gzip",
        },
        "machine": machine(),
        "samples": [],
        "scrapes": [],
        "finished": False,
    }

    def save() -> None:
        out.write_text(json.dumps(result, indent=1), encoding="utf-8")

    sim = SimulatorProcess(sim_args(plan, files=STEADY_FILES, duration=DURATION, jitter=0))
    try:
        ids = [b["id"] for b in sim.batches()]
        _say(f"daemon watching {batches} batches")
        daemon = DaemonProcess(
            workdir / "soak",
            daemon_sections(plan, sim, plan.steady_interval),
            [(VECTOR_STORE_ID, batch_id) for batch_id in ids],
        )
        try:
            started = time.monotonic()

            def sample() -> None:
                entry: dict[str, Any] = {
                    "seconds": round(time.monotonic() - started, 1),
                    "rss_bytes": daemon.rss(),
                    "cpu_seconds": round(daemon.cpu_seconds(), 2),
                    "requests": int(sim.stats()["requests"]),
                    "loadavg": loadavg(),
                }
                result["samples"].append(entry)
                _say(
                    f"{entry['seconds']:7.1f} s: RSS {entry['rss_bytes'] / 2**20:.1f} MiB, "
                    f"{entry['requests']:,} requests, load {entry['loadavg']}"
                )
                save()

            sample()

            def swept() -> bool:
                daemon.check_alive("the daemon")
                return bool(sim.stats()["requests"] >= batches)

            wait_for(swept, batches / plan.rate * 3 + 60, "the daemon's first poll of every batch")
            end = started + minutes * 60.0
            next_scrape = time.monotonic()
            next_sample = started + sample_every
            headers = {"accept": PROMETHEUS_ACCEPT, "accept-encoding": "gzip"}
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    sample()
                    next_sample += sample_every
                if now >= end:
                    break
                if now >= next_scrape:
                    daemon.check_alive("the daemon")
                    t0 = time.perf_counter()
                    response = daemon.get("/metrics", headers=headers)
                    seconds = time.perf_counter() - t0
                    result["scrapes"].append(
                        {
                            "at": round(now - started, 1),
                            "seconds": round(seconds, 4),
                            "gzip": response.headers.get("content-encoding") == "gzip",
                            "wire_bytes": int(response.headers.get("content-length", 0)),
                            "bytes": len(response.content),
                        }
                    )
                    next_scrape += scrape_every
                time.sleep(max(0.0, min(next_scrape, next_sample, end) - time.monotonic()))
            result["finished"] = True
            save()
        finally:
            daemon.stop()
    finally:
        sim.stop()
    return result


def table(result: dict[str, Any]) -> str:
    """Markdown: minute → RSS MiB (and the load average then)."""
    lines = ["| minute | RSS MiB | requests | loadavg (1 min) |", "| ---: | ---: | ---: | ---: |"]
    for s in result["samples"]:
        lines.append(
            f"| {s['seconds'] / 60:.1f} | {s['rss_bytes'] / 2**20:.1f} | {s['requests']:,} | "
            f"{s['loadavg'][0]:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_rss", description=__doc__)
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--scrape-every", type=float, default=15.0, help="seconds")
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--budget", type=int, default=12_000, help="requests per minute")
    parser.add_argument("--out", type=Path, default=Path("soak_rss.json"))
    parser.add_argument("--workdir", type=Path, help="keep the config and the daemon's log here")
    args = parser.parse_args(argv)
    # SIGTERM (a run stopped early) stops the daemon and the simulator too, and keeps the JSON.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        try:
            result = run(
                args.batches,
                args.minutes,
                args.scrape_every,
                args.sample_every,
                args.budget,
                args.out,
                args.workdir or Path(tmp),
            )
        except BenchError as exc:
            _say(f"failed: {exc}")
            return 1
    print(table(result))
    scrapes = sorted(s["seconds"] for s in result["scrapes"])
    if scrapes:
        print(
            f"{len(scrapes)} scrapes: median {scrapes[len(scrapes) // 2]:.3f} s, "
            f"max {scrapes[-1]:.3f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
