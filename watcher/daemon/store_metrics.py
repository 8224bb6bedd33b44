"""The per-store Prometheus families, built at scrape time from a snapshot of the store watches.

Stores are few next to batches (one per corpus, not one per upload), so each scrape yields their
families whole through prometheus-client's own families and encoders, with no line reuse. Every
series carries ``vector_store_id``; the store's ``name`` (server text, bounded) goes on
``openai_vector_store_info`` only, where the encoder escapes it like any label value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..api.models import FILE_STATUSES, FileCounts
from ..api.vector_stores import STORE_STATUSES
from ..core.watch import Watch

STORE = "openai_vector_store"
#: The most characters of a store's name put on a label.
MAX_NAME_LABEL = 64
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RESERVED = frozenset({"vector_store_id", "name"})


@dataclass(frozen=True, slots=True)
class StoreSample:
    """What the collector needs of one store watch, copied so that rendering never reads the
    engine."""

    vector_store_id: str
    status: str
    state: str
    file_counts: FileCounts | None
    name: str
    usage_bytes: int | None
    expires_at: int | None
    last_active_at: int | None
    labels: Mapping[str, str]

    @classmethod
    def of(cls, w: Watch) -> StoreSample:
        store = w.store
        return cls(
            vector_store_id=w.vector_store_id,
            # A store watch that ended (expired, gone) shows how; else the store's own status.
            status=w.result.status.value if w.result is not None else (w.status or "unknown"),
            state=w.state.value,
            file_counts=w.file_counts,
            name=(store.name or "")[:MAX_NAME_LABEL] if store is not None else "",
            usage_bytes=store.usage_bytes if store is not None else None,
            expires_at=store.expires_at if store is not None else None,
            last_active_at=store.last_active_at if store is not None else None,
            labels=dict(w.labels),
        )


class StoreCollector(Collector):
    """Yields the per-store families of the snapshot it is given."""

    def __init__(self) -> None:
        self.stores: Sequence[StoreSample] = ()

    def collect(self) -> Iterator[Metric]:
        stores = self.stores
        files = GaugeMetricFamily(
            f"{STORE}_files",
            "Files in the vector store by status (file_counts).",
            labels=["vector_store_id", "status"],
        )
        status = GaugeMetricFamily(
            f"{STORE}_status",
            "The vector store's status: 1 for the current one.",
            labels=["vector_store_id", "status"],
        )
        usage = GaugeMetricFamily(
            f"{STORE}_usage_bytes", "Bytes the vector store uses.", labels=["vector_store_id"]
        )
        expires = GaugeMetricFamily(
            f"{STORE}_expires_timestamp_seconds",
            "When the vector store expires (only for stores that expire).",
            labels=["vector_store_id"],
        )
        active = GaugeMetricFamily(
            f"{STORE}_last_active_timestamp_seconds",
            "When the vector store was last active.",
            labels=["vector_store_id"],
        )
        for s in stores:
            vs = s.vector_store_id
            if s.file_counts is not None:
                counts = s.file_counts.as_dict()
                for name in (*FILE_STATUSES, "total"):
                    files.add_metric([vs, name], counts[name])
            shown = STORE_STATUSES if s.status in STORE_STATUSES else (*STORE_STATUSES, s.status)
            for value in shown:
                status.add_metric([vs, value], 1.0 if value == s.status else 0.0)
            if s.usage_bytes is not None:
                usage.add_metric([vs], s.usage_bytes)
            if s.expires_at is not None:
                expires.add_metric([vs], s.expires_at)
            if s.last_active_at is not None:
                active.add_metric([vs], s.last_active_at)
        yield from (files, status, usage, expires, active)
        yield self._info(stores)

    @staticmethod
    def _info(stores: Sequence[StoreSample]) -> Metric:
        info = Metric(f"{STORE}_info", "The vector store's name and the watch's labels.", "gauge")
        for s in stores:
            labels = {
                k: v
                for k, v in s.labels.items()
                if _LABEL_NAME.fullmatch(k) and not k.startswith("__") and k not in _RESERVED
            }
            info.add_sample(
                f"{STORE}_info", {**labels, "vector_store_id": s.vector_store_id, "name": s.name}, 1
            )
        return info
