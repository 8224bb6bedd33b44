"""The adaptive-polling benchmark's results as text: the console table and its section of
``docs/benchmarks.md``, between its own two markers (the rest of the page is kept)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .simulation import Figures, Result

START = "<!-- bench:adaptive:start -->"
END = "<!-- bench:adaptive:end -->"

#: The targets of adaptive polling, at the default interval (5 s).
MAX_RETRIEVES_RATIO = 0.5
MAX_P50 = 1.25
MAX_P99 = 5.5
MAX_FLEET_P50_RATIO = 0.25


def headline(result: Result) -> list[tuple[str, str, str]]:
    """(what, measured, target) for the figures the targets name."""
    adaptive, fixed, sdk = result.alone
    fleet_fixed, _, ranked = result.fleet
    interval = result.settings.interval
    return [
        (
            f"retrieves per batch, adaptive ÷ fixed {interval:g} s",
            f"{adaptive.retrieves / fixed.retrieves:.2f}×",
            f"≤ {MAX_RETRIEVES_RATIO}×",
        ),
        (
            "retrieves per batch, adaptive ÷ openai SDK (1 s)",
            f"{adaptive.retrieves / sdk.retrieves:.3f}×",
            "",
        ),
        ("detection p50, adaptive", f"{adaptive.p50:.2f} s", f"≤ {MAX_P50} s"),
        ("detection p99, adaptive", f"{adaptive.p99:.2f} s", f"≤ {MAX_P99} s"),
        (
            f"fleet detection p50, ranked adaptive ÷ fixed {fleet_fixed.name.split()[-2]} s",
            f"{ranked.p50 / fleet_fixed.p50:.3f}×",
            f"≤ {MAX_FLEET_P50_RATIO}×",
        ),
    ]


def missed(result: Result) -> list[str]:
    """The targets a full run misses (the smoke run is too small to judge them)."""
    adaptive, fixed, _ = result.alone
    fleet_fixed, _, ranked = result.fleet
    out = []
    if adaptive.retrieves > MAX_RETRIEVES_RATIO * fixed.retrieves:
        out.append("retrieves per batch over half of fixed polling's")
    if adaptive.p50 > MAX_P50:
        out.append(f"detection p50 {adaptive.p50:.2f} s > {MAX_P50} s")
    if adaptive.p99 > MAX_P99:
        out.append(f"detection p99 {adaptive.p99:.2f} s > {MAX_P99} s")
    if ranked.p50 > MAX_FLEET_P50_RATIO * fleet_fixed.p50:
        out.append("fleet detection p50 over a quarter of fixed polling's")
    return out


def _table(rows: Sequence[Figures]) -> list[str]:
    lines = [
        "| poller | batches | retrieves per batch | p50 | p90 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in rows:
        lines.append(
            f"| {f.name} | {f.batches:,} | {f.per_batch:.1f} | {f.p50:.2f} s | {f.p90:.2f} s "
            f"| {f.p99:.2f} s | {f.worst:.2f} s |"
        )
    return lines


def _by_duration(result: Result) -> list[str]:
    if not result.by_duration:
        return []
    s = result.settings
    lines = [
        f"**By batch duration**: {s.per_band:,} batches in each band, drawn as above but for "
        "their durations.",
        "",
        f"| durations | retrieves per batch, adaptive | fixed {s.interval:g} s | adaptive ÷ fixed "
        "| p50, adaptive | fixed | p99, adaptive | fixed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for low, high, a, f in result.by_duration:
        lines.append(
            f"| {low:g}–{high:g} s | {a.per_batch:.1f} | {f.per_batch:.1f} "
            f"| {a.retrieves / f.retrieves:.2f}× | {a.p50:.2f} s | {f.p50:.2f} s "
            f"| {a.p99:.2f} s | {f.p99:.2f} s |"
        )
    return [*lines, ""]


def console(result: Result) -> str:
    s = result.settings
    lines = [
        f"{what}: {value}  (target {target or '-'})" for what, value, target in headline(result)
    ]
    lines.append(f"alone: {s.alone:,} batches, interval {s.interval:g} s")
    lines += _table(result.alone)
    lines += _by_duration(result)
    lines.append(
        f"fleet: {s.fleet:,} batches, budget {s.per_second:.1f} requests/s "
        f"(every batch once per {s.budget_interval:g} s)"
    )
    lines += _table(result.fleet)
    return "\n".join(lines)


def markdown(result: Result, info: dict[str, str]) -> str:
    s = result.settings
    lines = [
        START,
        "## Adaptive polling: results (virtual time)",
        "",
        f"- Written by `python -m bench.adaptive` (seed {s.seed}); date {info['date']}, "
        f"commit `{info['commit']}`. Virtual time: the figures do not depend on the machine.",
        "",
        "| | measured | target |",
        "| --- | ---: | --- |",
        *(f"| {what} | {value} | {target} |" for what, value, target in headline(result)),
        "",
        f"**Alone**: {s.alone_batches().describe()}, each watched by itself "
        f"from its start, interval {s.interval:g} s. Latency is the first poll that sees the end "
        "minus the end.",
        "",
        *_table(result.alone),
        "",
        *_by_duration(result),
        f"**Fleet**: {s.fleet_batches().describe()}, sharing a budget of "
        f"{s.per_second:.1f} requests/s: what polling each once every {s.budget_interval:g} s "
        f"needs. The adaptive rows use the default interval ({s.interval:g} s) and the budget "
        "decides who is polled: each second the due watches are ranked, by how long they have "
        "waited or by how likely they are to have ended.",
        "",
        *_table(result.fleet),
        END,
    ]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, result: Result, info: dict[str, str]) -> None:
    generated = markdown(result, info).rstrip("\n")
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + generated + tail
    else:
        text = text.rstrip("\n") + "\n\n" + generated + "\n"
    path.write_text(text, encoding="utf-8")
