"""Prometheus metrics.

Per-batch series are built at scrape time from a snapshot of the engine's watches (a custom
collector), so a watch that leaves leaves no stale series. The snapshot is taken on the event
loop, between awaits; rendering it may then run in a worker thread without touching the engine.
The watcher's own counters are ordinary prometheus-client metrics, fed by the engine's observer
and sinks.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .client import Exchange
from .engine import Engine
from .events import BatchFinished, Event
from .models import FILE_STATUSES, FileCounts
from .watch import Watch

BATCH = "openai_vector_store_file_batch"
BATCH_LABELS = ("vector_store_id", "batch_id")
#: Every watch shows each of these as a status, 1 for the current one; a status the API adds
#: later shows as one more value.
STATUS_SET = ("in_progress", "completed", "cancelled", "failed", "timed_out", "not_found")
WATCH_STATES = ("watching", "stalled", "completed", "failed", "cancelled", "timed_out", "not_found")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RESERVED = frozenset(BATCH_LABELS)


@dataclass(frozen=True, slots=True)
class BatchSample:
    """What the collector needs of one watch, copied so that rendering never reads the engine."""

    vector_store_id: str
    batch_id: str
    status: str
    state: str
    stalled: bool
    file_counts: FileCounts | None
    labels: Mapping[str, str]
    created_at: int | None
    finished_at: float | None
    last_poll_at: float | None
    eta_seconds: float | None
    deadline_at: float | None
    failed_by_code: Mapping[str, int] | None

    @classmethod
    def of(cls, w: Watch) -> BatchSample:
        return cls(
            vector_store_id=w.vector_store_id,
            batch_id=w.batch_id,
            status=w.display_status,
            state=w.state,
            stalled=w.stalled,
            file_counts=w.file_counts,
            labels=w.labels,
            created_at=w.created_at,
            finished_at=w.finished_at,
            last_poll_at=w.last_poll_at,
            eta_seconds=w.eta_seconds,
            deadline_at=w.deadline_at if w.result is None else None,
            failed_by_code=w.result.failed_by_code if w.result is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    batches: Sequence[BatchSample]
    last_success_at: float | None
    rate_limit_remaining: int | None
    auth_failing: bool


def take_snapshot(engine: Engine) -> Snapshot:
    return Snapshot(
        batches=[BatchSample.of(w) for w in engine.watches()],
        last_success_at=engine.last_success_at,
        rate_limit_remaining=engine.budget.remaining,
        auth_failing=engine.auth_error is not None,
    )


class BatchCollector(Collector):
    """Yields the per-batch and watch-state series of the snapshot it is given."""

    def __init__(self) -> None:
        self.snapshot = Snapshot((), None, None, False)

    def collect(self) -> Iterator[Metric]:
        # One family at a time, each built in one pass over the batches and handed to the
        # exposition before the next is built: the samples of every batch (16 each) never all
        # exist at once, and each sample's labels are one dict, not lists zipped into one.
        batches = self.snapshot.batches
        files = _family("files", "Files in the batch by status (file_counts).", ("status",))
        add, name = files.add_sample, files.name
        for b in batches:
            c = b.file_counts
            if c is not None:
                vs, batch = b.vector_store_id, b.batch_id
                for status, value in zip(
                    FILE_STATUSES, (c.in_progress, c.completed, c.failed, c.cancelled), strict=True
                ):
                    add(name, {"vector_store_id": vs, "batch_id": batch, "status": status}, value)
        yield files
        yield _gauge(
            "files_expected",
            "Files in the batch (file_counts.total).",
            ((b, b.file_counts.total) for b in batches if b.file_counts is not None),
        )
        status_family = _family("status", "The batch's status: 1 for the current one.", ("status",))
        add, name = status_family.add_sample, status_family.name
        states: Tally[str] = Tally(dict.fromkeys(WATCH_STATES, 0))
        for b in batches:
            states[b.state] += 1
            vs, batch, current = b.vector_store_id, b.batch_id, b.status
            for status in STATUS_SET:
                one = 1.0 if current == status else 0.0
                add(name, {"vector_store_id": vs, "batch_id": batch, "status": status}, one)
            if current not in STATUS_SET:
                add(name, {"vector_store_id": vs, "batch_id": batch, "status": current}, 1.0)
        yield status_family
        yield _gauge(
            "stalled",
            "1 while the batch makes no progress for too long.",
            ((b, 1.0 if b.stalled else 0.0) for b in batches),
        )
        info = Metric(f"{BATCH}_info", "The watch's labels.", "gauge")
        for b in batches:
            info.add_sample(info.name, _info_labels(b), 1.0)
        yield info
        yield _gauge(
            "created_timestamp_seconds",
            "When the batch was created (API).",
            ((b, b.created_at) for b in batches if b.created_at is not None),
        )
        yield _gauge(
            "finished_timestamp_seconds",
            "When the batch was first seen ended.",
            ((b, b.finished_at) for b in batches if b.finished_at is not None),
        )
        yield _gauge(
            "last_poll_timestamp_seconds",
            "When the batch was last polled.",
            ((b, b.last_poll_at) for b in batches if b.last_poll_at is not None),
        )
        yield _gauge(
            "eta_seconds",
            "Estimated seconds until the batch finishes.",
            ((b, b.eta_seconds) for b in batches if b.eta_seconds is not None),
        )
        yield _gauge(
            "deadline_timestamp_seconds",
            "When the watch's deadline passes.",
            ((b, b.deadline_at) for b in batches if b.deadline_at is not None),
        )
        failed = _family("failed_files", "Failed files by last_error.code.", ("code",))
        for b in batches:
            if b.failed_by_code:
                vs, batch = b.vector_store_id, b.batch_id
                for code, count in b.failed_by_code.items():
                    labels = {"vector_store_id": vs, "batch_id": batch, "code": code}
                    failed.add_sample(failed.name, labels, count)
        yield failed
        yield from self._watcher_families(states)

    def _watcher_families(self, states: Tally[str]) -> Iterator[Metric]:
        snap = self.snapshot
        watches = GaugeMetricFamily("batch_watcher_watches", "Watches by state.", labels=["state"])
        for state, count in sorted(states.items()):
            watches.add_metric([state], count)
        yield watches
        success = GaugeMetricFamily(
            "batch_watcher_last_successful_poll_timestamp_seconds",
            "When the API last answered with success.",
        )
        if snap.last_success_at is not None:
            success.add_metric([], snap.last_success_at)
        yield success
        remaining = GaugeMetricFamily(
            "batch_watcher_rate_limit_remaining_requests",
            "The server's x-ratelimit-remaining-requests, as last seen.",
        )
        if snap.rate_limit_remaining is not None:
            remaining.add_metric([], snap.rate_limit_remaining)
        yield remaining
        yield GaugeMetricFamily(
            "batch_watcher_auth_failing",
            "1 while the API refuses the credentials.",
            value=1.0 if snap.auth_failing else 0.0,
        )


def _family(name: str, doc: str, extra: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{BATCH}_{name}", doc, labels=[*BATCH_LABELS, *extra])


def _gauge(
    name: str, doc: str, values: Iterable[tuple[BatchSample, float | int]]
) -> GaugeMetricFamily:
    """A family of one sample per batch, labelled by the batch's ids."""
    family = _family(name, doc)
    add, full_name = family.add_sample, family.name
    for b, value in values:
        add(full_name, {"vector_store_id": b.vector_store_id, "batch_id": b.batch_id}, value)
    return family


def _info_labels(b: BatchSample) -> dict[str, str]:
    labels = {
        k: v
        for k, v in b.labels.items()
        if _LABEL_NAME.fullmatch(k) and not k.startswith("__") and k not in _RESERVED
    }
    labels["vector_store_id"] = b.vector_store_id
    labels["batch_id"] = b.batch_id
    return labels


class WatcherMetrics:
    """The daemon's registry: per-batch series, the watcher's own metrics, process metrics."""

    def __init__(self) -> None:
        # A *_created series per counter and histogram only doubles the scrape; nothing here
        # reads them. (A process-wide switch of prometheus-client.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.batches = BatchCollector()
        self.registry.register(self.batches)
        r = self.registry
        self.api_requests = Counter(
            "batch_watcher_api_requests",
            "API requests by endpoint and HTTP status ('error': no response).",
            ["endpoint", "code"],
            registry=r,
        )
        self.api_duration = Histogram(
            "batch_watcher_api_request_duration_seconds",
            "API request latency.",
            ["endpoint"],
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.batches_finished = Counter(
            "batch_watcher_batches_finished",
            "Watches that ended, by status.",
            ["status"],
            registry=r,
        )
        self.files_failed = Counter(
            "batch_watcher_files_failed",
            "Failed files listed in ended batches, by last_error.code.",
            ["code"],
            registry=r,
        )
        build = Gauge("batch_watcher_build_info", "The running version.", ["version"], registry=r)
        build.labels(__version__).set(1)
        # The children on_exchange updates, by (endpoint, status): labels() validates and looks
        # them up under a lock on every call, and on_exchange runs on every request.
        self._requests_by: dict[tuple[str, int | None], Counter] = {}
        self._duration_by: dict[str, Histogram] = {}

    def on_exchange(self, exchange: Exchange) -> None:
        endpoint, status = exchange.endpoint, exchange.status
        requests = self._requests_by.get((endpoint, status))
        if requests is None:
            code = str(status) if status is not None else "error"
            requests = self.api_requests.labels(endpoint, code)
            self._requests_by[endpoint, status] = requests
        requests.inc()
        duration = self._duration_by.get(endpoint)
        if duration is None:
            duration = self.api_duration.labels(endpoint)
            self._duration_by[endpoint] = duration
        duration.observe(exchange.seconds)

    def on_event(self, event: Event) -> None:
        if isinstance(event, BatchFinished):
            self.batches_finished.labels(event.result.status).inc()
            for code, count in event.result.failed_by_code.items():
                self.files_failed.labels(code).inc(count)

    def render(self, snapshot: Snapshot, accept: str | None) -> tuple[bytes, str]:
        """The exposition of the registry with ``snapshot`` as the batches, in the format the
        ``Accept`` header asks for (text or OpenMetrics). Safe to call in a worker thread, one
        call at a time."""
        encoder, content_type = choose_encoder(accept or "")
        self.batches.snapshot = snapshot
        return encoder(self.registry), content_type
