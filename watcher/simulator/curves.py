"""Progress curves that behave like real ingestion: rates that change, pauses, a slow tail.

A curve says how many of a batch's files are done ``t`` seconds into its processing. It is drawn
once from a seed, so the same seed gives the same batch on every run, and kept as knots
(moments and files done) joined by straight lines:

- the body (all but the stragglers) runs in a few segments, each at its own rate (up to about
  3× apart), with up to two pauses between them;
- the stragglers, 2–6% of the files, finish one by one over the last 12–25% of the time, each
  gap longer than the one before: the slow tail that makes a naive ETA too early.

The last file finishes at exactly ``duration`` seconds; none of this reads a clock.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache

# Guards against float rounding when the line between two knots lands just below an integer.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Curve:
    """Files done over time, as knots joined by straight lines."""

    times: tuple[float, ...]  # ascending, from 0 to the duration
    done: tuple[float, ...]  # never decreasing, from 0 to the number of files

    @property
    def files(self) -> int:
        return round(self.done[-1]) if self.done else 0

    @property
    def duration(self) -> float:
        return self.times[-1] if self.times else 0.0

    def files_at(self, t: float) -> int:
        """Files done ``t`` seconds in: all of them only at the duration, never before."""
        if not self.times or t <= 0:
            return 0
        if t >= self.duration:
            return self.files
        i = bisect_right(self.times, t)
        t0, t1 = self.times[i - 1], self.times[i]
        d0, d1 = self.done[i - 1], self.done[i]
        value = d0 + (d1 - d0) * (t - t0) / (t1 - t0) if t1 > t0 else d1
        return min(self.files - 1, math.floor(value + _EPSILON))


@lru_cache(maxsize=16_384)
def ingestion_curve(seed: int, files: int, duration: float) -> Curve:
    """The seeded curve of ``files`` files over ``duration`` seconds (cached: a batch's requests
    all ask for the same one)."""
    if files <= 0 or duration <= 0:
        return Curve((), ())
    rng = random.Random(f"ingestion:{seed}")
    stragglers = min(files, max(1, round(files * rng.uniform(0.02, 0.06))))
    body_files = files - stragglers
    tail_time = duration * rng.uniform(0.12, 0.25) if body_files else duration
    body_time = duration - tail_time

    # The body: segments at rates that change, with pauses between some of them.
    segments = rng.randint(3, 7)
    pauses = sorted(rng.sample(range(1, segments), k=min(segments - 1, rng.choice((0, 1, 1, 2)))))
    parts: list[tuple[float, float]] = []  # (share of the body's time, share of its files)
    for n in range(segments):
        if n in pauses:
            parts.append((rng.uniform(0.05, 0.12), 0.0))
        length = rng.uniform(0.5, 1.5)
        parts.append((length, length * math.exp(rng.gauss(0.0, 0.4))))
    time_total = sum(p[0] for p in parts)
    file_total = sum(p[1] for p in parts)
    times, done = [0.0], [0.0]
    for share_time, share_files in parts:
        times.append(times[-1] + body_time * share_time / time_total)
        done.append(done[-1] + body_files * share_files / file_total)
    times[-1], done[-1] = body_time, float(body_files)

    # The tail: each straggler after a longer gap than the one before, the last 20× the first.
    growth = 20.0 ** (1.0 / max(1, stragglers - 1))
    gaps = [growth**k for k in range(stragglers)]
    scale = tail_time / sum(gaps)
    for k, gap in enumerate(gaps):
        times.append(times[-1] + gap * scale)
        done.append(float(body_files + k + 1))
    times[-1] = duration
    return Curve(tuple(times), tuple(done))
