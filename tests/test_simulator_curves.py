"""The simulator's ingestion curves: seeded, monotone, ending exactly at their duration, with
changing rates, pauses and a slow tail of stragglers."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.simulator import BatchSpec
from watcher.simulator.curves import Curve, ingestion_curve
from watcher.simulator.scenario import expand_template, processed_at, progress_at, spec_from_json


@given(st.integers(0, 10**6), st.integers(1, 3000), st.floats(1, 5000))
def test_a_curve_rises_to_every_file_at_exactly_its_duration(
    seed: int, files: int, duration: float
) -> None:
    """Files done never go back, every file is done at the duration and not one moment before."""
    curve = ingestion_curve(seed, files, duration)
    moments = [duration * k / 97 for k in range(98)]
    done = [curve.files_at(t) for t in moments]
    assert done == sorted(done)
    assert done[0] == 0
    assert curve.files_at(duration) == files
    assert curve.files_at(duration * (1 - 1e-9)) < files


def test_the_same_seed_draws_the_same_curve_and_another_seed_another() -> None:
    """A curve is a function of its seed: runs repeat, batches differ."""
    assert ingestion_curve(5, 500, 300.0) == ingestion_curve(5, 500, 300.0)
    assert ingestion_curve(5, 500, 300.0) != ingestion_curve(6, 500, 300.0)


def _rates(curve: Curve) -> list[float]:
    """The rates of the body's segments (the first 90% of the files)."""
    pairs = zip(curve.times, curve.done, curve.times[1:], curve.done[1:], strict=False)
    body = 0.9 * curve.files
    return [(d1 - d0) / (t1 - t0) for t0, d0, t1, d1 in pairs if t1 > t0 and d1 <= body]


def test_curves_have_changing_rates_pauses_and_a_slow_tail() -> None:
    """Across seeds: in most curves rates at least 1.5× apart and a pause, and in every one the
    last twentieth of the files taking over a tenth of the time."""
    curves = [ingestion_curve(seed, 1000, 600.0) for seed in range(50)]
    moving = [[r for r in _rates(c) if r] for c in curves]
    assert sum(max(r) >= 1.5 * min(r) for r in moving) >= 30
    assert sum(0.0 in _rates(c) for c in curves) >= 25
    for c in curves:
        nineteen_twentieths = next(t for t in range(601) if c.files_at(t) >= 950)
        assert 600 - nineteen_twentieths > 60


def test_a_tiny_batch_has_a_curve_too() -> None:
    """A batch of one file finishes it at the duration; no files or no time, no curve."""
    one = ingestion_curve(1, 1, 10.0)
    assert [one.files_at(t) for t in (0, 5, 9.99, 10)] == [0, 0, 0, 1]
    assert ingestion_curve(1, 0, 10.0).files_at(5) == 0


def test_a_spec_with_a_curve_follows_it_after_its_start_delay() -> None:
    """``curve_seed`` makes the spec's progress the curve's, shifted by its start delay."""
    spec = BatchSpec("vs", "b", 200, 100.0, start_delay_seconds=5, curve_seed=9, failed_files=20)
    curve = ingestion_curve(9, 200, 100.0)
    assert [processed_at(spec, t + 5) for t in (0, 30, 60, 99)] == [
        curve.files_at(t) for t in (0, 30, 60, 99)
    ]
    assert progress_at(spec, 104.99).status == "in_progress"
    assert progress_at(spec, 105).status == "completed"


def test_a_curve_and_a_stall_are_refused_together() -> None:
    """A curve has pauses of its own: a stall beside it is an error naming the field."""
    with pytest.raises(ValueError, match="stall_after_files: an ingestion curve"):
        BatchSpec("vs", "b", 10, 10, curve_seed=1, stall_after_files=3)
    with pytest.raises(ValueError, match="curve_seed must be integers or null"):
        spec_from_json(
            {"vector_store_id": "vs", "batch_id": "b", "total_files": 1, "duration_seconds": 1,
             "curve_seed": "x"}
        )  # fmt: skip


def test_a_template_gives_each_copy_its_own_curve() -> None:
    """Copies of a template with a curve seed follow consecutive seeds."""
    template = BatchSpec("vs", "t", 100, 60.0, curve_seed=40)
    copies = expand_template(template, 3, prefix="b")
    assert [c.curve_seed for c in copies] == [40, 41, 42]
    assert (
        expand_template(dataclasses.replace(template, curve_seed=None), 2, prefix="b")[1].curve_seed
        is None
    )
