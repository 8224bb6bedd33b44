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
package, e.g. ``git archive COMMIT watcher | tar -x -C DIR``) at the same time, against a
simulator of its own, and the two are scraped in turns (the order alternating), so that the
machine's load falls on both.
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
from .report import loadavg, machine
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


class Side:
    """One daemon against its own simulator, with its /healthz prober."""

    def __init__(
        self, name: str, plan: Any, batches: int, workdir: Path, source: Path | None
    ) -> None:
        self.run = Run(name)
        self.sim = SimulatorProcess(
            sim_args(plan, files=STEADY_FILES, duration=STEADY_DURATION, jitter=0)
        )
        self.daemon: DaemonProcess | None = None
        watches = [(VECTOR_STORE_ID, b["id"]) for b in self.sim.batches()][:batches]
        sections = daemon_sections(plan, self.sim, plan.steady_interval)
        try:
            self.daemon = DaemonProcess(workdir / name, sections, watches, source=source)
        except BaseException:
            self.sim.stop()
            raise
        self.n = len(watches)
        self.scraping = threading.Event()
        self.health = _Health(self.daemon.url, self.scraping)
        self.polled = 0

    def swept(self, fraction: float) -> bool:
        assert self.daemon is not None
        self.daemon.check_alive(f"the daemon ({self.run.name})")
        return bool(self.sim.stats()["requests"] >= self.n * fraction)

    def scrape(self, extra: dict[str, str] | None = None) -> tuple[float, httpx.Response]:
        assert self.daemon is not None
        headers = {"accept": PROMETHEUS_ACCEPT, "accept-encoding": "gzip", **(extra or {})}
        cpu = self.daemon.cpu_seconds()
        self.scraping.set()
        started = time.perf_counter()
        response = self.daemon.get("/metrics", headers=headers)
        seconds = time.perf_counter() - started
        self.scraping.clear()
        self.run.cpu_per_scrape.append(self.daemon.cpu_seconds() - cpu)
        return seconds, response

    def stop(self) -> None:
        self.health.stop.set()
        if self.health.is_alive():
            self.health.join(10)
        if self.daemon is not None:
            self.run.rss_after = self.daemon.rss() if self.daemon.proc.poll() is None else 0
            self.daemon.stop()
        self.sim.stop()


def measure(sides: list[Side], scrapes: int, every: float, sweep: float) -> None:
    """The daemons poll at once, each against its own simulator; their scrapes take turns
    (the order alternates), so that the machine's load falls on all alike."""
    n = max(side.n for side in sides)
    wait_for(
        lambda: all(side.swept(sweep) for side in sides),
        n * sweep / 5 + 300,
        "every daemon's first poll of every batch",
    )
    for side in sides:
        side.health.start()
    time.sleep(1.0)
    for side in sides:
        side.polled = int(side.sim.stats()["requests"])
        side.run.first, _ = side.scrape()
    responses: dict[str, httpx.Response] = {}
    for k in range(scrapes):
        time.sleep(every)
        for side in sides if k % 2 else reversed(sides):
            requests = int(side.sim.stats()["requests"])
            side.run.polls_between.append(requests - side.polled)
            side.polled = requests
            seconds, responses[side.run.name] = side.scrape()
            side.run.scrapes.append(seconds)
    time.sleep(every)
    for side in sides:
        response = responses[side.run.name]
        if response.headers.get("content-encoding") != "gzip":
            raise BenchError("the daemon did not gzip /metrics when asked")
        side.run.gzip_bytes = int(response.headers["content-length"])
        side.run.plain_seconds, plain = side.scrape({"accept-encoding": "identity"})
        side.run.plain_bytes = len(plain.content)
    for side in sides:
        side.health.stop.set()
        side.health.join(10)
        side.run.health_during, side.run.health_all = side.health.during, side.health.all
        side.run.loadavg = loadavg()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scrape_http", description=__doc__)
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=6, help="after the first")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between scrapes")
    parser.add_argument(
        "--sweep", type=float, default=1.0, help="share of the batches polled before scraping"
    )
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
        sides: list[Side] = []
        try:
            for name, source in variants:
                _say(f"{name}: daemon watching {args.batches} batches, load {os.getloadavg()}")
                sides.append(Side(name, plan, args.batches, Path(tmp), source))
            measure(sides, args.scrapes, args.every, args.sweep)
            runs = [side.run for side in sides]
            for run in runs:
                _say(f"{run.name}: {json.dumps(run.summary())}")
        except BenchError as exc:
            _say(f"failed: {exc}")
            return 1
        finally:
            for side in sides:
                side.stop()
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
