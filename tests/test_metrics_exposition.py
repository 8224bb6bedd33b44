"""The scrape's per-batch families: rendered again only where they changed, and always exactly
what prometheus-client's encoder writes for the whole families."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from watcher.api.models import FileCounts
from watcher.daemon.batch_metrics import BatchSample
from watcher.daemon.exposition import BatchExposition, Encoder
from watcher.daemon.metrics import BatchCollector, Snapshot

TEXT = "text/plain"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
OPENMETRICS_UTF8 = "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8"
ODD = ['say "hi"', "back\\slash", "two\nlines", "ünïcødé ✓", "# EOF", "x} 1\ny{"]


def batch(n: int, **changes: Any) -> BatchSample:
    """Batch ``n``, polled and progressing; ``changes`` overrides fields."""
    ids = (f"vs_{n % 3}", f"vsfb_{n}")
    b = BatchSample(
        key=ids,
        vector_store_id=ids[0],
        batch_id=ids[1],
        status="in_progress",
        state="watching",
        stalled=False,
        file_counts=FileCounts(in_progress=5, completed=4, failed=1, cancelled=0, total=10),
        labels={"team": "search"},
        created_at=1_700_000_000 + n,
        finished_at=None,
        last_poll_at=1_700_000_050.5,
        eta_seconds=42.0,
        deadline_at=None,
        failed_by_code=None,
    )
    return dataclasses.replace(b, **changes)


def whole(batches: Sequence[BatchSample], encoder: Encoder) -> bytes:
    """What the encoder writes for the whole per-batch families, without its trailer."""
    collector = BatchCollector()
    collector.snapshot = Snapshot(batches, None, None, False)
    trailer = encoder(_Nothing())
    body = encoder(collector)
    assert body.endswith(trailer)
    return body[: len(body) - len(trailer)]


class _Nothing(Collector):
    def collect(self) -> list[object]:  # type: ignore[override]
        return []


counts = st.builds(
    FileCounts,
    in_progress=st.integers(0, 3),
    completed=st.integers(0, 3),
    failed=st.integers(0, 2),
    cancelled=st.integers(0, 1),
    total=st.integers(0, 9),
)
maybe_time = st.none() | st.sampled_from([1_700_000_000.0, 1_700_000_000.25, 1e10, 0.0])
changes = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["in_progress", "completed", "failed", "timed_out", *ODD]),
        "stalled": st.booleans(),
        "file_counts": st.none() | counts,
        "labels": st.dictionaries(
            st.sampled_from(["team", "corpus", "bad-name", "__x"]), st.sampled_from(ODD), max_size=3
        ),
        "created_at": st.none() | st.integers(0, 2),
        "finished_at": maybe_time,
        "last_poll_at": maybe_time,
        "eta_seconds": st.none() | st.floats(allow_nan=False, allow_infinity=True),
        "deadline_at": maybe_time,
        "failed_by_code": st.none()
        | st.dictionaries(st.sampled_from(["server_error", *ODD]), st.integers(1, 3), max_size=3),
    },
)
#: A scrape: which of batches 0..5 are watched, in which order, each with some changes.
scrapes = st.lists(
    st.lists(st.tuples(st.integers(0, 5), changes), unique_by=lambda t: t[0], max_size=6),
    min_size=1,
    max_size=6,
)


# Each example is a run of up to six scrapes of up to six batches, every render compared whole:
# 25 runs per format (75 in all, over a dozen batch states each) cover batches coming, going,
# changing and coming back; drawing one costs ~30 ms, and 60 per format was most of this file.
@pytest.mark.parametrize("accept", [TEXT, OPENMETRICS, OPENMETRICS_UTF8])
@settings(max_examples=25, deadline=None)
@given(scrapes=scrapes)
def test_every_scrape_is_what_the_encoder_writes_for_the_whole_families(
    accept: str, scrapes: list[list[tuple[int, dict[str, object]]]]
) -> None:
    """Over a run of scrapes in which batches come, go, change and come back, each render is
    byte for byte the encoder's output for the whole families at that moment."""
    exposition = BatchExposition()
    encoder, content_type = choose_encoder(accept)
    for scrape in scrapes:
        batches = [batch(n, **c) for n, c in scrape]
        assert exposition.render(batches, encoder, content_type) == whole(batches, encoder)


def test_a_scrape_renders_only_what_changed_since_the_last() -> None:
    """Lines whose values did not change are reused; a moved count renders its own line only,
    not the batch's other counts."""
    exposition = BatchExposition()
    encoder, content_type = choose_encoder(TEXT)
    batches = [batch(n) for n in range(3)]
    exposition.render(batches, encoder, content_type)
    first = exposition.rendered
    # files 4, expected, status, stalled, info, created, last poll, ETA: 11 parts per batch
    assert first == 3 * 11

    exposition.render(batches, encoder, content_type)
    assert exposition.rendered == first  # nothing changed, nothing rendered

    assert batches[1].file_counts is not None
    moved = dataclasses.replace(batches[1].file_counts, in_progress=4, completed=5)
    batches[1] = dataclasses.replace(batches[1], file_counts=moved, last_poll_at=1_700_000_060.0)
    body = exposition.render(batches, encoder, content_type)
    assert exposition.rendered == first + 3  # in_progress, completed, last poll
    assert body == whole(batches, encoder)


def test_formats_keep_their_own_lines() -> None:
    """Text and OpenMetrics scrapes in turn each reuse their own format's lines; a third format
    evicts the least recently used one."""
    exposition = BatchExposition()
    batches = [batch(n) for n in range(2)]
    for accept in (TEXT, OPENMETRICS, TEXT, OPENMETRICS):
        encoder, content_type = choose_encoder(accept)
        assert exposition.render(batches, encoder, content_type) == whole(batches, encoder)
    assert exposition.rendered == 2 * 2 * 11  # each format rendered the batches once

    encoder, content_type = choose_encoder(OPENMETRICS_UTF8)
    exposition.render(batches, encoder, content_type)  # evicts text, the least recent
    encoder, content_type = choose_encoder(OPENMETRICS)
    exposition.render(batches, encoder, content_type)
    assert exposition.rendered == 3 * 2 * 11
    encoder, content_type = choose_encoder(TEXT)
    exposition.render(batches, encoder, content_type)
    assert exposition.rendered == 4 * 2 * 11


def test_a_failed_render_leaves_no_stale_lines() -> None:
    """If the encoder fails midway, the next scrape renders everything again rather than trust
    keys that were noted for lines never written."""
    exposition = BatchExposition()
    real, content_type = choose_encoder(TEXT)
    fail = False

    def encoder(registry: Collector) -> bytes:
        if fail:
            raise RuntimeError("encoder failed")
        return real(registry)

    exposition.render([batch(n) for n in range(2)], encoder, content_type)
    batches = [batch(n, status="completed", last_poll_at=1_700_000_070.0) for n in range(2)]
    fail = True
    with pytest.raises(RuntimeError, match="encoder failed"):
        exposition.render(batches, encoder, content_type)
    fail = False
    assert exposition.render(batches, encoder, content_type) == whole(batches, real)
