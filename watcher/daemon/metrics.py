"""Prometheus metrics: the daemon's registry, and the snapshot a scrape renders.

Per-batch series are built at scrape time from a snapshot of the engine's watches
(:mod:`watcher.daemon.batch_metrics`). The snapshot is taken on the event loop, between awaits;
rendering it may then run in a worker thread without touching the engine, and writes again only
the per-batch lines that changed since the last scrape (:mod:`watcher.daemon.exposition`).
The watcher's own counters are ordinary prometheus-client metrics, fed by the engine's observer
and sinks.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Sequence
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

from .. import __version__
from ..api.client import Exchange
from ..core.engine import Engine
from ..core.events import BatchFinished, BatchRetried, Event, WatchRemoved
from ..core.states import State
from ..core.watch import Key, Watch
from .batch_metrics import (
    ALWAYS_SHOWN,
    BATCH_FAMILIES,
    MAX_ERROR_CODES,
    OTHER_CODE,
    BatchSample,
    ErrorCodes,
)
from .exposition import BatchExposition
from .store_metrics import StoreCollector, StoreSample

#: Every state a daemon's watch can be in (``auth_failed`` is the ``watch`` command's alone).
WATCH_STATES = tuple(s.value for s in State if s is not State.AUTH_FAILED)


@dataclass(frozen=True, slots=True)
class Snapshot:
    batches: Sequence[BatchSample]
    last_success_at: float | None
    rate_limit_remaining: int | None
    auth_failing: bool
    stores: Sequence[StoreSample] = ()


#: The sample of each batch's watch as the last snapshot took it, by key.
Samples = dict[Key, tuple[Watch, BatchSample]]


def take_snapshot(
    engine: Engine, codes: ErrorCodes | None = None, samples: Samples | None = None
) -> Snapshot:
    """The engine's watches as a scrape shows them; ``codes`` bounds the error codes shown.

    ``samples``, kept from one snapshot to the next, gives a watch record that has not changed
    since (a watch is a new record whenever it changes) the same sample as last time, made once;
    the render then compares nothing for it."""
    batches, stores = [], []
    kept = samples if samples is not None else {}
    for w in engine.watches():
        if w.is_store:
            stores.append(StoreSample.of(w))
            continue
        key = w.key
        last = kept.get(key)
        if last is None or last[0] is not w:
            # A new pair only for a changed watch: the others' pairs are kept as they are,
            # not made again for every scrape for the collector to track.
            last = (w, BatchSample.of(w, codes))
            if samples is not None:
                samples[key] = last
        batches.append(last[1])
    if samples is not None and len(samples) > len(batches):
        shown = {b.key for b in batches}
        for key in [k for k in samples if k not in shown]:
            del samples[key]
    return Snapshot(
        batches=batches,
        last_success_at=engine.last_success_at,
        rate_limit_remaining=engine.budget.remaining,
        auth_failing=engine.auth_error is not None,
        stores=stores,
    )


class BatchCollector(Collector):
    """Yields the per-batch families of the snapshot it is given, whole (for
    ``registry.collect()``; the scrape renders them with :class:`BatchExposition`)."""

    def __init__(self) -> None:
        self.snapshot = Snapshot((), None, None, False)

    def collect(self) -> Iterator[Metric]:
        batches = self.snapshot.batches
        for family in BATCH_FAMILIES:
            metric = family.metric()
            for b in batches:
                for part in family.parts:
                    if part.key(b) is not None:
                        family.add(metric, b, part)
            yield metric


class StateCollector(Collector):
    """The watcher's own series that come from the snapshot: watches by state, the last
    successful poll, the rate-limit headroom, whether the credentials are refused."""

    def __init__(self) -> None:
        self.snapshot = Snapshot((), None, None, False)

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        states: Tally[str] = Tally(dict.fromkeys(WATCH_STATES, 0))
        states.update(b.state for b in snap.batches)
        states.update(s.state for s in snap.stores)
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


class WatcherMetrics:
    """The daemon's metrics: per-batch series, the watcher's own metrics, process metrics.

    ``registry`` holds them all. A scrape (:meth:`render`) renders the per-batch families with
    :class:`BatchExposition` and the rest, ``own``, with the encoder as it is.
    """

    def __init__(self) -> None:
        # A *_created series per counter and histogram only doubles the scrape; nothing here
        # reads them. (A process-wide switch of prometheus-client.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.own = CollectorRegistry(auto_describe=False)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.own.register(collector)
        self.state = StateCollector()
        self.own.register(self.state)
        self.batches = BatchCollector()
        self.exposition = BatchExposition()
        self.stores = StoreCollector()
        self.own.register(self.stores)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.batches)
        self.registry.register(self.own)
        r = self.own
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
        #: The codes the per-batch series show, and those the counter has counted (the
        #: counter's series stay: it admits until full, and never releases).
        self.codes = ErrorCodes()
        self._counted_codes: set[str] = set(ALWAYS_SHOWN)
        self.retries = Counter(
            "batch_watcher_retries",
            "Failed files the daemon sent again as a new batch (a watch's retry policy), by "
            "the last_error.code they failed with.",
            ["code"],
            registry=r,
        )
        build = Gauge("batch_watcher_build_info", "The running version.", ["version"], registry=r)
        build.labels(__version__).set(1)
        # The children on_exchange updates, by (endpoint, status): labels() validates and looks
        # them up under a lock on every call, and on_exchange runs on every request.
        self._requests_by: dict[tuple[str, int | None], Counter] = {}
        self._duration_by: dict[str, Histogram] = {}
        self._samples: Samples = {}

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

    def snapshot(self, engine: Engine) -> Snapshot:
        """:func:`take_snapshot`, with this daemon's bound on error codes."""
        return take_snapshot(engine, self.codes, self._samples)

    def on_event(self, event: Event) -> None:
        if isinstance(event, BatchFinished):
            self.batches_finished.labels(event.result.status).inc()
            for code, count in event.result.failed_by_code.items():
                self.files_failed.labels(self._counted(code)).inc(count)
        elif isinstance(event, BatchRetried):
            for code, count in event.files_by_code.items():
                self.retries.labels(self._counted(code)).inc(count)
        elif isinstance(event, WatchRemoved):
            self.codes.release((event.vector_store_id, event.batch_id))

    def _counted(self, code: str) -> str:
        counted = self._counted_codes
        if code not in counted:
            if len(counted) >= MAX_ERROR_CODES + len(ALWAYS_SHOWN):
                return OTHER_CODE
            counted.add(code)
        return code

    def render(self, snapshot: Snapshot, accept: str | None) -> tuple[bytes, str]:
        """The exposition of the registry with ``snapshot`` as the batches, in the format the
        ``Accept`` header asks for (text or OpenMetrics). Safe to call in a worker thread, one
        call at a time."""
        chunks, content_type = self.render_chunks(snapshot, accept)
        return b"".join(chunks), content_type

    def render_chunks(self, snapshot: Snapshot, accept: str | None) -> tuple[list[bytes], str]:
        """:meth:`render`, the body in pieces of about 0.5 MB (see ``BatchExposition``)."""
        encoder, content_type = choose_encoder(accept or "")
        self.batches.snapshot = self.state.snapshot = snapshot
        self.stores.stores = snapshot.stores
        own = encoder(self.own)
        chunks = self.exposition.render_chunks(snapshot.batches, encoder, content_type, own)
        return chunks, content_type
