"""The scrape-time metrics: names and labels as documented, values from the engine's watches."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from watcher import __version__
from watcher.api.client import Exchange
from watcher.api.headers import RateLimit, ResponseMeta
from watcher.api.models import FileCounts, LastError
from watcher.api.settings import ClientSettings
from watcher.api.vector_stores import VectorStore
from watcher.config import config_from_mapping
from watcher.core import lifecycle, store_lifecycle
from watcher.core.engine import Engine
from watcher.core.events import BatchFinished, BatchRetried
from watcher.core.failed_files import NOTHING_LISTED
from watcher.core.results import BatchResult, FailedFile
from watcher.core.settings import EngineSettings
from watcher.core.states import Phase, State
from watcher.core.watch import STORE, Watch, WatchOptions
from watcher.daemon.batch_metrics import MAX_ERROR_CODES, STATUS_SET
from watcher.daemon.fleet import FleetReplica
from watcher.daemon.metrics import WATCH_STATES, WatcherMetrics, take_snapshot
from watcher.store.postgres import PostgresStore

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
BATCH = "openai_vector_store_file_batch"
IDS = ("vector_store_id", "batch_id")
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
#: prometheus-client adds a ``_created`` sample (a gauge in the text format) to every counter and
#: histogram: the start of the series, not a metric of ours.
CREATED = "_created"


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    """An engine that never runs: its watches are set by hand, as polls would set them."""
    e = Engine.create(ClientSettings(base_url="http://127.0.0.1:9/v1"), EngineSettings())
    yield e
    await e.client.aclose()


def _result(watch: Watch, status: str, by_code: dict[str, int]) -> BatchResult:
    counts = watch.file_counts
    failed = tuple(
        FailedFile(f"file-{code}-{n}", LastError(code, "why"))
        for code, count in by_code.items()
        for n in range(count)
    )
    return BatchResult(
        vector_store_id=watch.vector_store_id,
        batch_id=watch.batch_id,
        status=State(status),
        file_counts=counts,
        failed_files=failed,
        failed_by_code=by_code,
        failed_files_listed=len(failed),
        failed_files_truncated=False,
        failed_files_complete=True,
        elapsed_seconds=30.0,
        finished_at=1_700_000_100.0,
        labels=watch.labels,
    )


def running(
    engine: Engine,
    batch_id: str,
    *,
    labels: dict[str, str] | None = None,
    status: str = "in_progress",
    stalled: bool = False,
    deadline: float | None = None,
) -> Watch:
    """A watch the engine has polled a few times (as restored from the state store)."""
    watch = replace(
        Watch.new(
            "vs_1",
            batch_id,
            labels=labels,
            options=WatchOptions(deadline_seconds=deadline),
            registered_at=1_700_000_000.0,
        ),
        status=status,
        file_counts=FileCounts(in_progress=4, completed=5, failed=1, cancelled=0, total=10),
        created_at=1_700_000_000,
        first_seen_at=1_700_000_001.0,
        last_poll_at=1_700_000_050.0,
        eta_seconds=42.0,
        stalled=stalled,
    )
    watch, created = engine.add("vs_1", batch_id, restored=watch)
    assert created
    return watch


def finished(
    engine: Engine,
    batch_id: str,
    status: str,
    by_code: dict[str, int] | None = None,
    *,
    labels: dict[str, str] | None = None,
) -> Watch:
    """A watch that ended (as restored from the state store)."""
    failed = sum((by_code or {}).values())
    watch = replace(
        Watch.new("vs_1", batch_id, labels=labels, registered_at=1_700_000_000.0),
        status=status if status not in ("timed_out", "not_found") else "in_progress",
        file_counts=FileCounts(completed=10 - failed, failed=failed, total=10),
        created_at=1_700_000_000,
        last_poll_at=1_700_000_090.0,
    )
    watch = replace(
        watch,
        result=_result(watch, status, by_code or {}),
        finished_at=1_700_000_100.0,
        phase=Phase.FINISHED,
    )
    engine.add("vs_1", batch_id, restored=watch)
    return watch


def scrape(metrics: WatcherMetrics, engine: Engine, accept: str | None = None) -> str:
    body, _ = metrics.render(take_snapshot(engine), accept)
    return body.decode()


def value(metrics: WatcherMetrics, name: str, batch_id: str | None = None, **labels: str) -> float:
    """One sample's value; ``batch_id`` adds the ids of a batch in ``vs_1``."""
    if batch_id is not None:
        labels = {"vector_store_id": "vs_1", "batch_id": batch_id, **labels}
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def documented() -> dict[str, tuple[str, frozenset[str] | None]]:
    """Each metric in docs/metrics.md: its type and label names (None: the watch's labels)."""
    text = DOCS.read_text(encoding="utf-8")
    per_batch, _, rest = text.partition("## Per vector store")
    per_store, _, own = rest.partition("## The watcher itself")
    own = own.partition("## A fleet")[0]  # fleet mode's own: see test_fleet_gauges_...
    found: dict[str, tuple[str, frozenset[str] | None]] = {}
    row = re.compile(r"^\| `([a-z_:]+)` \| (\w+) \|\s*([^|]*?)\s*\|", re.MULTILINE)
    sections = (
        (per_batch, frozenset(IDS)),
        (per_store, frozenset({"vector_store_id"})),
        (own, frozenset()),
    )
    for section, base in sections:
        for name, kind, column in row.findall(section):
            names = frozenset(re.findall(r"`(\w+)`", column))
            found[name] = (kind, None if "the watch's" in column else base | names)
    return found


async def test_names_types_and_labels_are_as_documented(engine: Engine) -> None:
    """Every metric docs/metrics.md lists is exposed with its type and exactly its labels, and
    nothing of ours is exposed that the page does not list."""
    metrics = WatcherMetrics()
    running(engine, "vsfb_run", labels={"team": "search"}, deadline=600.0)
    finished(engine, "vsfb_done", "completed", {"unsupported_file": 2})
    meta = ResponseMeta(200, rate_limit=RateLimit(limit=600, remaining=599))
    metrics.on_exchange(Exchange("retrieve", 200, 0.05, meta))
    engine.budget.observe(meta.rate_limit)
    engine.last_success_at = 1_700_000_050.0
    store = VectorStore(
        "vs_1",
        "in_progress",
        FileCounts(in_progress=1, total=1),
        name="Docs",
        usage_bytes=10,
        expires_at=1_800_000_000,
        last_active_at=1_700_000_000,
    )
    polled = store_lifecycle.replied(
        Watch.new("vs_1", STORE, registered_at=1.0, labels={"team": "search"}),
        store,
        poll_after=None,
        now=0.0,
        wall=2.0,
        settings=EngineSettings(),
        random=lambda: 0.5,
    )
    engine.add("vs_1", STORE, restored=polled.watch)
    done = engine.get("vs_1", "vsfb_done")
    assert done is not None
    assert done.result is not None
    metrics.on_event(
        BatchFinished(vector_store_id="vs_1", batch_id="vsfb_done", result=done.result)
    )
    metrics.on_event(
        BatchRetried(
            vector_store_id="vs_1",
            batch_id="vsfb_done",
            retried_as=("vsfb_again",),
            attempt=1,
            files_by_code={"server_error": 1},
        )
    )

    families = list(text_string_to_metric_families(scrape(metrics, engine)))
    with_created = {f.name + CREATED for f in families if f.type in ("counter", "histogram")}
    exposed: dict[str, tuple[str, set[str]]] = {}
    for family in families:
        if family.name in with_created:
            continue
        for sample in family.samples:
            name = family.name + ("_total" if family.type == "counter" else "")
            kind, labels = exposed.setdefault(name, (family.type, set()))
            labels.update(k for k in sample.labels if k != "le")

    docs = documented()
    assert len(docs) == 27, sorted(docs)
    for name, (kind, labels) in docs.items():
        assert name in exposed, f"{name} is documented but not exposed"
        assert exposed[name][0] == kind, name
        if labels is None:  # the info series: the ids plus the watch's own labels
            ids = IDS if name.startswith(BATCH) else ("vector_store_id", "name")
            assert exposed[name][1] == {*ids, "team"}
        else:
            assert exposed[name][1] == labels, name
    ours = {n for n in exposed if n.startswith(("openai_vector_store_", "batch_watcher_"))}
    assert ours == set(docs)


async def test_status_is_a_state_set(engine: Engine) -> None:
    """Each watch has one status series per known status: 1 for its current one, 0 elsewhere."""
    metrics = WatcherMetrics()
    running(engine, "vsfb_run")
    finished(engine, "vsfb_failed", "failed", {"server_error": 3})
    finished(engine, "vsfb_late", "timed_out")
    finished(engine, "vsfb_gone", "not_found")
    scrape(metrics, engine)
    expected = {
        "vsfb_run": "in_progress",
        "vsfb_failed": "failed",
        "vsfb_late": "timed_out",
        "vsfb_gone": "not_found",
    }
    for batch_id, current in expected.items():
        for status in STATUS_SET:
            want = 1.0 if status == current else 0.0
            assert value(metrics, f"{BATCH}_status", batch_id, status=status) == want


async def test_an_unknown_status_is_one_more_value(engine: Engine) -> None:
    """A status the API adds later shows as an extra value set to 1, the known ones at 0."""
    metrics = WatcherMetrics()
    running(engine, "vsfb_new", status="paused")
    text = scrape(metrics, engine)
    assert value(metrics, f"{BATCH}_status", "vsfb_new", status="paused") == 1.0
    for status in STATUS_SET:
        assert value(metrics, f"{BATCH}_status", "vsfb_new", status=status) == 0.0
    assert text.count(f"{BATCH}_status{{") == len(STATUS_SET) + 1


async def test_per_batch_values_follow_the_watch(engine: Engine) -> None:
    """Files by status, expected, stalled, timestamps, ETA and deadline come from the watch."""
    metrics = WatcherMetrics()
    watch = running(engine, "vsfb_run", stalled=True, deadline=600.0)
    scrape(metrics, engine)
    files = {"in_progress": 4, "completed": 5, "failed": 1, "cancelled": 0}
    for status, count in files.items():
        assert value(metrics, f"{BATCH}_files", "vsfb_run", status=status) == count
    assert value(metrics, f"{BATCH}_files_expected", "vsfb_run") == 10
    assert value(metrics, f"{BATCH}_stalled", "vsfb_run") == 1.0
    assert value(metrics, f"{BATCH}_created_timestamp_seconds", "vsfb_run") == 1_700_000_000
    assert value(metrics, f"{BATCH}_last_poll_timestamp_seconds", "vsfb_run") == 1_700_000_050.0
    assert value(metrics, f"{BATCH}_eta_seconds", "vsfb_run") == 42.0
    assert watch.deadline_at is not None
    assert value(metrics, f"{BATCH}_deadline_timestamp_seconds", "vsfb_run") == watch.deadline_at
    ids = {"vector_store_id": "vs_1", "batch_id": "vsfb_run"}
    assert metrics.registry.get_sample_value(f"{BATCH}_finished_timestamp_seconds", ids) is None


async def test_a_finished_batch_has_an_end_and_no_eta_or_deadline(engine: Engine) -> None:
    """Once a watch ends it shows when, and no longer an ETA, a deadline or a stall."""
    metrics = WatcherMetrics()
    watch = running(engine, "vsfb_end", deadline=600.0)
    scrape(metrics, engine)
    ended = lifecycle.listed(
        replace(watch, phase=Phase.LISTING, ending=State.COMPLETED),
        NOTHING_LISTED,
        wall=1_700_000_100.0,
    ).watch
    engine.remove("vs_1", "vsfb_end")
    engine.add("vs_1", "vsfb_end", restored=ended)
    scrape(metrics, engine)
    ids = {"vector_store_id": "vs_1", "batch_id": "vsfb_end"}
    assert value(metrics, f"{BATCH}_finished_timestamp_seconds", "vsfb_end") == 1_700_000_100.0
    for gone in ("eta_seconds", "deadline_timestamp_seconds"):
        assert metrics.registry.get_sample_value(f"{BATCH}_{gone}", ids) is None, gone
    assert value(metrics, f"{BATCH}_stalled", "vsfb_end") == 0.0


async def test_the_info_series_carries_the_user_labels(engine: Engine) -> None:
    """The info series is 1 and carries the watch's labels; names Prometheus would refuse or
    that would overwrite the ids are left out."""
    metrics = WatcherMetrics()
    running(
        engine,
        "vsfb_run",
        # The configuration and the API refuse "batch_id" as a label: only a hand-made (or
        # damaged, restored) watch can hold it.
        labels={
            "team": "search",
            "corpus": "manuals",
            "__meta": "x",
            "bad-name": "y",
            "batch_id": "spoofed",
        },
    )
    scrape(metrics, engine)
    labels = {"vector_store_id": "vs_1", "batch_id": "vsfb_run", "team": "search"}
    assert value(metrics, f"{BATCH}_info", corpus="manuals", **labels) == 1.0
    [sample] = [
        s
        for family in metrics.registry.collect()
        if family.name == f"{BATCH}_info"
        for s in family.samples
    ]
    assert sample.labels == {**labels, "corpus": "manuals"}


async def test_failed_files_by_code(engine: Engine) -> None:
    """Failed files of an ended batch are counted by ``last_error.code``, unknown codes included."""
    metrics = WatcherMetrics()
    finished(engine, "vsfb_f", "completed", {"unsupported_file": 3, "parsing_timeout": 1})
    finished(engine, "vsfb_clean", "completed")
    text = scrape(metrics, engine)
    assert value(metrics, f"{BATCH}_failed_files", "vsfb_f", code="unsupported_file") == 3
    assert value(metrics, f"{BATCH}_failed_files", "vsfb_f", code="parsing_timeout") == 1
    assert 'batch_id="vsfb_clean",code=' not in text


async def test_watches_by_state(engine: Engine) -> None:
    """``batch_watcher_watches`` counts watches per state, with every state present."""
    metrics = WatcherMetrics()
    running(engine, "vsfb_a")
    running(engine, "vsfb_b")
    running(engine, "vsfb_c", stalled=True)
    finished(engine, "vsfb_d", "completed")
    finished(engine, "vsfb_e", "cancelled")
    finished(engine, "vsfb_f", "cancelled")
    scrape(metrics, engine)
    want = dict.fromkeys(WATCH_STATES, 0.0) | {"watching": 2, "stalled": 1, "completed": 1}
    want["cancelled"] = 2
    for state, count in want.items():
        assert value(metrics, "batch_watcher_watches", state=state) == count, state


async def test_a_removed_watch_leaves_no_series(engine: Engine) -> None:
    """After a watch is removed, no series of the scrape mentions its batch."""
    metrics = WatcherMetrics()
    running(engine, "vsfb_stay", labels={"team": "a"})
    finished(engine, "vsfb_leave", "failed", {"server_error": 2}, labels={"team": "b"})
    assert "vsfb_leave" in scrape(metrics, engine)
    assert engine.remove("vs_1", "vsfb_leave")
    text = scrape(metrics, engine)
    assert "vsfb_leave" not in text
    assert "vsfb_stay" in text
    assert value(metrics, "batch_watcher_watches", state="failed") == 0.0


async def test_text_or_openmetrics_by_accept(engine: Engine) -> None:
    """Without an OpenMetrics ``Accept`` the body is the text format; with it, OpenMetrics."""
    metrics = WatcherMetrics()
    running(engine, "vsfb_run")
    snapshot = take_snapshot(engine)
    for accept in (None, "text/plain", "*/*"):
        body, content_type = metrics.render(snapshot, accept)
        assert content_type.startswith("text/plain; version=0.0.4")
        assert not body.endswith(b"# EOF\n")
    body, content_type = metrics.render(snapshot, f"{OPENMETRICS},text/plain;q=0.5")
    assert content_type.startswith(OPENMETRICS)
    assert body.endswith(b"# EOF\n")
    families = {f.name: f for f in openmetrics_families(body.decode())}
    assert families["batch_watcher_api_requests"].type == "counter"
    [sample] = [
        s for s in families[f"{BATCH}_status"].samples if s.labels["status"] == "in_progress"
    ]
    assert sample.value == 1.0


HOSTILE = [
    'say "hi"',
    "back\\slash\\",
    "two\nlines\r\n",
    "ünïcødé ✓ 日本語 🚀",
    '} evil{x="1"',
    "# HELP nope",
]


@pytest.mark.parametrize("accept", [None, OPENMETRICS])
async def test_hostile_label_values_survive_the_exposition(
    engine: Engine, accept: str | None
) -> None:
    """Quotes, backslashes, newlines and unicode in labels and codes parse back unchanged."""
    metrics = WatcherMetrics()
    labels = {f"l{n}": text for n, text in enumerate(HOSTILE)}
    finished(engine, "vsfb_h", "completed", dict.fromkeys(HOSTILE, 1), labels=labels)
    running(engine, "vsfb_odd", status=HOSTILE[0])
    text = scrape(metrics, engine, accept)
    parse = openmetrics_families if accept else text_string_to_metric_families
    families = {f.name: f for f in parse(text)}
    [info] = [s for s in families[f"{BATCH}_info"].samples if s.labels["batch_id"] == "vsfb_h"]
    assert info.labels == {**labels, "vector_store_id": "vs_1", "batch_id": "vsfb_h"}
    codes = {
        s.labels["code"]: s.value
        for s in families[f"{BATCH}_failed_files"].samples
        if s.labels["batch_id"] == "vsfb_h"
    }
    assert codes == dict.fromkeys(HOSTILE, 1.0)
    odd = {
        s.labels["status"]: s.value
        for s in families[f"{BATCH}_status"].samples
        if s.labels["batch_id"] == "vsfb_odd"
    }
    assert odd[HOSTILE[0]] == 1.0
    assert len(odd) == len(STATUS_SET) + 1
    assert families["batch_watcher_watches"].samples  # the exposition went on after them


async def test_api_exchanges_are_counted_by_endpoint_and_code(engine: Engine) -> None:
    """Each exchange counts under its endpoint and HTTP status, or ``error`` without one."""
    metrics = WatcherMetrics()
    metrics.on_exchange(Exchange("retrieve", 200, 0.02, ResponseMeta(200)))
    metrics.on_exchange(Exchange("retrieve", 200, 0.03, ResponseMeta(200)))
    metrics.on_exchange(Exchange("list_files", 429, 0.01, ResponseMeta(429)))
    metrics.on_exchange(Exchange("retrieve", None, 30.0, None))
    r = metrics.registry
    total = "batch_watcher_api_requests_total"
    assert r.get_sample_value(total, {"endpoint": "retrieve", "code": "200"}) == 2
    assert r.get_sample_value(total, {"endpoint": "list_files", "code": "429"}) == 1
    assert r.get_sample_value(total, {"endpoint": "retrieve", "code": "error"}) == 1
    count = "batch_watcher_api_request_duration_seconds_count"
    assert r.get_sample_value(count, {"endpoint": "retrieve"}) == 3
    bucket = "batch_watcher_api_request_duration_seconds_bucket"
    assert r.get_sample_value(bucket, {"endpoint": "retrieve", "le": "0.025"}) == 1


async def test_finished_batches_and_failed_files_are_counted(engine: Engine) -> None:
    """Each finished batch counts under its status, and its failed files under their codes."""
    metrics = WatcherMetrics()
    for batch_id, status, by_code in (
        ("vsfb_1", "completed", {"unsupported_file": 2}),
        ("vsfb_2", "failed", {"unsupported_file": 1, "server_error": 4}),
        ("vsfb_3", "completed", {}),
    ):
        watch = finished(engine, batch_id, status, by_code)
        assert watch.result is not None
        metrics.on_event(
            BatchFinished(vector_store_id="vs_1", batch_id=batch_id, result=watch.result)
        )
    r = metrics.registry
    assert r.get_sample_value("batch_watcher_batches_finished_total", {"status": "completed"}) == 2
    assert r.get_sample_value("batch_watcher_batches_finished_total", {"status": "failed"}) == 1
    failed = "batch_watcher_files_failed_total"
    assert r.get_sample_value(failed, {"code": "unsupported_file"}) == 3
    assert r.get_sample_value(failed, {"code": "server_error"}) == 4


async def test_watcher_gauges_follow_the_engine(engine: Engine) -> None:
    """Auth failing, the last successful poll and the rate-limit headroom come from the
    engine's snapshot."""
    metrics = WatcherMetrics()
    scrape(metrics, engine)
    r = metrics.registry
    assert r.get_sample_value("batch_watcher_auth_failing") == 0.0
    assert r.get_sample_value("batch_watcher_last_successful_poll_timestamp_seconds") is None
    assert r.get_sample_value("batch_watcher_rate_limit_remaining_requests") is None
    assert r.get_sample_value("batch_watcher_build_info", {"version": __version__}) == 1.0

    engine.budget.observe(RateLimit(limit=600, remaining=17, reset_seconds=5.0))
    engine.last_success_at = 1_700_000_050.0
    scrape(metrics, engine)
    assert r.get_sample_value("batch_watcher_auth_failing") == 0.0
    assert r.get_sample_value("batch_watcher_rate_limit_remaining_requests") == 17.0
    assert (
        r.get_sample_value("batch_watcher_last_successful_poll_timestamp_seconds")
        == 1_700_000_050.0
    )

    refused = replace(take_snapshot(engine), auth_failing=True)
    metrics.render(refused, None)
    assert r.get_sample_value("batch_watcher_auth_failing") == 1.0


async def test_error_codes_are_bounded_across_batches_and_leave_with_their_watches() -> None:
    """Fifty batches that each invent twenty codes show at most ``MAX_ERROR_CODES`` distinct
    codes in all (the rest as "other", every file still counted), the API's own codes always;
    once their watches are removed, none of their series is left and new codes show again."""
    metrics = WatcherMetrics()
    engine = Engine.create(
        ClientSettings(base_url="http://127.0.0.1:9/v1"), EngineSettings(), sinks=[metrics.on_event]
    )
    try:
        for n in range(50):
            by_code = {f"invented_{n}_{k}": 1 for k in range(19)} | {"invalid_file": 2}
            watch = finished(engine, f"vsfb_{n:02d}", "completed", by_code)
            assert watch.result is not None
            metrics.on_event(
                BatchFinished(vector_store_id="vs_1", batch_id=watch.batch_id, result=watch.result)
            )
        body, _ = metrics.render(metrics.snapshot(engine), None)
        per_batch = _samples(body.decode(), f"{BATCH}_failed_files")
        codes = {labels["code"] for labels, _ in per_batch}
        assert len(codes - {"other"}) <= MAX_ERROR_CODES
        assert "invalid_file" in codes
        assert len(per_batch) <= MAX_ERROR_CODES + 2 * 50
        assert sum(v for _, v in per_batch) == 50 * 21
        for n in (0, 49):
            mine = {
                labels["code"] for labels, _ in per_batch if labels["batch_id"] == f"vsfb_{n:02d}"
            }
            assert "invalid_file" in mine
        counted = _samples(body.decode(), "batch_watcher_files_failed_total")
        assert len(counted) <= MAX_ERROR_CODES + 4
        assert sum(v for _, v in counted) == 50 * 21
        assert value(metrics, "batch_watcher_files_failed_total", code="invalid_file") == 100

        for n in range(50):
            assert engine.remove("vs_1", f"vsfb_{n:02d}")
        body, _ = metrics.render(metrics.snapshot(engine), None)
        assert _samples(body.decode(), f"{BATCH}_failed_files") == []
        assert len(metrics.codes) == 0
        finished(engine, "vsfb_new", "completed", {"brand_new_code": 1})
        body, _ = metrics.render(metrics.snapshot(engine), None)
        [(labels, _)] = _samples(body.decode(), f"{BATCH}_failed_files")
        assert labels["code"] == "brand_new_code"
    finally:
        await engine.client.aclose()


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def test_retries_are_counted_by_the_code_their_files_failed_with() -> None:
    """Each ``batch_retried`` adds its files to ``batch_watcher_retries_total{code}``."""
    metrics = WatcherMetrics()
    for batch_id, by_code in (("vsfb_1", {"server_error": 3}), ("vsfb_2", {"server_error": 2})):
        metrics.on_event(
            BatchRetried(
                vector_store_id="vs_1",
                batch_id=batch_id,
                retried_as=(f"{batch_id}_again",),
                attempt=1,
                files_by_code=by_code,
            )
        )
    r = metrics.registry
    assert r.get_sample_value("batch_watcher_retries_total", {"code": "server_error"}) == 5
    assert r.get_sample_value("batch_watcher_retries_total", {"code": "invalid_file"}) is None


def test_fleet_metrics_are_as_documented() -> None:
    """Every metric docs/metrics.md lists for a fleet is what a fleet replica exposes, with its
    type and exactly its labels, and it exposes nothing else."""
    section = DOCS.read_text(encoding="utf-8").partition("## A fleet")[2].partition("\n## ")[0]
    row = re.compile(r"^\| `([a-z_:]+)` \| (\w+) \|\s*([^|]*?)\s*\|", re.MULTILINE)
    docs = {
        name: (kind, set(re.findall(r"`(\w+)`", labels)))
        for name, kind, labels in row.findall(section)
    }
    config = config_from_mapping(
        {"api": {"base_url": "http://127.0.0.1:9/v1"}, "state": {"url": "postgresql://x@h/db"}},
        {"OPENAI_API_KEY": "sk-test-metrics-fleet-000"},
    )
    replica = FleetReplica(config, PostgresStore("postgresql://x@h/db"), "r1")
    exposed = {}
    for family in replica.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        exposed[name] = (family.type, {k for s in family.samples for k in s.labels})
    assert len(docs) == 7
    assert exposed == docs
