"""The per-batch metric families: what each batch shows, and how many error codes may show.

A scrape builds these series from a snapshot of the engine's watches (:class:`BatchSample`), so a
watch that leaves leaves no stale series. Each family is made of parts (:class:`Part`), each with
the key of what it shows, so that a render may write again only the parts whose key changed
(:mod:`watcher.daemon.exposition`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter

from prometheus_client.metrics_core import Metric

from ..api.models import ERROR_CODES, FILE_STATUSES, IN_PROGRESS, FileCounts
from ..core.states import State
from ..core.watch import Key, Watch

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
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RESERVED = frozenset(BATCH_LABELS)

#: Distinct ``code`` label values shown at once, across every batch; the others show as "other".
#: The API documents three; a server that invents one per file must not invent as many series.
MAX_ERROR_CODES = 50
OTHER_CODE = "other"
#: Shown whatever else comes: the API's codes, and what the engine says for none or too many.
ALWAYS_SHOWN = frozenset({*ERROR_CODES, "unknown", OTHER_CODE})


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
        return code in ALWAYS_SHOWN or code in self._batches or len(self._batches) < self.limit

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
    A scrape builds and renders a part's samples only where its key changed since the last.

    ``fixed``, when not None: the part is one sample whose value is its key, labelled by the
    batch's ids and these constant labels (so its line is a template, :mod:`.lines`).
    ``by_key``: the part's samples depend on nothing but its key and the batch's ids."""

    key: PartKey
    samples: Samples
    fixed: Mapping[str, str] | None = None
    by_key: bool = False


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

    return Part(value, samples, fixed={})


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

    return Part(key, samples, fixed={"status": status})


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
        (Part(attrgetter("status"), _status, by_key=True),),
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
