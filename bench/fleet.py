"""``python -m bench.fleet``: a fleet of replicas on PostgreSQL against one SQLite process.

    python -m bench.fleet                                   # 3 replicas x 10,000 watches
    python -m bench.fleet --watches 200 --windows 1 --window-seconds 5 --lease 3   # a smoke

Two simulators, two worlds, measured at the same time (so the machine's load falls on both):

- *fleet*: ``--replicas`` daemons (``BATCH_WATCHER_REPLICA_ID`` r1, r2, ...) on one PostgreSQL
  database made for the run (on the local server, 127.0.0.1:5432 user postgres; dropped after),
  each configured with ``--watches`` of the fleet simulator's batches, sharing a budget of
  ``--rate`` requests/min and ``--concurrency`` per replica; their connections go through
  :class:`~bench.pgproxy.CountingProxy`, which counts the bytes both ways and the messages;
- *one*: one daemon on SQLite watching ``--watches`` batches of its own simulator, with one
  replica's part of the budget (``--rate``, ``--concurrency``): the same load per process.

Every batch progresses on every poll and never ends, and the poll interval is 1 s, so every
watch is always due and the budget sets the rate, as in the steady run. Once every watch is
owned and polled once, ``--windows`` windows of ``--window-seconds`` measure, on both sides at
once, the processes' CPU (psutil user+sys; the fleet's PostgreSQL backends too, apart) over the
polls their simulator counted, and the proxy's counts over the fleet's polls. Then one replica
is killed with SIGKILL, and the takeover is timed: until no watch names it as owner (and none is
unowned), read from the database every 0.25 s.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import psycopg

from .pgproxy import CountingProxy
from .processes import BenchError, DaemonProcess, SimulatorProcess, wait_for
from .report import loadavg, machine
from .scenarios import STEADY_DURATION, STEADY_FILES, daemon_sections, plan_for, sim_args

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _say(message: str) -> None:
    print(f"fleet: {message}", file=sys.stderr, flush=True)


def _simulator(n: int, vs: str, prefix: str, rate_per_minute: int) -> SimulatorProcess:
    plan = replace(plan_for(n), server_limit_per_second=int(rate_per_minute / 60 * 1.2) + 20)
    args = sim_args(plan, files=STEADY_FILES, duration=STEADY_DURATION, jitter=0)
    args[args.index("--vector-store-id") + 1] = vs
    args[args.index("--prefix") + 1] = prefix
    return SimulatorProcess(args)


def _sections(
    sim: SimulatorProcess, rate: int, concurrency: int, state: dict[str, object]
) -> dict[str, dict[str, object]]:
    sections = daemon_sections(plan_for(1), sim, 1.0)
    sections["api"].update(max_requests_per_minute=rate, max_concurrency=concurrency)
    sections["state"] = state
    return sections


class Fleet:
    def __init__(self, url: str) -> None:
        self.url = url

    def owners(self) -> dict[str | None, int]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute("SELECT owner, count(*) FROM watches GROUP BY owner").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def backends(self, db: str) -> list[psutil.Process]:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (db,),
            ).fetchall()
        out = []
        for (pid,) in rows:
            try:
                out.append(psutil.Process(int(pid)))
            except psutil.Error:
                continue
        return out


def _cpu(processes: Sequence[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in processes:
        try:
            t = p.cpu_times()
            out[p.pid] = float(t.user + t.system)
        except psutil.Error:
            continue
    return out


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n, k = args.watches, args.replicas
    db = f"bench_fleet_{uuid.uuid4().hex[:10]}"
    result: dict[str, Any] = {"settings": vars(args) | {"json": str(args.json)}, "windows": []}
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    proxy = CountingProxy()
    fleet_sim = _simulator(n * k, "vs_fleet", "vsfb_fleet_", args.rate * k)
    one_sim = _simulator(n, "vs_one", "vsfb_one_", args.rate)
    replicas: list[DaemonProcess] = []
    one: DaemonProcess | None = None
    try:
        url = (
            f"postgresql://postgres@127.0.0.1:{proxy.port}/{db}?sslmode=disable&gssencmode=disable"
        )
        fleet = Fleet(f"postgresql://postgres@127.0.0.1:5432/{db}")
        fleet_ids = [b["id"] for b in fleet_sim.batches()]
        one_ids = [b["id"] for b in one_sim.batches()]
        state = {"url": url, "lease_seconds": args.lease, "max_watches": n * k}
        sections = _sections(fleet_sim, args.rate * k, args.concurrency * k, state)
        for i in range(k):
            _say(f"replica r{i + 1}: {n} watches configured")
            replicas.append(
                DaemonProcess(
                    workdir / f"r{i + 1}",
                    sections,
                    [("vs_fleet", b) for b in fleet_ids[i * n : (i + 1) * n]],
                    name=f"r{i + 1}",
                    env={"BATCH_WATCHER_REPLICA_ID": f"r{i + 1}"},
                    start_timeout=300,
                )
            )
        _say(f"one SQLite process: {n} watches")
        one = DaemonProcess(
            workdir / "one",
            _sections(
                one_sim,
                args.rate,
                args.concurrency,
                {"path": "state.sqlite3", "max_watches": n},
            ),
            [("vs_one", b) for b in one_ids],
            name="one",
        )

        def settled() -> bool:
            for r in [*replicas, one]:
                assert r is not None
                r.check_alive("a daemon")
            owners = fleet.owners()
            fair = all(owners.get(f"r{i + 1}", 0) >= n * 0.9 for i in range(k))
            return (
                fair
                and owners.get(None, 0) == 0
                and fleet_sim.stats()["requests"] >= n * k * args.sweep
                and one_sim.stats()["requests"] >= n * args.sweep
            )

        wait_for(settled, n * k * args.sweep / 5 + 600, "every watch owned and polled")
        result["owners"] = fleet.owners()
        _say(f"settled: {result['owners']}; measuring")
        time.sleep(args.warmup)
        for w in range(args.windows):
            backends = fleet.backends(db)
            procs = [r.ps for r in replicas]

            def reading(procs: Any, backends: Any) -> tuple[Any, ...]:
                return (
                    _cpu(procs),
                    _cpu(backends),
                    one.cpu_seconds(),
                    proxy.snapshot(),
                    fleet_sim.stats(),
                    one_sim.stats(),
                    time.monotonic(),
                )

            before = reading(procs, backends)
            time.sleep(args.window_seconds)
            after = reading(procs, backends)
            fleet_polls = after[4]["requests"] - before[4]["requests"]
            one_polls = after[5]["requests"] - before[5]["requests"]
            replica_cpu = sum(after[0][p] - before[0][p] for p in before[0] if p in after[0])
            pg_cpu = sum(after[1][p] - before[1][p] for p in before[1] if p in after[1])
            one_cpu = after[2] - before[2]
            counts = {
                t: after[3]["counts"].get(t, 0) - before[3]["counts"].get(t, 0)
                for t in set(after[3]["counts"])
            }
            window = {
                "seconds": after[6] - before[6],
                "loadavg": loadavg(),
                "fleet_polls": fleet_polls,
                "one_polls": one_polls,
                "fleet_cpu_s": replica_cpu,
                "pg_backend_cpu_s": pg_cpu,
                "pg_backends": len(before[1]),
                "one_cpu_s": one_cpu,
                "fleet_cpu_per_poll_ms": replica_cpu / fleet_polls * 1000,
                "fleet_with_pg_cpu_per_poll_ms": (replica_cpu + pg_cpu) / fleet_polls * 1000,
                "one_cpu_per_poll_ms": one_cpu / one_polls * 1000,
                "messages": counts,
                "queries": counts.get("Q", 0) + counts.get("E", 0),
                "round_trips": counts.get("Q", 0) + counts.get("S", 0),
                "bytes_up": after[3]["bytes_up"] - before[3]["bytes_up"],
                "bytes_down": after[3]["bytes_down"] - before[3]["bytes_down"],
                "fleet_429": after[4]["rate_limited"] - before[4]["rate_limited"],
                "fleet_max_per_second": after[4]["max_requests_per_second"],
            }
            window["ratio"] = window["fleet_cpu_per_poll_ms"] / window["one_cpu_per_poll_ms"]
            window["ratio_with_pg"] = (
                window["fleet_with_pg_cpu_per_poll_ms"] / window["one_cpu_per_poll_ms"]
            )
            window["queries_per_poll"] = window["queries"] / fleet_polls
            window["bytes_per_poll"] = (window["bytes_up"] + window["bytes_down"]) / fleet_polls
            result["windows"].append(window)
            _say(
                f"window {w + 1}: fleet {window['fleet_cpu_per_poll_ms']:.2f} ms/poll "
                f"(+PG {window['fleet_with_pg_cpu_per_poll_ms']:.2f}), one "
                f"{window['one_cpu_per_poll_ms']:.2f} ms/poll: {window['ratio']:.2f}x; "
                f"{window['queries_per_poll']:.3f} queries/poll, "
                f"{window['bytes_per_poll']:.0f} B/poll; polls {fleet_polls} / {one_polls}; "
                f"load {window['loadavg']}"
            )
        result["takeover"] = _takeover(fleet, replicas[-1], f"r{k}", args.lease)
        _say(f"takeover: {result['takeover']}")
    finally:
        for r in [*replicas, one]:
            if r is not None:
                r.stop()
        fleet_sim.stop()
        one_sim.stop()
        proxy.close()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return result


def _takeover(fleet: Fleet, victim: DaemonProcess, name: str, lease: float) -> dict[str, Any]:
    held = fleet.owners().get(name, 0)
    victim.proc.kill()
    killed = time.monotonic()
    first: float | None = None
    while time.monotonic() - killed < lease * 3 + 120:
        owners = fleet.owners()
        left, unowned = owners.get(name, 0), owners.get(None, 0)
        now = time.monotonic() - killed
        if first is None and left < held:
            first = now
        if left == 0 and unowned == 0:
            return {
                "watches": held,
                "first_claim_s": round(first if first is not None else now, 2),
                "all_s": round(now, 2),
                "lease_s": lease,
                "owners": owners,
            }
        time.sleep(0.25)
    raise BenchError(f"the watches of {name} were not all taken over")


def summary(result: dict[str, Any]) -> dict[str, float]:
    windows = result["windows"]

    def med(key: str) -> float:
        return statistics.median(w[key] for w in windows) if windows else math.nan

    fleet_polls = sum(w["fleet_polls"] for w in windows)
    one_polls = sum(w["one_polls"] for w in windows)
    fleet_cpu = sum(w["fleet_cpu_s"] for w in windows)
    pg_cpu = sum(w["pg_backend_cpu_s"] for w in windows)
    one_cpu = sum(w["one_cpu_s"] for w in windows)
    return {
        "fleet_cpu_per_poll_ms": fleet_cpu / fleet_polls * 1000,
        "fleet_with_pg_cpu_per_poll_ms": (fleet_cpu + pg_cpu) / fleet_polls * 1000,
        "one_cpu_per_poll_ms": one_cpu / one_polls * 1000,
        "ratio": (fleet_cpu / fleet_polls) / (one_cpu / one_polls),
        "ratio_with_pg": ((fleet_cpu + pg_cpu) / fleet_polls) / (one_cpu / one_polls),
        "ratio_median_window": med("ratio"),
        "queries_per_poll": sum(w["queries"] for w in windows) / fleet_polls,
        "round_trips_per_poll": sum(w["round_trips"] for w in windows) / fleet_polls,
        "bytes_per_poll": sum(w["bytes_up"] + w["bytes_down"] for w in windows) / fleet_polls,
        "fleet_polls_per_s": fleet_polls / sum(w["seconds"] for w in windows),
        "one_polls_per_s": one_polls / sum(w["seconds"] for w in windows),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--watches", type=int, default=10_000, help="per replica")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rate", type=int, default=3_000, help="requests/min per replica")
    parser.add_argument("--concurrency", type=int, default=8, help="per replica")
    parser.add_argument("--lease", type=float, default=15.0, help="lease_seconds")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--window-seconds", type=float, default=30.0)
    parser.add_argument(
        "--sweep", type=float, default=1.0, help="share of the first sweep before measuring"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds, once settled")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path, help="keep the configs and logs here")
    args = parser.parse_args(argv)
    # SIGTERM (a run stopped early) stops the processes it started, through the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        try:
            result = run(args, args.workdir or Path(tmp))
        except (BenchError, psycopg.Error) as exc:
            _say(f"failed: {exc}")
            return 1
    result["summary"] = summary(result)
    result["machine"] = machine()
    print(json.dumps(result["summary"], indent=1))
    print(json.dumps(result["takeover"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
