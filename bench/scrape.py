"""``python -m bench.scrape``: the CPU of rendering ``/metrics``, in-process, without the network.

    python -m bench.scrape --n 10000 --changed 6000
    python -m bench.scrape --n 10000 --changed 6000 --profile   # and where it goes (pyinstrument)

Builds N watched batches as the daemon's snapshot holds them, renders them once (the first
scrape: every line), then ``--rounds`` times after ``--changed`` of them moved as a poll moves a
batch (two file counts, the last poll, the ETA), in the text format and in OpenMetrics, and prints
the CPU seconds of each render and the RSS before and after. ``--profile`` runs one render
after changes under pyinstrument (in the ``bench`` extra) and prints its tree.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from collections.abc import Sequence

import psutil

from watcher.api.models import FileCounts
from watcher.daemon.batch_metrics import BatchSample
from watcher.daemon.metrics import Snapshot, WatcherMetrics

FORMATS = {
    "text": "text/plain; version=0.0.4",
    # What Prometheus 2 asks for.
    "OpenMetrics": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
}


def batches(n: int) -> list[BatchSample]:
    out = []
    for i in range(n):
        vs, batch = f"vs_bench_{i // 100:04d}", f"vsfb_bench_{i:06d}"
        out.append(
            BatchSample(
                key=(vs, batch),
                vector_store_id=vs,
                batch_id=batch,
                status="in_progress",
                state="watching",
                stalled=False,
                file_counts=FileCounts(in_progress=600, completed=390, failed=10, total=1000),
                labels={},
                created_at=1_700_000_000 + i,
                finished_at=None,
                last_poll_at=1_700_000_100.0 + i / 1000,
                eta_seconds=300.0 + i,
                deadline_at=None,
                failed_by_code=None,
            )
        )
    return out


def poll(b: BatchSample, step: int) -> BatchSample:
    """The batch after a poll that saw progress."""
    assert b.file_counts is not None
    counts = dataclasses.replace(
        b.file_counts,
        in_progress=b.file_counts.in_progress - step,
        completed=b.file_counts.completed + step,
    )
    return dataclasses.replace(
        b,
        file_counts=counts,
        last_poll_at=(b.last_poll_at or 0.0) + 1.0,
        eta_seconds=(b.eta_seconds or 0.0) - 1.0,
    )


def cpu(metrics: WatcherMetrics, snapshot: Snapshot, accept: str) -> float:
    started = time.process_time()
    metrics.render(snapshot, accept)
    return time.process_time() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scrape", description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--changed", type=int, default=6_000, help="batches moved per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="pyinstrument one round")
    args = parser.parse_args(argv)
    rng = random.Random(7)
    for name, accept in FORMATS.items():
        metrics, state = WatcherMetrics(), batches(args.n)
        rss = psutil.Process().memory_info().rss
        first = cpu(metrics, Snapshot(list(state), None, None, False), accept)
        rounds = []
        for step in range(1, args.rounds + 1):
            for i in rng.sample(range(args.n), args.changed):
                state[i] = poll(state[i], step)
            rounds.append(cpu(metrics, Snapshot(list(state), None, None, False), accept))
        print(
            f"{name}: N={args.n:,}: first render {first:.3f} s CPU; with {args.changed:,} "
            f"changed: median {statistics.median(rounds):.3f} s "
            f"({', '.join(f'{x:.3f}' for x in rounds)}); RSS "
            f"{rss / 2**20:.1f} MiB before the first, "
            f"{psutil.Process().memory_info().rss / 2**20:.1f} MiB after the last"
        )
        if args.profile:
            from pyinstrument import Profiler

            for i in rng.sample(range(args.n), args.changed):
                state[i] = poll(state[i], args.rounds + 1)
            snapshot = Snapshot(list(state), None, None, False)
            with Profiler(interval=0.0005) as profiler:
                metrics.render(snapshot, accept)
            print(profiler.output_text(unicode=False, color=False, show_all=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
