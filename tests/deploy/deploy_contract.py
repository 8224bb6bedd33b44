"""The daemon's contract as the deploy files rely on it: metrics, endpoints, config keys.

Dashboards and alerts are written against this list; the tests check that they use nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCS = REPO / "docs"

MetricType = Literal["gauge", "counter", "histogram"]

BATCH_LABELS = ("vector_store_id", "batch_id")
STORE_LABELS = ("vector_store_id",)


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric family the daemon exports."""

    name: str
    type: MetricType
    labels: tuple[str, ...]

    def series_names(self) -> frozenset[str]:
        """The names its samples carry in the exposition (counters and histograms get suffixes)."""
        if self.type == "counter":
            return frozenset({f"{self.name}_total"})
        if self.type == "histogram":
            return frozenset({f"{self.name}_{s}" for s in ("bucket", "sum", "count")})
        return frozenset({self.name})


METRICS: tuple[Metric, ...] = (
    Metric("openai_vector_store_file_batch_files", "gauge", (*BATCH_LABELS, "status")),
    Metric("openai_vector_store_file_batch_files_expected", "gauge", BATCH_LABELS),
    Metric("openai_vector_store_file_batch_status", "gauge", (*BATCH_LABELS, "status")),
    Metric("openai_vector_store_file_batch_stalled", "gauge", BATCH_LABELS),
    Metric("openai_vector_store_file_batch_info", "gauge", BATCH_LABELS),
    Metric("openai_vector_store_file_batch_created_timestamp_seconds", "gauge", BATCH_LABELS),
    Metric("openai_vector_store_file_batch_finished_timestamp_seconds", "gauge", BATCH_LABELS),
    Metric("openai_vector_store_file_batch_last_poll_timestamp_seconds", "gauge", BATCH_LABELS),
    Metric("openai_vector_store_file_batch_eta_seconds", "gauge", BATCH_LABELS),
    Metric("openai_vector_store_file_batch_failed_files", "gauge", (*BATCH_LABELS, "code")),
    Metric("openai_vector_store_file_batch_deadline_timestamp_seconds", "gauge", BATCH_LABELS),
    Metric("openai_vector_store_files", "gauge", (*STORE_LABELS, "status")),
    Metric("openai_vector_store_status", "gauge", (*STORE_LABELS, "status")),
    Metric("openai_vector_store_usage_bytes", "gauge", STORE_LABELS),
    Metric("openai_vector_store_expires_timestamp_seconds", "gauge", STORE_LABELS),
    Metric("openai_vector_store_last_active_timestamp_seconds", "gauge", STORE_LABELS),
    Metric("openai_vector_store_info", "gauge", (*STORE_LABELS, "name")),
    Metric("batch_watcher_api_requests", "counter", ("endpoint", "code")),
    Metric("batch_watcher_api_request_duration_seconds", "histogram", ("endpoint",)),
    Metric("batch_watcher_watches", "gauge", ("state",)),
    Metric("batch_watcher_batches_finished", "counter", ("status",)),
    Metric("batch_watcher_files_failed", "counter", ("code",)),
    Metric("batch_watcher_last_successful_poll_timestamp_seconds", "gauge", ()),
    Metric("batch_watcher_rate_limit_remaining_requests", "gauge", ()),
    Metric("batch_watcher_auth_failing", "gauge", ()),
    Metric("batch_watcher_build_info", "gauge", ("version",)),
    # Fleet mode only (a PostgreSQL state store).
    Metric("batch_watcher_replicas", "gauge", ()),
    Metric("batch_watcher_owned_watches", "gauge", ()),
    Metric("batch_watcher_unowned_watches", "gauge", ()),
    Metric("batch_watcher_fleet_watches", "gauge", ("state",)),
    Metric("batch_watcher_lease_takeovers", "counter", ()),
    Metric("batch_watcher_budget_grant", "gauge", ("resource",)),
    Metric("batch_watcher_fleet_ready", "gauge", ()),
)

# prometheus_client's default process and platform collectors (Linux).
STANDARD_SERIES = frozenset(
    {
        "process_cpu_seconds_total",
        "process_max_fds",
        "process_open_fds",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_virtual_memory_bytes",
        "python_gc_collections_total",
        "python_gc_objects_collected_total",
        "python_gc_objects_uncollectable_total",
        "python_info",
    }
)

# Series Prometheus itself makes for every target.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

CONTRACT_SERIES: frozenset[str] = frozenset().union(
    *(m.series_names() for m in METRICS), STANDARD_SERIES, PROMETHEUS_SERIES
)

BATCH_STATUSES = ("in_progress", "completed", "cancelled", "failed", "timed_out", "not_found")
WATCH_STATES = ("watching", "stalled", "completed", "failed", "cancelled", "timed_out", "not_found")
API_ENDPOINTS = ("retrieve", "list_files", "cancel")

HTTP_PORT = 9464
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
CONFIG_PATH = "/etc/batch-watcher/config.toml"

# Every key config.toml may hold, by section ([[watch]] is an array of tables).
CONFIG_KEYS: dict[str, frozenset[str]] = {
    "api": frozenset(
        {
            "base_url",
            "api_key_env",
            "api_key_file",
            "organization",
            "project",
            "auth",
            "query",
            "timeout_seconds",
            "max_requests_per_minute",
            "max_concurrency",
        }
    ),
    "poll": frozenset(
        {
            "interval_seconds",
            "max_interval_seconds",
            "stall_after_seconds",
            "deadline_seconds",
            "cancel_on_timeout",
        }
    ),
    "server": frozenset({"listen", "control_token_env", "control_token_file"}),
    "state": frozenset({"path", "retention_seconds", "lease_seconds"}),
    "log": frozenset({"format", "level"}),
    "notify": frozenset({"webhook_url", "webhook_secret_file"}),
    "watch": frozenset({"vector_store_id", "batch_id", "labels", "deadline_seconds"}),
}


def env_override(section: str, key: str) -> str:
    """The environment variable that overrides ``[section] key``."""
    return f"BATCH_WATCHER_{section.upper()}_{key.upper()}"
