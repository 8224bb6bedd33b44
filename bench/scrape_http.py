"""``python -m bench.scrape_http``: ``/metrics`` of a real daemon over loopback, while it polls.

    python -m bench.scrape_http --batches 10000 --scrapes 6 --every 15
    python -m bench.scrape_http --batches 10000 --before /tmp/main_src  # and that code, in turns

Starts the simulator (batches that progress on every poll and never end) and the daemon watching
all of them, polling at the budget (12,000 requests/min, interval 1 s, as the steady run), waits
for its first poll of every batch, then scrapes ``/metrics`` as Prometheus does (its ``Accept``,
``Accept-Encoding: gzip``): the first scrape, then ``--scrapes`` more ``--every`` seconds apart.
Meanwhile a thread asks ``/healthz`` every 20 ms on its own connection, and the latencies of
those asked while a scrape was running are kept: a render that held the event loop shows there.
At the end one scrape without gzip gives the plain size.

``--before DIR`` also runs the daemon from DIR (a directory holding another commit's ``watcher``
package, e.g. ``git archive COMMIT watcher | tar -x -C DIR``), in turns with this one
(``--rounds`` each, alternated) against the same simulator, so that the machine's load falls on
both.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from .processes import BenchError, DaemonProcess, SimulatorProcess, wait_for
from .report import machine
from .scenarios import (
    PROMETHEUS_ACCEPT,
    STEADY_DURATION,
    STEADY_FILES,
    VECTOR_STORE_ID,
    daemon_sections,
    plan_for,
    sim_args,
)

HEALTH_EVERY = 0.02


def _say(message: str) -> None:
    print(f"scrape_http: {message}", file=sys.stderr, flush=True)


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(slots=True)
class Run:
    """One daemon's scrapes."""

    name: str
    first: float = math.nan
    scrapes: list[float] = field(default_factory=list)
    polls_between: list[int] = field(default_factory=list)
    #: /healthz latencies asked while a scrape ran, and all of them.
    health_during: list[float] = field(default_factory=list)
    health_all: list[float] = field(default_factory=list)
    gzip_bytes: int = 0
    plain_bytes: int = 0
    plain_seconds: float = math.nan
    cpu_per_scrape: list[float] = field(default_factory=list)
    rss_after: int = 0
    loadavg: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "first_s": round(self.first, 3),
            "p50_s": round(statistics.median(self.scrapes), 3) if self.scrapes else None,
            "max_s": round(max(self.scrapes), 3) if self.scrapes else None,
            "health_during_p50_ms": round(quantile(self.health_during, 0.5) * 1000, 1),
            "health_during_p99_ms": round(quantile(self.health_during, 0.99) * 1000, 1),
            "health_during_max_ms": round(max(self.health_during, default=math.nan) * 1000, 1),
            "health_asked_during": len(self.health_during),
            "health_all_p50_ms": round(quantile(self.health_all, 0.5) * 1000, 1),
            "health_all_p99_ms": round(quantile(self.health_all, 0.99) * 1000, 1),
            "gzip_bytes": self.gzip_bytes,
            "plain_bytes": self.plain_bytes,
        }


class _Health(threading.Thread):
    """Asks /healthz every 20 ms; notes each latency and whether a scrape was running."""

    def __init__(self, url: str, scraping: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.scraping = url, scraping
        self.stop = threading.Event()
        self.during: list[float] = []
        self.all: list[float] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            while not self.stop.is_set():
                during = self.scraping.is_set()
                started = time.perf_counter()
                client.get("/healthz")
                seconds = time.perf_counter() - started
                self.all.append(seconds)
                if during or self.scraping.is_set():
                    self.during.append(seconds)
                self.stop.wait(HEALTH_EVERY)


def one_run(
    name: str,
    sim: SimulatorProcess,
    sections: dict[str, dict[str, object]],
    watches: list[tuple[str, str]],
    workdir: Path,
    scrapes: int,
    every: float,
    source: Path | None,
) -> Run:
    run = Run(name)
    before = int(sim.stats()["requests"])
    daemon = DaemonProcess(workdir, sections, watches, source=source)
    try:

        def swept() -> bool:
            daemon.check_alive("the daemon")
            return bool(sim.stats()["requests"] - before >= len(watches))

        wait_for(swept, len(watches) / 50 + 120, "the daemon's first poll of every batch")
        scraping = threading.Event()
        health = _Health(daemon.url, scraping)
        health.start()
        time.sleep(1.0)
        headers = {"accept": PROMETHEUS_ACCEPT, "accept-encoding": "gzip"}

        def scrape(extra: dict[str, str] | None = None) -> tuple[float, httpx.Response]:
            cpu = daemon.cpu_seconds()
            scraping.set()
            started = time.perf_counter()
            response = daemon.get("/metrics", headers={**headers, **(extra or {})})
            seconds = time.perf_counter() - started
            scraping.clear()
            run.cpu_per_scrape.append(daemon.cpu_seconds() - cpu)
            return seconds, response

        polled = int(sim.stats()["requests"])
        run.first, response = scrape()
        last = run.first
        for _ in range(scrapes):
            time.sleep(max(0.0, every - last))
            requests = int(sim.stats()["requests"])
            run.polls_between.append(requests - polled)
            polled = requests
            last, response = scrape()
            run.scrapes.append(last)
        if response.headers.get("content-encoding") != "gzip":
            raise BenchError("the daemon did not gzip /metrics when asked")
        run.gzip_bytes = int(response.headers["content-length"])
        time.sleep(max(0.0, every - last))
        run.plain_seconds, plain = scrape({"accept-encoding": "identity"})
        run.plain_bytes = len(plain.content)
        health.stop.set()
        health.join(10)
        run.health_during, run.health_all = health.during, health.all
        run.rss_after = daemon.rss()
        run.loadavg = [round(x, 2) for x in os.getloadavg()]
    finally:
        daemon.stop()
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scrape_http", description=__doc__)
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=6, help="after the first")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between scrapes")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each daemon, in turns")
    parser.add_argument("--before", type=Path, help="a directory with another `watcher` package")
    parser.add_argument("--budget", type=int, default=12_000, help="requests per minute")
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args(argv)
    # SIGTERM (a run stopped early) stops the processes it started, through the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = replace(plan_for(args.batches), budget_per_minute=args.budget)
    plan = replace(plan, server_limit_per_second=max(240, int(plan.rate * 1.2)))
    variants: list[tuple[str, Path | None]] = [("this", None)]
    if args.before:
        variants.append(("before", args.before.resolve()))
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="scrape-http-") as tmp:
        sim = SimulatorProcess(
            sim_args(plan, files=STEADY_FILES, duration=STEADY_DURATION, jitter=0)
        )
        try:
            watches = [(VECTOR_STORE_ID, b["id"]) for b in sim.batches()]
            sections = daemon_sections(plan, sim, plan.steady_interval)
            for turn in range(args.rounds):
                for name, source in variants:
                    _say(f"round {turn + 1}/{args.rounds}: {name}, load {os.getloadavg()}")
                    run = one_run(
                        name,
                        sim,
                        sections,
                        watches,
                        Path(tmp) / f"{name}{turn}",
                        args.scrapes,
                        args.every,
                        source,
                    )
                    runs.append(run)
                    _say(f"{name}: {json.dumps(run.summary())}")
        except BenchError as exc:
            _say(f"failed: {exc}")
            return 1
        finally:
            sim.stop()
    for run in runs:
        later = ", ".join(f"{s:.3f}" for s in run.scrapes)
        between = ", ".join(map(str, run.polls_between))
        print(
            f"{run.name}: first {run.first:.3f} s; then {later} s (polls between: {between}); "
            f"plain "
            f"{run.plain_seconds:.3f} s; /healthz during scrapes p50 "
            f"{quantile(run.health_during, 0.5) * 1000:.1f} ms, p99 "
            f"{quantile(run.health_during, 0.99) * 1000:.1f} ms ({len(run.health_during)} asked); "
            f"{run.gzip_bytes:,} B gzipped, {run.plain_bytes:,} B plain; daemon CPU per scrape "
            f"{', '.join(f'{c:.2f}' for c in run.cpu_per_scrape)} s; load {run.loadavg}"
        )
    if args.json:
        document = {
            "settings": vars(args) | {"before": str(args.before), "json": str(args.json)},
            "machine": machine(),
            "runs": [
                {
                    "name": r.name,
                    "first": r.first,
                    "scrapes": r.scrapes,
                    "polls_between": r.polls_between,
                    "plain_seconds": r.plain_seconds,
                    "health_during": r.health_during,
                    "health_all_p99": quantile(r.health_all, 0.99),
                    "cpu_per_scrape": r.cpu_per_scrape,
                    "rss_after": r.rss_after,
                    "loadavg": r.loadavg,
                    **r.summary(),
                }
                for r in runs
            ],
        }
        args.json.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
