"""Results as text: the console summary, the correctness checks, and ``docs/benchmarks.md``.

The generated part of ``docs/benchmarks.md`` sits between two markers; whatever is around them
(the profile notes) is kept when the benchmark is run again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from .scenarios import DetectionResult, Plan, SteadyResult, median

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"

#: The targets, as the README states them.
MAX_RATIO_RAW = 1.2
MAX_RATIO_SDK = 0.75
MAX_BYTES_PER_WATCH = 5000
MAX_SCRAPE_SECONDS = 0.5
DETECTION_SLACK = 0.5


@dataclasses.dataclass(slots=True)
class SizeResult:
    steady: SteadyResult
    detection: DetectionResult

    @property
    def plan(self) -> Plan:
        return self.steady.plan


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, as the figures record them."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("httpx", "openai", "prometheus-client", "structlog", "anyio")
    )
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
    }


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "watcher", "bench"):
        commit += " (with uncommitted changes to watcher/ or bench/)"
    return commit


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _num(n: int) -> str:
    return f"{n:,}"


def summary_rows(results: Sequence[SizeResult]) -> list[tuple[str, list[str], str]]:
    """(what, one value per size, target) for the summary table."""

    def row(what: str, values: list[str], target: str) -> tuple[str, list[str], str]:
        return (what, values, target)

    s = [r.steady for r in results]
    d = [r.detection for r in results]
    return [
        row("CPU per poll: watcher", [_ms(x.watcher.cpu_per_poll) for x in s], ""),
        row("CPU per poll: raw httpx loop", [_ms(x.raw.cpu_per_poll) for x in s], ""),
        row("CPU per poll: openai SDK loop", [_ms(x.sdk.cpu_per_poll) for x in s], ""),
        row(
            "watcher ÷ raw httpx",
            [f"{x.watcher.cpu_per_poll / x.raw.cpu_per_poll:.2f}×" for x in s],
            f"≤ {MAX_RATIO_RAW}×",
        ),
        row(
            "watcher ÷ openai SDK",
            [f"{x.watcher.cpu_per_poll / x.sdk.cpu_per_poll:.2f}×" for x in s],
            f"≤ {MAX_RATIO_SDK}×",
        ),
        row(
            "memory per watch",
            [f"{x.memory_per_watch / 1000:.2f} KB" for x in s],
            f"< {MAX_BYTES_PER_WATCH // 1000} KB",
        ),
        row(
            "`GET /metrics`: first scrape",
            [f"{x.first_scrape_seconds:.3f} s" for x in s],
            "",
        ),
        row(
            f"`GET /metrics` every {s[0].plan.scrape_interval:g} s, median (max)",
            [f"{median(x.scrape_seconds):.3f} s ({max(x.scrape_seconds):.3f} s)" for x in s],
            f"< {MAX_SCRAPE_SECONDS} s at 10,000",
        ),
        row(
            "detection latency p50 / p99",
            [f"{x.quantile(0.5):.2f} s / {x.quantile(0.99):.2f} s" for x in d],
            "p99 ≤ interval + 0.5 s",
        ),
        row("poll interval (detection run)", [f"{x.plan.detect_interval:g} s" for x in d], ""),
        row(
            "most requests in one second / budget",
            [
                f"{max(x.watcher.max_requests_per_second, y.max_requests_per_second)}"
                f" / {x.plan.rate:g}"
                for x, y in zip(s, d, strict=True)
            ],
            "≤ budget",
        ),
        row(
            "429s (budget under the server's limit)",
            [str(x.watcher.rate_limited + y.rate_limited) for x, y in zip(s, d, strict=True)],
            "0",
        ),
        row(
            "batches reported ended",
            [f"{_num(len(y.latencies))} / {_num(y.plan.n)}" for y in d],
            "all",
        ),
    ]


def markdown(results: Sequence[SizeResult], info: dict[str, str]) -> str:
    sizes = [f"N = {_num(r.plan.n)}" for r in results]
    out = [
        START,
        "## Results",
        "",
        f"- Machine: {info['cpu']}, {info['memory']}; {info['os']}",
        f"- Python {info['python']}; {info['packages']}",
        f"- Date: {info['date']}",
        f"- Commit: `{info['commit']}`",
        "",
        f"| | {' | '.join(sizes)} | target |",
        f"| --- | {' | '.join('---:' for _ in sizes)} | --- |",
    ]
    for what, values, target in summary_rows(results):
        out.append(f"| {what} | {' | '.join(values)} | {target} |")
    out += ["", "### Settings and raw numbers", ""]
    for r in results:
        out += _details(r)
    out.append(END)
    return "\n".join(out) + "\n"


def _details(r: SizeResult) -> list[str]:
    p, s, d = r.plan, r.steady, r.detection
    lines = [
        f"**N = {_num(p.n)}.** Budget {_num(p.budget_per_minute)} requests/min "
        f"({p.rate:g}/s), concurrency {p.concurrency}, simulator limit "
        f"{p.server_limit_per_second} requests per 1-s window.",
        "",
        f"Steady run: poll interval {p.steady_interval:g} s, so every watch is always due and "
        f"the budget sets the rate. After the daemon's first sweep, the three clients take "
        f"turns ({p.rounds} rounds; the two waiting are stopped with SIGSTOP), each turn "
        f"{p.warmup_seconds:g} s of warm-up and {p.window_seconds / p.rounds:g} s measured.",
        "",
        "| client | polls | polls/s | CPU (s) | CPU per poll (each turn) | simulator CPU per poll "
        "| RSS | most requests in 1 s | 429s | non-2xx |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in (s.watcher, s.raw, s.sdk):
        turns = ", ".join(f"{x * 1000:.2f}" for x in run.per_window)
        lines.append(
            f"| {run.name} | {_num(run.polls)} | {run.polls_per_second:.1f} "
            f"| {run.cpu_seconds:.2f} | {_ms(run.cpu_per_poll)} ({turns}) "
            f"| {_ms(run.server_cpu_seconds / run.polls if run.polls else math.nan)} "
            f"| {run.rss / 2**20:.1f} MiB | {run.max_requests_per_second} "
            f"| {run.rate_limited} | {run.non_2xx} |"
        )
    lines += [
        "",
        f"Memory: RSS {s.watcher.rss / 2**20:.1f} MiB watching {_num(p.n)} batches, "
        f"{s.idle_rss / 2**20:.1f} MiB watching none: "
        f"{s.memory_per_watch:,.0f} bytes per watch (before any scrape; "
        f"{s.rss_after_scrapes / 2**20:.1f} MiB after the scrapes below).",
        "",
        f"`/metrics`, asked for as Prometheus 2 asks (OpenMetrics), while polling: "
        f"{s.batch_series:,} batches shown, {s.scrape_bytes / 1e6:.2f} MB. The first scrape "
        f"(every line rendered) {s.first_scrape_seconds:.3f} s; then {len(s.scrape_seconds)} "
        f"scrapes {p.scrape_interval:g} s apart: "
        + ", ".join(f"{x:.3f}" for x in s.scrape_seconds)
        + " s, with "
        + ", ".join(_num(x) for x in s.polls_between_scrapes)
        + " polls since the scrape before. The daemon counted "
        f"{s.api_requests_metric:,.0f} requests in `batch_watcher_api_requests_total`.",
        "",
        f"Detection run: interval {p.detect_interval:g} s, batches of {_num(p.detect_files)} "
        f"files ending {p.detect_duration * (1 - p.detect_duration_jitter):g}–"
        f"{p.detect_duration * (1 + p.detect_duration_jitter):g} s after the start. "
        f"Latency (daemon's `batch_completed` − simulator's terminal moment): "
        f"p50 {d.quantile(0.5):.2f} s, p90 {d.quantile(0.9):.2f} s, "
        f"p99 {d.quantile(0.99):.2f} s, max {d.quantile(1.0):.2f} s. "
        f"Reply showing it terminal (simulator's view): p50 "
        f"{median(d.server_seen):.2f} s, max {max(d.server_seen, default=math.nan):.2f} s. "
        f"{_num(d.requests)} requests, at most {d.max_requests_per_second} in one second, "
        f"{d.rate_limited} 429s, {d.after_terminal} retrieves after a reply showed the batch "
        "terminal.",
        "",
    ]
    return lines


def write_markdown(path: Path, results: Sequence[SizeResult], info: dict[str, str]) -> None:
    generated = markdown(results, info)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + generated.rstrip("\n") + tail
    else:
        text = _PREAMBLE + "\n" + generated
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


_PREAMBLE = """# Benchmarks

`python -m bench` (see [the README](../README.md#benchmarks)) writes the section below.
"""


def checks(results: Sequence[SizeResult]) -> list[str]:
    """Correctness problems (never timing): what the smoke run in CI fails on."""
    problems = []
    for r in results:
        n, s, d = r.plan.n, r.steady, r.detection
        budget = r.plan.rate
        if d.not_seen:
            problems.append(f"N={n}: {len(d.not_seen)} batches never reported ended")
        if len(d.server_seen) != n:
            problems.append(f"N={n}: the simulator showed {len(d.server_seen)} of {n} terminal")
        if d.after_terminal:
            problems.append(f"N={n}: {d.after_terminal} retrieves after a terminal reply")
        for name, limited in (
            ("daemon (steady)", s.watcher.rate_limited),
            ("daemon (detection)", d.rate_limited),
            ("raw baseline", s.raw.rate_limited),
            ("SDK baseline", s.sdk.rate_limited),
        ):
            if limited:
                problems.append(f"N={n}: {name} got {limited} 429s under the server's limit")
        for name, most in (
            ("steady", s.watcher.max_requests_per_second),
            ("detection", d.max_requests_per_second),
        ):
            if most > budget:
                problems.append(
                    f"N={n}: the daemon made {most} requests in one second ({name} run); "
                    f"the budget is {budget:g}"
                )
        if s.watcher.non_2xx:
            problems.append(f"N={n}: the daemon got {s.watcher.non_2xx} non-2xx replies")
        if s.batch_series != n:
            problems.append(f"N={n}: /metrics showed {s.batch_series} batches, not {n}")
        if s.api_requests_metric < s.watcher.polls:
            problems.append(
                f"N={n}: the daemon counted {s.api_requests_metric:g} requests, the simulator "
                f"{s.watcher.polls} in the window alone"
            )
    return problems


def to_json(results: Sequence[SizeResult], info: dict[str, str]) -> str:
    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, list):
            return [plain(x) for x in obj]
        return obj

    return json.dumps({"machine": info, "results": [plain(r) for r in results]}, indent=1)
