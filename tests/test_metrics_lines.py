"""The per-batch lines written without the encoder: the same value text as prometheus-client,
and only in place of the encoders whose lines they are."""

from __future__ import annotations

import math
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.utils import floatToGoString

from watcher.daemon.lines import go_float, line, writes_like

EDGES = [
    0.0,
    -0.0,
    1.0,
    999999.5,
    9999999.0,
    1e7,
    1.5e7,
    1700000000.25,
    1e16,
    1e22,
    5e-324,
    -1e7,
    math.inf,
    -math.inf,
    math.nan,
    123456,
    10**7,
    10**20,
]


@pytest.mark.parametrize("value", EDGES)
def test_go_float_at_the_edges(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


@settings(max_examples=2000)
@given(value=st.floats() | st.integers(-(10**20), 10**20))
def test_go_float_is_float_to_go_string(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


def test_a_line_is_what_the_encoder_writes() -> None:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

    metric = Metric("x_total_files", "doc", "gauge")
    labels = {"b": 'say "hi"\\\n', "a": "ünï"}
    metric.add_sample("x_total_files", labels, 1e7)

    class One(Collector):
        def collect(self) -> list[Metric]:  # type: ignore[override]
            return [metric]

    for accept in ("text/plain", "application/openmetrics-text; version=1.0.0"):
        encoder, _ = choose_encoder(accept)
        lines = encoder(One()).decode().splitlines()
        assert line("x_total_files", labels, 1e7) in lines


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain",
        "text/plain; version=1.0.0; escaping=allow-utf-8",
        "application/openmetrics-text; version=1.0.0",
        "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
        "",
    ],
)
def test_stands_in_for_prometheus_clients_encoders(accept: str) -> None:
    encoder, _ = choose_encoder(accept)
    assert writes_like(encoder)


def test_not_for_other_encoders_or_escapings() -> None:
    dots = partial(om_exposition.generate_latest, escaping=om_exposition.DOTS)
    values = partial(om_exposition.generate_latest, escaping=om_exposition.VALUES)
    assert not writes_like(dots)
    assert not writes_like(values)
    assert not writes_like(lambda registry: b"")
