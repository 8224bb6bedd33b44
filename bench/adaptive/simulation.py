"""Adaptive polling against fixed-interval polling and the SDK's 1 s poller, on virtual time.

A discrete-event simulation: no process, no socket, no sleeping. The batches are the
simulator's own (:class:`watcher.simulator.BatchSpec` with a seeded ingestion curve, read with
:func:`watcher.simulator.scenario.progress_at`), and every adaptive or fixed poll's wait is the
engine's own decision (:func:`watcher.core.policy.next_poll`, with a
:class:`~watcher.core.policy.ProgressWindow` fed every reply, as the engine does). A request
takes no time, so detection latency is exactly the first poll that sees the end minus the end.

*Alone*: each batch is watched by itself by each poller, with no budget in the way: retrieves
per batch and detection latency.

*Budget*: many batches share a budget that polling every ``budget_interval`` seconds would need
(batches / interval requests per second). Every second the due watches are ranked and the
budget's share of them polled: by how long they have waited (first come, first served, what the
engine does today), or by :func:`watcher.core.policy.ended_likelihood` (most likely ended
first).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from watcher.core.policy import (
    Outcome,
    PollSettings,
    Progress,
    ProgressWindow,
    ended_likelihood,
    next_poll,
)
from watcher.simulator.scenario import BatchSpec, progress_at

SDK_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Batches:
    """How the batches are drawn: log-uniform sizes and durations, starts over a window."""

    count: int
    seed: int = 1
    min_files: int = 50
    max_files: int = 2_000
    min_duration: float = 60.0
    max_duration: float = 1_200.0
    start_window: float = 0.0  # batches start uniformly over this many seconds

    def describe(self) -> str:
        starts = (
            f"starting over {self.start_window:g} s"
            if self.start_window
            else "all starting at once"
        )
        return (
            f"{self.count:,} batches of {self.min_files:,}–{self.max_files:,} files over "
            f"{self.min_duration:g}–{self.max_duration:g} s (both log-uniform), {starts}, each on "
            f"its own ingestion curve (seed {self.seed})"
        )

    def specs(self) -> list[tuple[float, BatchSpec]]:
        """(start moment, spec) of each batch; the watch begins when the batch does."""
        rng = random.Random(self.seed)
        out = []
        for n in range(self.count):
            files = round(_log_uniform(rng, self.min_files, self.max_files))
            duration = _log_uniform(rng, self.min_duration, self.max_duration)
            spec = BatchSpec(
                "vs_bench",
                f"vsfb_bench_{n}",
                total_files=files,
                duration_seconds=duration,
                curve_seed=self.seed * 1_000_003 + n,
            )
            out.append((rng.uniform(0.0, self.start_window), spec))
        return out


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


@dataclass(slots=True)
class Watched:
    """One batch as a poller sees it."""

    spec: BatchSpec
    start: float
    end: float
    window: ProgressWindow = field(default_factory=ProgressWindow)
    last_change: float = 0.0
    last_finished: int = -1
    last_poll: float = 0.0
    remaining: float | None = None  # the estimate made at the last poll
    retrieves: int = 0
    seen_end: float | None = None

    def poll(self, now: float) -> bool:
        """One retrieve at ``now``; True once it shows the batch ended."""
        self.retrieves += 1
        progress = progress_at(self.spec, now - self.start)
        if progress.status != "in_progress":
            self.seen_end = now
            return True
        finished = progress.processed
        if finished != self.last_finished:
            self.last_finished, self.last_change = finished, now
        self.window = self.window.add(Progress(now, finished))
        self.remaining = self.window.remaining_seconds(progress.total, now)
        self.last_poll = now
        return False

    @property
    def latency(self) -> float:
        assert self.seen_end is not None
        return self.seen_end - self.end


Poller = Callable[[Watched, float], float]  # (watch, now) -> wait before the next poll


def policy_poller(settings: PollSettings) -> Poller:
    """The engine's own decision after a good reply."""

    def wait(w: Watched, now: float) -> float:
        return next_poll(
            settings,
            outcome=Outcome.OK,
            since_progress=now - w.last_change,
            remaining=w.remaining,
            random=random.random,
        ).delay

    return wait


def sdk_poller(w: Watched, now: float) -> float:
    """openai-python's ``poll``: every second."""
    return SDK_INTERVAL


def pollers(interval: float) -> dict[str, Poller]:
    fixed = PollSettings(interval=interval, slow_down=False, adaptive=False)
    return {
        "adaptive": policy_poller(replace(fixed, adaptive=True)),
        f"fixed {interval:g} s": policy_poller(fixed),
        "openai SDK (1 s)": sdk_poller,
    }


def _watch(start: float, spec: BatchSpec) -> Watched:
    return Watched(spec, start, start + spec.finishes_after(), last_change=start)


@dataclass(frozen=True, slots=True)
class Figures:
    """One poller's figures over a set of batches."""

    name: str
    batches: int
    retrieves: int
    p50: float
    p90: float
    p99: float
    worst: float

    @property
    def per_batch(self) -> float:
        return self.retrieves / self.batches


def figures(name: str, watched: Sequence[Watched]) -> Figures:
    latencies = sorted(w.latency for w in watched)
    return Figures(
        name,
        len(watched),
        sum(w.retrieves for w in watched),
        percentile(latencies, 0.50),
        percentile(latencies, 0.90),
        percentile(latencies, 0.99),
        latencies[-1],
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run_alone(batches: Batches, poller: Poller) -> list[Watched]:
    """Each batch watched by itself from its start until a poll sees it ended."""
    out = []
    for start, spec in batches.specs():
        w = _watch(start, spec)
        now = start
        while not w.poll(now):
            now += poller(w, now)
        out.append(w)
    return out


def run_budget(
    batches: Batches, poller: Poller, per_second: float, rank: Callable[[Watched, float], float]
) -> list[Watched]:
    """Every batch under one budget of ``per_second`` requests. Each second, the due watches
    are ranked by ``rank`` (highest first) and the budget's share of them polled, one every
    ``1 / per_second`` seconds; the others stay due."""
    watched = [_watch(start, spec) for start, spec in batches.specs()]
    due = [(w.start, n) for n, w in enumerate(watched)]
    heapq.heapify(due)
    ready: list[int] = []
    spacing = 1.0 / per_second
    credit = 0.0
    tick = 0.0
    left = len(watched)
    while left:
        while due and due[0][0] <= tick:
            ready.append(heapq.heappop(due)[1])
        credit = min(credit + per_second, per_second)  # an unused second is not saved up
        if ready:
            ready.sort(key=lambda n: rank(watched[n], tick), reverse=True)
            served, ready = ready[: int(credit)], ready[int(credit) :]
            credit -= len(served)
            for i, n in enumerate(served):
                w = watched[n]
                now = tick + i * spacing
                if w.poll(now):
                    left -= 1
                else:
                    heapq.heappush(due, (now + poller(w, now), n))
        tick += 1.0
    return watched


def by_wait(w: Watched, now: float) -> float:
    """First come, first served: the longest since its last poll first."""
    return now - w.last_poll


def by_likelihood(interval: float) -> Callable[[Watched, float], float]:
    def rank(w: Watched, now: float) -> float:
        if w.retrieves == 0:
            return 1.0  # never seen: its first poll comes first
        return ended_likelihood(w.remaining, now - w.last_poll, interval)

    return rank


# -- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """One run's settings."""

    interval: float = 5.0
    alone: int = 2_000  # batches watched one by one
    fleet: int = 10_000  # batches sharing one budget
    budget_interval: float = 60.0  # the fixed interval the fleet's budget allows
    seed: int = 1
    #: Batches per duration band in the table by duration (0: no table).
    per_band: int = 400
    bands: tuple[tuple[float, float], ...] = (
        (20, 45), (45, 90), (90, 180), (180, 360), (360, 720), (720, 1440),
    )  # fmt: skip

    @property
    def per_second(self) -> float:
        return self.fleet / self.budget_interval

    def alone_batches(self) -> Batches:
        return Batches(self.alone, seed=self.seed)

    def fleet_batches(self) -> Batches:
        return Batches(self.fleet, seed=self.seed + 1)


SMOKE = Settings(alone=300, fleet=2_000, per_band=0)


@dataclass(frozen=True, slots=True)
class Result:
    settings: Settings
    alone: list[Figures]  # adaptive, fixed, SDK
    fleet: list[Figures]  # fixed at the budget's interval, adaptive first come, adaptive ranked
    problems: list[str]
    #: (shortest, longest duration, adaptive, fixed) for batches of durations in each band.
    by_duration: list[tuple[float, float, Figures, Figures]] = field(default_factory=list)


def run(settings: Settings) -> Result:
    problems: list[str] = []
    alone = settings.alone_batches()
    alone_figures = []
    for name, poller in pollers(settings.interval).items():
        watched = run_alone(alone, poller)
        problems += _problems(name, watched)
        alone_figures.append(figures(name, watched))
    fleet = settings.fleet_batches()
    adaptive = pollers(settings.interval)["adaptive"]
    fixed_name = f"fixed {settings.budget_interval:g} s"
    runs = (
        (fixed_name, pollers(settings.budget_interval)[fixed_name], by_wait),
        ("adaptive, first come first served", adaptive, by_wait),
        ("adaptive, most likely ended first", adaptive, by_likelihood(settings.interval)),
    )
    fleet_figures = []
    for name, poller, rank in runs:
        watched = run_budget(fleet, poller, settings.per_second, rank)
        problems += _problems(name, watched)
        fleet_figures.append(figures(name, watched))
    by_duration = []
    for low, high in settings.bands if settings.per_band else ():
        band = replace(
            settings.alone_batches(), count=settings.per_band, min_duration=low, max_duration=high
        )
        adaptive_band, fixed_band = (
            figures(name, run_alone(band, poller))
            for name, poller in list(pollers(settings.interval).items())[:2]
        )
        by_duration.append((low, high, adaptive_band, fixed_band))
    return Result(settings, alone_figures, fleet_figures, problems, by_duration)


def _problems(name: str, watched: Sequence[Watched]) -> list[str]:
    """Correctness, never speed: every batch seen ended, and never before it ended."""
    unseen = sum(w.seen_end is None for w in watched)
    early = sum(w.seen_end is not None and w.seen_end < w.end for w in watched)
    out = []
    if unseen:
        out.append(f"{name}: {unseen} batches never seen ended")
    if early:
        out.append(f"{name}: {early} batches seen ended before they ended")
    return out
