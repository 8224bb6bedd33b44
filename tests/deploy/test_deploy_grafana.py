"""The Grafana dashboard and the provisioning examples."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import deploy_tools
import pytest
import yaml
from deploy_contract import CONTRACT_SERIES, DEPLOY
from deploy_promql import (
    dashboard_panels,
    iter_dashboard_expressions,
    load_dashboard,
    metric_names,
    recording_rule_names,
)
from deploy_tools import run

GRAFANA = DEPLOY / "grafana"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Each view the dashboard must offer, by a fragment of PromQL that only that view uses.
REQUIRED_VIEWS = {
    "batches by status": "openai_vector_store_file_batch_status",
    "progress per batch": "batch:openai_vector_store_file_batch_completed_files:ratio",
    "ETA": "openai_vector_store_file_batch_eta_seconds",
    # Per batch first (a fleet may export a batch from two replicas for a moment), then by code.
    "failed files by error code": "sum by (code) (max by (vector_store_id, batch_id, code) ("
    "openai_vector_store_file_batch_failed_files",
    "finished batches rate": "batch_watcher_batches_finished_total",
    "API requests": "rate(batch_watcher_api_requests_total",
    "API latency": "histogram_quantile(0.95, sum by (le, endpoint) (rate("
    "batch_watcher_api_request_duration_seconds_bucket",
    "429s": 'code="429"',
    "watcher up": 'up{job="batch-watcher"}',
    "auth failing": "batch_watcher_auth_failing",
    "last successful poll age": "time() - batch_watcher_last_successful_poll_timestamp_seconds",
    "vector stores by status": "openai_vector_store_status",
    "vector store files": "openai_vector_store_files",
    "vector store expiry": "openai_vector_store_expires_timestamp_seconds",
}


def dashboard() -> dict[str, Any]:
    return load_dashboard()


def data_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard_panels(dashboard()) if p["type"] != "row"]


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def test_dashboard_identity_and_schema() -> None:
    """The dashboard has a stable uid, a title and a current schemaVersion (39 or later)."""
    data = dashboard()
    assert data["uid"] == "batch-watcher"
    assert data["title"]
    assert data["schemaVersion"] >= 39
    assert "__inputs" not in data, "the datasource variable replaces import-time inputs"


def test_datasource_variable() -> None:
    """A `datasource` variable of type datasource lets the viewer pick a Prometheus."""
    variable = variables()["datasource"]
    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("vector_store_id", "label_values(openai_vector_store_file_batch_info, vector_store_id)"),
        ("batch_id", "label_values(openai_vector_store_file_batch_info{"),
    ],
)
def test_batch_variables(name: str, source: str) -> None:
    """vector_store_id and batch_id come from label_values, allow many values and "All"."""
    variable = variables()[name]
    assert variable["type"] == "query"
    assert variable["datasource"] == DATASOURCE
    query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
    assert query.startswith(source)
    assert query.rstrip(")").endswith(name)
    assert variable["multi"] is True
    assert variable["includeAll"] is True
    assert variable["allValue"] == ".*"


def test_variable_queries_use_contract_metrics() -> None:
    """The variables' label_values queries select a metric the daemon exports."""
    for name in ("vector_store_id", "batch_id"):
        query = variables()[name]["query"]["query"]
        inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
        assert inner, query
        assert metric_names(inner.group(1)) == {"openai_vector_store_file_batch_info"}


@pytest.mark.parametrize("panel", data_panels(), ids=lambda p: p["title"])
def test_panel_queries_use_the_datasource_variable(panel: dict[str, Any]) -> None:
    """The panel and each of its targets query `${datasource}`, with a PromQL expression."""
    assert panel["datasource"] == DATASOURCE
    assert panel["targets"]
    ref_ids = [t["refId"] for t in panel["targets"]]
    assert len(ref_ids) == len(set(ref_ids))
    for target in panel["targets"]:
        assert target["datasource"] == DATASOURCE
        assert target["expr"].strip()


@pytest.mark.parametrize("panel", data_panels(), ids=lambda p: p["title"])
def test_panel_selects_only_contract_metrics(panel: dict[str, Any]) -> None:
    """Every metric name in the panel's queries is in the contract or is a recording rule."""
    known = CONTRACT_SERIES | recording_rule_names()
    for target in panel["targets"]:
        names = metric_names(target["expr"])
        assert names, target["expr"]
        assert names <= known, sorted(names - known)


@pytest.mark.parametrize("panel", data_panels(), ids=lambda p: p["title"])
def test_per_batch_panels_honour_the_batch_variables(panel: dict[str, Any]) -> None:
    """Queries on per-batch series filter by the vector_store_id and batch_id variables."""
    for target in panel["targets"]:
        expr = target["expr"]
        per_batch = [n for n in metric_names(expr) if "openai_vector_store_file_batch" in n]
        if per_batch:
            assert expr.count('vector_store_id=~"$vector_store_id"') >= len(per_batch), expr
            assert expr.count('batch_id=~"$batch_id"') >= len(per_batch), expr


def test_dashboard_offers_every_required_view() -> None:
    """Batch status, progress, ETA, failures, finished rate, API and watcher health are shown."""
    exprs = "\n".join(t["expr"] for p in data_panels() for t in p["targets"])
    missing = [view for view, fragment in REQUIRED_VIEWS.items() if fragment not in exprs]
    assert not missing


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    """Panel ids are unique and every panel sits inside Grafana's 24-column grid."""
    panels = list(dashboard_panels(dashboard()))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["w"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["h"] > 0, panel["title"]


def test_dashboard_expressions_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (variables expanded) as a recording rule expression."""
    promtool = deploy_tools.promtool()
    expressions = list(iter_dashboard_expressions())
    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": e.expr} for i, e in enumerate(expressions)
    ]
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_provisioning_examples() -> None:
    """The provisioning files define a Prometheus data source and a file dashboard provider."""
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    assert datasources["apiVersion"] == 1
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/batch-watcher.yaml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
