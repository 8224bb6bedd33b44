"""Prometheus metrics.

Per-batch series are built at scrape time from a snapshot of the engine's watches, so a watch
that leaves leaves no stale series. The snapshot is taken on the event loop, between awaits;
rendering it may then run in a worker thread without touching the engine. prometheus-client's
encoders write every line; a scrape has them write again only the lines whose values changed
since the last scrape (:class:`BatchExposition`), which at 10,000 batches is the difference
between rendering 160,000 samples and rendering what the polls in between moved.
The watcher's own counters are ordinary prometheus-client metrics, fed by the engine's observer
and sinks.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import accumulate
from operator import attrgetter

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
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.openmetrics.exposition import (
    generate_latest as openmetrics_generate_latest,
)
from prometheus_client.registry import Collector

from .. import __version__
from ..api.client import Exchange
from ..api.models import ERROR_CODES, FILE_STATUSES, IN_PROGRESS, FileCounts
from ..core.engine import Engine
from ..core.events import BatchFinished, BatchRetried, Event, WatchRemoved
from ..core.states import State
from ..core.watch import Key, Watch
from .store_metrics import StoreCollector, StoreSample

BATCH = "openai_vector_store_file_batch"
BATCH_LABELS = ("vector_store_id", "batch_id")
#: Every watch shows each of these as a status, 1 for the current one; any other (a status the
#: API adds later, a rarer ending such as ``rejected``) shows as one more value.
STATUS_SET = (
    IN_PROGRESS,
    State.COMPLETED.value,
    State.CANCELLED.value,
    State.FAILED.value,
    State.TIMED_OUT.value,
    State.NOT_FOUND.value,
)
#: Every state a daemon's watch can be in (``auth_failed`` is the ``watch`` command's alone).
WATCH_STATES = tuple(s.value for s in State if s is not State.AUTH_FAILED)
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RESERVED = frozenset(BATCH_LABELS)

Encoder = Callable[[Collector], bytes]

#: Distinct ``code`` label values shown at once, across every batch; the others show as "other".
#: The API documents three; a server that invents one per file must not invent as many series.
MAX_ERROR_CODES = 50
OTHER_CODE = "other"
#: Shown whatever else comes: the API's codes, and what the engine says for none or too many.
_ALWAYS_SHOWN = frozenset({*ERROR_CODES, "unknown", OTHER_CODE})


class ErrorCodes:
    """Which ``last_error.code`` values the per-batch series show as themselves.

    The engine keeps at most 20 codes per batch; this bounds them across batches. A batch's codes
    are admitted when a scrape first sees its result, while fewer than ``limit`` distinct codes
    are shown, and released when its watch is removed; a code not admitted shows as "other".
    Used on the event loop only (snapshots and events), never by a render.
    """

    def __init__(self, limit: int = MAX_ERROR_CODES) -> None:
        self.limit = limit
        self._batches: dict[str, int] = {}  # code → batches that show it
        # Each batch's codes as the engine gave them (by identity: a result never changes) and
        # as they are shown.
        self._shown: dict[Key, tuple[Mapping[str, int], dict[str, int]]] = {}

    def shown(self, key: Key, by_code: Mapping[str, int]) -> Mapping[str, int]:
        """The batch's failed files by code as its series show them."""
        seen = self._shown.get(key)
        if seen is not None:
            if seen[0] is by_code:
                return seen[1]
            self.release(key)
        shown: dict[str, int] = {}
        for code, count in by_code.items():
            if code not in shown:
                if not self._admits(code):
                    code = OTHER_CODE
                if code not in shown:
                    self._batches[code] = self._batches.get(code, 0) + 1
            shown[code] = shown.get(code, 0) + count
        self._shown[key] = (by_code, shown)
        return shown

    def _admits(self, code: str) -> bool:
        return code in _ALWAYS_SHOWN or code in self._batches or len(self._batches) < self.limit

    def release(self, key: Key) -> None:
        """The batch is gone: its codes no longer hold a place."""
        seen = self._shown.pop(key, None)
        if seen is None:
            return
        for code in seen[1]:
            left = self._batches[code] - 1
            if left:
                self._batches[code] = left
            else:
                del self._batches[code]

    def __len__(self) -> int:
        """Distinct codes shown now."""
        return len(self._batches)


@dataclass(frozen=True, slots=True)
class BatchSample:
    """What the collector needs of one watch, copied so that rendering never reads the engine."""

    key: Key
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
    def of(cls, w: Watch, codes: ErrorCodes | None = None) -> BatchSample:
        by_code = w.result.failed_by_code if w.result is not None else None
        if by_code and codes is not None:
            by_code = codes.shown(w.key, by_code)
        return cls(
            key=w.key,
            vector_store_id=w.vector_store_id,
            batch_id=w.batch_id,
            status=w.display_status,
            state=w.state,
            stalled=w.stalled,
            file_counts=w.file_counts,
            labels=dict(w.labels),  # a render compares it with the last one's
            created_at=w.created_at,
            finished_at=w.finished_at,
            last_poll_at=w.last_poll_at,
            eta_seconds=w.eta_seconds,
            deadline_at=w.deadline_at if w.result is None else None,
            failed_by_code=by_code,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    batches: Sequence[BatchSample]
    last_success_at: float | None
    rate_limit_remaining: int | None
    auth_failing: bool
    stores: Sequence[StoreSample] = ()


def take_snapshot(engine: Engine, codes: ErrorCodes | None = None) -> Snapshot:
    """The engine's watches as a scrape shows them; ``codes`` bounds the error codes shown."""
    batches, stores = [], []
    for w in engine.watches():
        if w.is_store:
            stores.append(StoreSample.of(w))
        else:
            batches.append(BatchSample.of(w, codes))
    return Snapshot(
        batches=batches,
        last_success_at=engine.last_success_at,
        rate_limit_remaining=engine.budget.remaining,
        auth_failing=engine.auth_error is not None,
        stores=stores,
    )


def _info_labels(b: BatchSample) -> dict[str, str]:
    labels = {
        k: v
        for k, v in b.labels.items()
        if _LABEL_NAME.fullmatch(k) and not k.startswith("__") and k not in _RESERVED
    }
    labels["vector_store_id"] = b.vector_store_id
    labels["batch_id"] = b.batch_id
    return labels


PartKey = Callable[[BatchSample], object]
Samples = Callable[[BatchSample], Iterable[tuple[dict[str, str], float]]]


@dataclass(frozen=True, slots=True)
class Part:
    """Some of a batch's samples in a family, and what they show: ``key`` (None: no samples).
    A scrape builds and renders a part's samples only where its key changed since the last."""

    key: PartKey
    samples: Samples


@dataclass(frozen=True, slots=True)
class BatchFamily:
    """A per-batch metric family: each batch's samples are its parts', in order."""

    name: str
    doc: str
    parts: tuple[Part, ...]

    def metric(self) -> Metric:
        return Metric(self.name, self.doc, "gauge")

    def add(self, metric: Metric, b: BatchSample, part: Part) -> int:
        """Add the part's samples of the batch to ``metric``; returns how many."""
        n = 0
        add, name = metric.add_sample, self.name
        for labels, value in part.samples(b):
            add(name, labels, value)
            n += 1
        return n


def _ids(b: BatchSample) -> dict[str, str]:
    return {"vector_store_id": b.vector_store_id, "batch_id": b.batch_id}


def _one(value: Callable[[BatchSample], float | int | None]) -> Part:
    """One sample per batch, labelled by its ids, of the value (None: none)."""

    def samples(b: BatchSample) -> Iterable[tuple[dict[str, str], float]]:
        v = value(b)
        return () if v is None else ((_ids(b), v),)

    return Part(value, samples)


def _files(status: str) -> Part:
    """The batch's count of files in ``status``, labelled ``status``."""
    count = attrgetter(status)

    def key(b: BatchSample) -> int | None:
        return count(b.file_counts) if b.file_counts is not None else None

    def samples(b: BatchSample) -> Iterable[tuple[dict[str, str], float]]:
        n = key(b)
        if n is None:
            return ()
        return (
            ({"vector_store_id": b.vector_store_id, "batch_id": b.batch_id, "status": status}, n),
        )

    return Part(key, samples)


def _status(b: BatchSample) -> Iterable[tuple[dict[str, str], float]]:
    vs, batch, current = b.vector_store_id, b.batch_id, b.status
    statuses = STATUS_SET if current in STATUS_SET else (*STATUS_SET, current)
    return (
        ({"vector_store_id": vs, "batch_id": batch, "status": s}, 1.0 if s == current else 0.0)
        for s in statuses
    )


def _failed_files(b: BatchSample) -> Iterable[tuple[dict[str, str], float]]:
    vs, batch = b.vector_store_id, b.batch_id
    return (
        ({"vector_store_id": vs, "batch_id": batch, "code": code}, count)
        for code, count in (b.failed_by_code or {}).items()
    )


def _expected(b: BatchSample) -> int | None:
    return b.file_counts.total if b.file_counts is not None else None


#: The per-batch families, in the order they are exposed.
BATCH_FAMILIES = (
    BatchFamily(
        f"{BATCH}_files",
        "Files in the batch by status (file_counts).",
        tuple(_files(status) for status in FILE_STATUSES),
    ),
    BatchFamily(
        f"{BATCH}_files_expected", "Files in the batch (file_counts.total).", (_one(_expected),)
    ),
    BatchFamily(
        f"{BATCH}_status",
        "The batch's status: 1 for the current one.",
        (Part(attrgetter("status"), _status),),
    ),
    BatchFamily(
        f"{BATCH}_stalled",
        "1 while the batch makes no progress for too long.",
        (_one(lambda b: 1.0 if b.stalled else 0.0),),
    ),
    BatchFamily(
        f"{BATCH}_info",
        "The watch's labels.",
        (Part(attrgetter("labels"), lambda b: ((_info_labels(b), 1.0),)),),
    ),
    BatchFamily(
        f"{BATCH}_created_timestamp_seconds",
        "When the batch was created (API).",
        (_one(attrgetter("created_at")),),
    ),
    BatchFamily(
        f"{BATCH}_finished_timestamp_seconds",
        "When the batch was first seen ended.",
        (_one(attrgetter("finished_at")),),
    ),
    BatchFamily(
        f"{BATCH}_last_poll_timestamp_seconds",
        "When the batch was last polled.",
        (_one(attrgetter("last_poll_at")),),
    ),
    BatchFamily(
        f"{BATCH}_eta_seconds",
        "Estimated seconds until the batch finishes.",
        (_one(attrgetter("eta_seconds")),),
    ),
    BatchFamily(
        f"{BATCH}_deadline_timestamp_seconds",
        "When the watch's deadline passes.",
        (_one(attrgetter("deadline_at")),),
    ),
    BatchFamily(
        f"{BATCH}_failed_files",
        "Failed files by last_error.code.",
        (Part(attrgetter("failed_by_code"), _failed_files),),
    ),
)
#: Every family's parts, in order, and where each family's begin and end among them.
_PARTS = tuple(part for family in BATCH_FAMILIES for part in family.parts)
_ENDS = tuple(accumulate(len(family.parts) for family in BATCH_FAMILIES))
_SPANS = tuple(zip((0, *_ENDS[:-1]), _ENDS, strict=True))
#: (part, its key, its family) for every part, as a scrape walks them for each batch.
_PART_KEYS = tuple(
    (p, _PARTS[p].key, i) for i, (start, end) in enumerate(_SPANS) for p in range(start, end)
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


class _Families(Collector):
    """Some families, as a collector an encoder takes."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class _Lines:
    """A batch's lines from the last scrape of a format, per part, with the keys they show."""

    __slots__ = ("keys", "lines")

    def __init__(self) -> None:
        self.keys: list[object] = [None] * len(_PARTS)
        #: Each part's lines, without the last newline.
        self.lines: list[bytes] = [b""] * len(_PARTS)


def _line_encoder(encoder: Encoder) -> Encoder:
    """An encoder that writes what ``encoder`` writes for the per-batch families, faster.

    prometheus-client's OpenMetrics encoder, asked for the "underscores" escaping (Prometheus 2
    asks for no escaping, and gets that), walks every sample's metric name character by character
    to escape it. Every name and label name of the per-batch families is a legacy Prometheus name
    (user label names that are not are left out), which no escaping changes; "allow-utf-8" leaves
    them as they are without the walk. Label values are escaped alike in both.
    """
    if (
        isinstance(encoder, partial)
        and encoder.func is openmetrics_generate_latest
        and encoder.keywords.get("escaping") == UNDERSCORES
    ):
        return partial(encoder.func, *encoder.args, **{**encoder.keywords, "escaping": ALLOWUTF8})
    return encoder


class _Format:
    """One exposition format: its encoder, the frame it puts around a family, and the lines of
    the last scrape, by batch."""

    #: Samples given to the encoder at a time: the samples and their labels, made for it, are
    #: many small objects, which are better reused a slice at a time than made all at once.
    SLICE = 4096

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = _line_encoder(encoder)
        # An encoder writes each family as a header and one line per gauge sample, then a
        # trailer ("# EOF" in OpenMetrics). Both are taken from the encoder itself.
        self.trailer = encoder(_Families(()))
        self.headers = [self._strip(encoder(_Families((f.metric(),)))) for f in BATCH_FAMILIES]
        self.by_batch: dict[Key, _Lines] = {}

    def _strip(self, output: bytes) -> bytes:
        if not output.endswith(self.trailer):
            raise RuntimeError("the encoder's output does not end with its trailer")
        return output[: len(output) - len(self.trailer)]

    def lines(self, i: int, dirty: Sequence[tuple[_Lines, int, BatchSample]]) -> list[bytes]:
        """The encoder's lines for the samples of each (batch, part) in family ``i``: for each,
        its lines without their last newline (b"" for none)."""
        out: list[bytes] = []
        for start in range(0, len(dirty), self.SLICE):
            out += self._lines(i, dirty[start : start + self.SLICE])
        return out

    def _lines(self, i: int, dirty: Sequence[tuple[_Lines, int, BatchSample]]) -> list[bytes]:
        family = BATCH_FAMILIES[i]
        metric = family.metric()
        sizes = [family.add(metric, b, _PARTS[p]) for _, p, b in dirty]
        body = self._strip(self.encoder(_Families((metric,))))
        header = self.headers[i]
        if not body.startswith(header):
            raise RuntimeError(f"the encoder framed {family.name} differently")
        lines = body[len(header) : -1].split(b"\n") if len(body) > len(header) else []
        if len(lines) != sum(sizes) or not body.endswith(b"\n"):
            raise RuntimeError(f"the encoder wrote {family.name} in other than a line a sample")
        if all(size == 1 for size in sizes):  # most parts: a sample each
            return lines
        chunks, at = [], 0
        for size in sizes:
            chunks.append(b"\n".join(lines[at : at + size]))
            at += size
        return chunks


class BatchExposition:
    """Renders the per-batch families with prometheus-client's encoders, reusing a batch's lines
    from the last scrape in the same format where what they show has not changed.

    At 10,000 batches a whole render is 160,000 samples, and nearly all of its time is the
    encoder formatting each one; between two scrapes only what the polls since have changed is
    rendered again (a file count that moved, the last poll, the ETA). The output is what the
    encoder writes for the whole families, byte for byte. One render at a time.
    """

    #: Formats (text, OpenMetrics) whose lines are kept; the lines of another evict the oldest.
    MAX_FORMATS = 2

    def __init__(self) -> None:
        self._formats: dict[str, _Format] = {}
        self.rendered = 0  # (batch, part) lines rendered by the encoder, for the tests

    def render(self, batches: Sequence[BatchSample], encoder: Encoder, content_type: str) -> bytes:
        """The per-batch families of ``batches``, without the encoder's trailer."""
        fmt = self._formats.pop(content_type, None) or _Format(encoder)
        # Should the render fail, the format's lines go with it: its keys may by then claim
        # lines that were never rendered.
        body = self._render(fmt, batches)
        self._formats[content_type] = fmt  # the most recent last
        while len(self._formats) > self.MAX_FORMATS:
            del self._formats[next(iter(self._formats))]
        return body

    def _render(self, fmt: _Format, batches: Sequence[BatchSample]) -> bytes:
        previous, current = fmt.by_batch, {}
        entries: list[_Lines] = []
        dirty: list[list[tuple[_Lines, int, BatchSample]]] = [[] for _ in BATCH_FAMILIES]
        for b in batches:
            entry = previous.get(b.key) or _Lines()
            current[b.key] = entry
            entries.append(entry)
            old = entry.keys
            for p, key, i in _PART_KEYS:
                value = key(b)
                if value != old[p]:
                    old[p] = value
                    if value is None:
                        entry.lines[p] = b""
                    else:
                        dirty[i].append((entry, p, b))
        fmt.by_batch = current
        out = []
        for i, (start, end) in enumerate(_SPANS):
            if dirty[i]:
                chunks = fmt.lines(i, dirty[i])
                for (entry, p, _), chunk in zip(dirty[i], chunks, strict=True):
                    entry.lines[p] = chunk
                self.rendered += len(chunks)
            out.append(fmt.headers[i])
            if end - start == 1:
                lines = [line for entry in entries if (line := entry.lines[start])]
            else:
                lines = [line for entry in entries for line in entry.lines[start:end] if line]
            if lines:
                out.append(b"\n".join(lines))
                out.append(b"\n")
        return b"".join(out)


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
        self._counted_codes: set[str] = set(_ALWAYS_SHOWN)
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
        return take_snapshot(engine, self.codes)

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
            if len(counted) >= MAX_ERROR_CODES + len(_ALWAYS_SHOWN):
                return OTHER_CODE
            counted.add(code)
        return code

    def render(self, snapshot: Snapshot, accept: str | None) -> tuple[bytes, str]:
        """The exposition of the registry with ``snapshot`` as the batches, in the format the
        ``Accept`` header asks for (text or OpenMetrics). Safe to call in a worker thread, one
        call at a time."""
        encoder, content_type = choose_encoder(accept or "")
        self.batches.snapshot = self.state.snapshot = snapshot
        self.stores.stores = snapshot.stores
        batches = self.exposition.render(snapshot.batches, encoder, content_type)
        return batches + encoder(self.own), content_type
