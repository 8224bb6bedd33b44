"""``python -m bench.memory``: the daemon's memory per additional watch.

    python -m bench.memory --sizes 0 1000 10000 --rounds 2

One simulator (batches that progress on every poll and never end); a daemon watching each size
in turn (``--rounds`` times, alternated), polling at the budget as in the steady run, never
scraped. Each daemon's RSS is read once it has polled every batch once and ``--settle`` seconds
more (past the first 30-s progress checkpoint, which writes every watch's row). Memory per
additional watch is the slope between the sizes: (RSS at the largest - RSS at the next) / the
difference in watches.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx

from .processes import BenchError, DaemonProcess, SimulatorProcess, wait_for
from .report import loadavg
from .scenarios import (
    STEADY_DURATION,
    STEADY_FILES,
    VECTOR_STORE_ID,
    daemon_sections,
    plan_for,
    sim_args,
)


def _register(daemon: DaemonProcess, keys: Sequence[tuple[str, str]]) -> None:
    """POST each watch to the daemon's control API (loopback: no token), a few at a time."""
    with httpx.Client(base_url=daemon.url, timeout=60.0) as client:

        def one(key: tuple[str, str]) -> None:
            body = {"vector_store_id": key[0], "batch_id": key[1]}
            client.post("/v1/watches", json=body).raise_for_status()

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, keys))


def _say(message: str) -> None:
    print(f"memory: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 1_000, 10_000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle", type=float, default=35.0, help="seconds after the sweep")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--register",
        choices=("config", "api"),
        default="config",
        help="declare the watches in the config file, or POST them to /v1/watches once started",
    )
    parser.add_argument(
        "--before", type=Path, help="also measure the `watcher` package in this directory, in turns"
    )
    args = parser.parse_args(argv)
    largest = max(args.sizes)
    plan = replace(plan_for(max(largest, 1)), server_limit_per_second=240)
    sides: dict[str, Path | None] = {"this": None}
    if args.before is not None:
        sides["before"] = args.before
    rss: dict[str, dict[int, list[int]]] = {side: {n: [] for n in args.sizes} for side in sides}
    loads: list[list[float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        sim = SimulatorProcess(
            sim_args(plan, files=STEADY_FILES, duration=STEADY_DURATION, jitter=0)
        )
        try:
            ids = [b["id"] for b in sim.batches()]
            sections = daemon_sections(plan, sim, plan.steady_interval)
            sections["state"]["max_watches"] = max(largest, 1)
            for turn, n, side in itertools.product(range(args.rounds), args.sizes, sides):
                start = int(sim.stats()["requests"])
                keys = [(VECTOR_STORE_ID, b) for b in ids[:n]]
                daemon = DaemonProcess(
                    Path(tmp) / f"{side}-n{n}-{turn}",
                    sections,
                    keys if args.register == "config" else [],
                    source=sides[side],
                )
                if args.register == "api":
                    _register(daemon, keys)
                try:

                    def swept(d: DaemonProcess = daemon, first: int = start, k: int = n) -> bool:
                        d.check_alive("the daemon")
                        return bool(sim.stats()["requests"] - first >= k)

                    wait_for(swept, n / 20 + 120, "the daemon's first poll of every batch")
                    time.sleep(args.settle)
                    rss[side][n].append(daemon.rss())
                    loads.append(loadavg())
                    said = rss[side][n][-1] / 2**20
                    _say(f"round {turn + 1}: {side}: {n} watches: {said:.1f} MiB")
                finally:
                    daemon.stop()
        except BenchError as exc:
            _say(f"failed: {exc}")
            return 1
        finally:
            sim.stop()
    sizes = sorted(args.sizes)
    slopes: dict[str, dict[str, float]] = {}
    for side, by_size in rss.items():
        medians = {n: statistics.median(by_size[n]) for n in sizes}
        for n in sizes:
            shown = ", ".join(f"{r / 2**20:.1f}" for r in by_size[n])
            print(f"{side}: {n:>6} watches: RSS {shown} MiB")
        slopes[side] = {}
        for low, high in itertools.pairwise(sizes):
            slope = (medians[high] - medians[low]) / (high - low)
            slopes[side][f"{low}-{high}"] = slope
            print(f"{side}: per additional watch, {low:,} -> {high:,}: {slope:.0f} B")
    if args.json:
        document = {
            "register": args.register,
            "rss": rss,
            "slopes_bytes": slopes,
            "loadavg": loads,
            "settle": args.settle,
        }
        args.json.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
