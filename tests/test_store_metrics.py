"""The per-store families in /metrics: values from the store watches, the name escaped and
bounded, series only where the store has the fact."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from watcher.api.models import FileCounts
from watcher.api.vector_stores import VectorStore
from watcher.core import store_lifecycle
from watcher.core.settings import EngineSettings
from watcher.core.watch import STORE, Watch
from watcher.daemon.metrics import Snapshot, WatcherMetrics
from watcher.daemon.store_metrics import MAX_NAME_LABEL, StoreSample

HOSTILE = 'say "hi" \\ <b>' + "x" * 200


def watched(vs: str, store: VectorStore, labels: dict[str, str] | None = None) -> Watch:
    watch = Watch.new(vs, STORE, registered_at=1.0, labels=labels)
    step = store_lifecycle.replied(
        watch,
        store,
        poll_after=None,
        now=0.0,
        wall=2.0,
        settings=EngineSettings(),
        random=lambda: 0.5,
    )
    return step.watch


def scrape(*watches: Watch, accept: str | None = None) -> str:
    metrics = WatcherMetrics()
    snapshot = Snapshot((), None, None, False, stores=[StoreSample.of(w) for w in watches])
    body, _ = metrics.render(snapshot, accept)
    return body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("openai_vector_store_") and "file_batch" not in s.name
    }


COUNTS = FileCounts(in_progress=2, completed=5, failed=3, cancelled=0, total=10)
BUSY = VectorStore(
    "vs_busy",
    "in_progress",
    COUNTS,
    name=HOSTILE,
    usage_bytes=4096,
    expires_at=1_800_000_000,
    last_active_at=1_700_000_000,
    expires_after_days=7,
)


def test_a_stores_facts_are_its_series() -> None:
    """File counts by status, the status as a state set, usage, expiry and last activity, and
    info with the bounded name and the watch's labels."""
    got = samples(scrape(watched("vs_busy", BUSY, {"team": "search"})))
    vs = ("vector_store_id", "vs_busy")
    assert got["openai_vector_store_files", (("status", "failed"), vs)] == 3
    assert got["openai_vector_store_files", (("status", "total"), vs)] == 10
    assert got["openai_vector_store_status", (("status", "in_progress"), vs)] == 1
    assert got["openai_vector_store_status", (("status", "expired"), vs)] == 0
    assert got["openai_vector_store_status", (("status", "completed"), vs)] == 0
    assert got["openai_vector_store_usage_bytes", (vs,)] == 4096
    assert got["openai_vector_store_expires_timestamp_seconds", (vs,)] == 1_800_000_000
    assert got["openai_vector_store_last_active_timestamp_seconds", (vs,)] == 1_700_000_000
    info = {k: v for k, v in got.items() if k[0] == "openai_vector_store_info"}
    [(labels, value)] = [(dict(k[1]), v) for k, v in info.items()]
    assert value == 1
    assert labels == {"vector_store_id": "vs_busy", "team": "search", "name": HOSTILE[:64]}
    assert len(labels["name"]) == MAX_NAME_LABEL


def test_a_store_that_never_expires_has_no_expiry_series_and_an_expired_one_says_so() -> None:
    """No expires_at, no expiry series; an expired store's state set has expired = 1; a store
    not yet polled has only its status and info."""
    forever = replace(BUSY, id="vs_forever", expires_at=None, status="completed")
    gone = replace(BUSY, id="vs_gone", status="expired")
    text = scrape(
        watched("vs_forever", forever),
        watched("vs_gone", gone),
        Watch.new("vs_new", STORE, registered_at=1.0),
    )
    got = samples(text)
    expiring = {dict(k[1])["vector_store_id"] for k in got if "expires" in k[0]}
    assert expiring == {"vs_gone"}
    assert (
        got["openai_vector_store_status", (("status", "expired"), ("vector_store_id", "vs_gone"))]
        == 1
    )
    new = {k[0] for k in got if ("vector_store_id", "vs_new") in k[1]}
    assert new == {"openai_vector_store_status", "openai_vector_store_info"}


def test_openmetrics_scrapes_parse_with_the_hostile_name() -> None:
    """The OpenMetrics exposition with a name full of quotes and backslashes parses back to the
    same name."""
    text = scrape(watched("vs_busy", BUSY), accept="application/openmetrics-text; version=1.0.0")
    [info] = [f for f in om_families(text) if f.name == "openai_vector_store_info"]
    assert info.samples[0].labels["name"] == HOSTILE[:MAX_NAME_LABEL]
