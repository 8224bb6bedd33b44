"""The two runs of one benchmark size, and what each measures.

*Steady* (CPU, memory, scrape, budget): N batches that progress on every poll and do not end
while we measure. The poll interval is short, so every watch is always due and the request
budget alone sets the rate; the baselines run at that same rate against the same simulator
process. CPU per poll is the client's user+sys CPU over a window divided by the requests the
simulator counted in it.

*Detection* (latency, budget): N batches that end at moments spread over several intervals. The
budget allows every batch one poll per interval (N / interval is under the budget), so the
interval, not the budget, is the limit; the latency of each batch is the daemon's
``batch_completed`` log time minus the simulator's ``terminal_at_unix``.

Both runs give the simulator a rate limit above the budget, so every 429 is the watcher's fault.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .processes import (
    BaselineProcess,
    BenchError,
    DaemonProcess,
    Process,
    SimulatorProcess,
    log_time,
    wait_for,
)

VECTOR_STORE_ID = "vs_bench"
PREFIX = "vsfb_bench_"
#: Steady run: so many files over so long that every poll sees new counts and none ends.
STEADY_FILES = 1_000_000
STEADY_DURATION = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How one size is run. Rates are requests per second unless named per minute."""

    n: int
    budget_per_minute: int = 12_000
    concurrency: int = 8
    #: The simulator's limit per 1-second window, above the budget.
    server_limit_per_second: int = 240
    steady_interval: float = 1.0
    warmup_seconds: float = 3.0
    window_seconds: float = 30.0
    idle_seconds: float = 5.0
    rounds: int = 3
    #: Scrapes after the first, this far apart (the scrape interval deploy/ ships).
    scrapes: int = 4
    scrape_interval: float = 30.0
    detect_interval: float = 6.0
    detect_files: int = 1000
    detect_duration: float = 30.0
    detect_duration_jitter: float = 0.5

    @property
    def rate(self) -> float:
        return self.budget_per_minute / 60.0


PLANS = {
    200: Plan(
        200,
        budget_per_minute=6_000,
        server_limit_per_second=120,
        warmup_seconds=2.0,
        window_seconds=6.0,
        rounds=2,
        idle_seconds=2.0,
        scrapes=2,
        scrape_interval=3.0,
        detect_interval=2.5,
        detect_duration=10.0,
    ),
    1_000: Plan(1_000),
    10_000: Plan(10_000, detect_interval=60.0, detect_duration=180.0),
}


def plan_for(n: int) -> Plan:
    if n in PLANS:
        return PLANS[n]
    # The budget allows every batch one poll per interval with a fifth to spare.
    return Plan(n, detect_interval=max(1.0, math.ceil(n / (Plan(n).rate * 0.8))))


@dataclass(slots=True)
class ClientRun:
    """One client's measured windows, summed."""

    name: str
    polls: int = 0
    cpu_seconds: float = 0.0
    window_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    rss: int = 0
    max_requests_per_second: int = 0
    rate_limited: int = 0
    non_2xx: int = 0
    #: CPU per poll in each window, to show the spread.
    per_window: list[float] = field(default_factory=list)

    @property
    def cpu_per_poll(self) -> float:
        return self.cpu_seconds / self.polls if self.polls else math.nan

    @property
    def polls_per_second(self) -> float:
        return self.polls / self.window_seconds if self.window_seconds else math.nan

    def add(self, client: Process, sim: SimulatorProcess, seconds: float) -> None:
        """Measure one window: the client's CPU, and the requests the simulator counted."""
        before = sim.stats()
        cpu0, sim0, t0 = client.cpu_seconds(), sim.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        cpu1, sim1, t1 = client.cpu_seconds(), sim.cpu_seconds(), time.monotonic()
        after = sim.stats()
        client.check_alive(self.name)
        polls = after["requests"] - before["requests"]
        self.polls += polls
        self.cpu_seconds += cpu1 - cpu0
        self.window_seconds += t1 - t0
        self.server_cpu_seconds += sim1 - sim0
        self.per_window.append((cpu1 - cpu0) / polls if polls else math.nan)
        self.rss = client.rss()
        self.max_requests_per_second = max(
            self.max_requests_per_second, int(after["max_requests_per_second"])
        )
        self.rate_limited += int(after["rate_limited"])
        self.non_2xx += sum(n for code, n in after["statuses"].items() if not code.startswith("2"))


@dataclass(slots=True)
class SteadyResult:
    plan: Plan
    watcher: ClientRun
    raw: ClientRun
    sdk: ClientRun
    idle_rss: int
    rss_after_scrapes: int
    first_scrape_seconds: float  # the first scrape: every line rendered
    scrape_seconds: list[float]  # the scrapes after it, plan.scrape_interval apart
    polls_between_scrapes: list[int]  # requests the simulator saw since the scrape before
    scrape_bytes: int
    batch_series: int  # the batches /metrics showed
    api_requests_metric: float  # the daemon's own count of its requests

    @property
    def memory_per_watch(self) -> float:
        return (self.watcher.rss - self.idle_rss) / self.plan.n


@dataclass(slots=True)
class DetectionResult:
    plan: Plan
    latencies: list[float]  # batch_completed log time - terminal_at_unix
    server_seen: list[float]  # the simulator's seen_terminal_at_unix - terminal_at_unix
    not_seen: list[str] = field(default_factory=list)  # batches never reported ended
    max_requests_per_second: int = 0
    rate_limited: int = 0
    requests: int = 0
    after_terminal: int = 0

    def quantile(self, q: float) -> float:
        return _quantile(self.latencies, q)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def sim_args(plan: Plan, *, files: int, duration: float, jitter: float) -> list[str]:
    return [
        "--scenario",
        "template",
        "--batches",
        str(plan.n),
        "--files",
        str(files),
        "--duration",
        repr(duration),
        "--duration-jitter",
        repr(jitter),
        "--vector-store-id",
        VECTOR_STORE_ID,
        "--prefix",
        PREFIX,
        "--rate-limit",
        f"{plan.server_limit_per_second}/1",
    ]


def daemon_sections(
    plan: Plan, sim: SimulatorProcess, interval: float
) -> dict[str, dict[str, object]]:
    return {
        "api": {
            "base_url": sim.url,
            "max_requests_per_minute": plan.budget_per_minute,
            "max_concurrency": plan.concurrency,
        },
        # No adaptive polling, no slow-down and no stall flag: the interval stays what we
        # configured, so that every watch stays due in the steady run and the latency can be
        # held against the interval in the detection run (bench.adaptive measures adaptive).
        "poll": {
            "interval_seconds": interval,
            "adaptive": False,
            "slow_down": False,
            "stall_after_seconds": 0.0,
        },
        "server": {"listen": "127.0.0.1:0"},
        "state": {"path": "state.sqlite3", "max_watches": max(plan.n, 1)},
        "log": {"format": "json", "level": "info"},
    }


_SAMPLE = re.compile(r"^batch_watcher_api_requests_total\{[^}]*\} (\S+)$", re.MULTILINE)
#: What Prometheus 2 asks /metrics for (OpenMetrics first); Debian's prometheus is 2.x.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def run_steady(plan: Plan, workdir: Path, say: Any = print) -> SteadyResult:
    """The daemon, then the raw and SDK loops, at the budget's rate against one simulator.

    The three clients run in turns (``plan.rounds`` rounds), the others stopped with SIGSTOP
    meanwhile, so that whatever else the machine does falls on all three alike. Each turn
    resumes its client, lets it settle for ``plan.warmup_seconds``, then measures.
    """
    sim = SimulatorProcess(sim_args(plan, files=STEADY_FILES, duration=STEADY_DURATION, jitter=0))
    clients: dict[str, Process] = {}
    try:
        ids = [b["id"] for b in sim.batches()]
        watches = [(VECTOR_STORE_ID, batch_id) for batch_id in ids]
        ids_file = workdir / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n", encoding="utf-8")
        sections = daemon_sections(plan, sim, plan.steady_interval)

        say(f"N={plan.n}: daemon with no watch, for its RSS")
        idle = DaemonProcess(workdir / "idle", sections, [], name="idle")
        try:
            time.sleep(plan.idle_seconds)
            idle_rss = idle.rss()
        finally:
            idle.stop()

        say(f"N={plan.n}: daemon watching {plan.n} batches, first sweep")
        daemon = DaemonProcess(workdir / "steady", sections, watches)
        clients["watcher"] = daemon

        def swept() -> bool:
            daemon.check_alive("the daemon")
            return bool(sim.stats()["requests"] >= plan.n)

        wait_for(swept, plan.n / plan.rate * 3 + 60, "the daemon's first poll of every batch")
        daemon.pause()
        for kind in ("raw", "sdk"):
            clients[kind] = BaselineProcess(
                kind,
                sim.url,
                VECTOR_STORE_ID,
                ids_file,
                plan.rate,
                plan.concurrency,
                workdir / f"{kind}.log",
            )
            clients[kind].pause()

        runs = {
            "watcher": ClientRun("watcher"),
            "raw": ClientRun("raw httpx loop"),
            "sdk": ClientRun("openai SDK loop"),
        }
        for turn in range(plan.rounds):
            for name, client in clients.items():
                say(f"N={plan.n}: round {turn + 1}/{plan.rounds}: {runs[name].name}")
                client.resume()
                time.sleep(plan.warmup_seconds)
                sim.reset_stats()
                runs[name].add(client, sim, plan.window_seconds / plan.rounds)
                client.pause()

        daemon.resume()
        say(f"N={plan.n}: scrapes, {plan.scrape_interval:g}s apart, while polling")
        time.sleep(plan.warmup_seconds)

        def scrape() -> tuple[float, bytes]:
            started = time.perf_counter()
            body = daemon.get("/metrics", headers={"accept": PROMETHEUS_ACCEPT}).content
            return time.perf_counter() - started, body

        # Scrapes start scrape_interval apart, as Prometheus's do.
        polled = sim.stats()["requests"]
        first, body = scrape()
        scrapes: list[float] = []
        between: list[int] = []
        last = first
        for _ in range(plan.scrapes):
            time.sleep(max(0.0, plan.scrape_interval - last))
            requests = sim.stats()["requests"]
            between.append(requests - polled)
            polled = requests
            last, body = scrape()
            scrapes.append(last)
        rss_after_scrapes = daemon.rss()
        text = body.decode()
    finally:
        for client in clients.values():
            client.resume()
            client.stop()
        sim.stop()
    return SteadyResult(
        plan=plan,
        watcher=runs["watcher"],
        raw=runs["raw"],
        sdk=runs["sdk"],
        idle_rss=idle_rss,
        rss_after_scrapes=rss_after_scrapes,
        first_scrape_seconds=first,
        scrape_seconds=scrapes,
        polls_between_scrapes=between,
        scrape_bytes=len(body),
        batch_series=text.count("\nopenai_vector_store_file_batch_info{"),
        api_requests_metric=sum(float(v) for v in _SAMPLE.findall(text)),
    )


def run_detection(plan: Plan, workdir: Path, say: Any = print) -> DetectionResult:
    sim = SimulatorProcess(
        sim_args(
            plan,
            files=plan.detect_files,
            duration=plan.detect_duration,
            jitter=plan.detect_duration_jitter,
        )
    )
    try:
        ids = [b["id"] for b in sim.batches()]
        say(
            f"N={plan.n}: detection, interval {plan.detect_interval:g}s, batches ending "
            f"{plan.detect_duration * (1 - plan.detect_duration_jitter):g}-"
            f"{plan.detect_duration * (1 + plan.detect_duration_jitter):g}s after the start"
        )
        daemon = DaemonProcess(
            workdir / "detection",
            daemon_sections(plan, sim, plan.detect_interval),
            [(VECTOR_STORE_ID, batch_id) for batch_id in ids],
        )
        try:
            ended: dict[str, float] = {}
            last_end = plan.detect_duration * (1 + plan.detect_duration_jitter)
            deadline = time.monotonic() + last_end + 3 * plan.detect_interval + 60
            while len(ended) < plan.n and time.monotonic() < deadline:
                daemon.check_alive("the daemon")
                for entry in daemon.read_log():
                    if entry.get("event") == "batch_completed":
                        ended[str(entry["batch_id"])] = log_time(entry)
                time.sleep(0.5)
            truth = {b["id"]: b for b in sim.batches()}
            stats = sim.stats()
        finally:
            daemon.stop()
    finally:
        sim.stop()
    if set(truth) != set(ids):
        raise BenchError("the simulator's batches changed during the run")
    latencies = [ended[b] - truth[b]["terminal_at_unix"] for b in ids if b in ended]
    seen = [
        truth[b]["seen_terminal_at_unix"] - truth[b]["terminal_at_unix"]
        for b in ids
        if truth[b]["seen_terminal_at_unix"] is not None
    ]
    return DetectionResult(
        plan=plan,
        latencies=latencies,
        server_seen=seen,
        not_seen=[b for b in ids if b not in ended],
        max_requests_per_second=int(stats["max_requests_per_second"]),
        rate_limited=int(stats["rate_limited"]),
        requests=int(stats["requests"]),
        after_terminal=int(stats["retrieves_after_terminal"]),
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan
