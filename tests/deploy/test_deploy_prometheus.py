"""The Prometheus rules, their unit tests and the example scrape config."""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import deploy_tools
import pytest
import yaml
from deploy_contract import CONTRACT_SERIES, DEPLOY, DOCS
from deploy_promql import (
    ALERTS,
    RECORDING,
    iter_rule_expressions,
    metric_names,
    recording_rule_names,
    rules,
)
from deploy_tools import run

PROMETHEUS = DEPLOY / "prometheus"
ALERTS_TEST = PROMETHEUS / "alerts_test.yaml"
RUNBOOK = DOCS / "runbook.md"
RUNBOOK_URL = "https://github.com/batch-watcher/batch-watcher/blob/main/docs/runbook.md"

# What the alerts must cover, by the name that covers it.
REQUIRED_ALERTS = {
    "BatchWatcherDown",  # up == 0
    "BatchWatcherAPIUnreachable",  # no successful poll while watches exist
    "BatchWatcherAPIUnauthorized",  # auth failing
    "BatchWatcherPollingStale",  # an in-progress batch not polled
    "BatchWatcherBatchFailed",
    "BatchWatcherBatchCancelled",
    "BatchWatcherFailedFilesHigh",  # failed-file ratio
    "BatchWatcherBatchOverdue",  # deadline passed or timed_out
    "BatchWatcherBatchWillMissDeadline",  # ETA beyond deadline
    "BatchWatcherBatchStalled",
    "BatchWatcherAPIRateLimited",  # sustained 429s
    "BatchWatcherTooManyWatches",
    "BatchWatcherStoreExpiringWithFilesInProgress",  # expires within a day, files in progress
    "BatchWatcherStoreExpired",
    "BatchWatcherStoreFailedFilesRising",
    "BatchWatcherWatchesUnowned",  # fleet mode: watches no live replica owns
}


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in rules(ALERTS) if "alert" in r]


@functools.cache
def _alert_test_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    return groups


def alert_tests() -> list[dict[str, Any]]:
    """Every alert_rule_test case of alerts_test.yaml (the file is parsed once per run)."""
    return [
        copy.deepcopy(case)
        for group in _alert_test_groups()
        for case in group.get("alert_rule_test", [])
    ]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown document."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def duration_seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", text))


def test_promtool_check_rules() -> None:
    """promtool accepts the alerting and the recording rules."""
    promtool = deploy_tools.promtool()
    result = run(promtool, "check", "rules", str(ALERTS), str(RECORDING))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    """The rule unit tests pass: every alert fires and stays quiet exactly as expected."""
    promtool = deploy_tools.promtool()
    result = run(promtool, "test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_scrape_config() -> None:
    """The example prometheus.yml is valid and loads both rule files."""
    promtool = deploy_tools.promtool()
    result = run(promtool, "check", "config", str(PROMETHEUS / "scrape.example.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_scrape_config_scrapes_the_watcher_as_job_batch_watcher() -> None:
    """The example scrape job is named batch-watcher (the alerts select on it) at localhost:9464."""
    config = yaml.safe_load((PROMETHEUS / "scrape.example.yaml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "batch-watcher"]
    assert job["static_configs"][0]["targets"] == ["localhost:9464"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert sorted(config["rule_files"]) == ["alerts.yaml", "recording.yaml"]


def test_required_alerts_exist() -> None:
    """Every condition a team pages or tickets on has an alert."""
    names = {r["alert"] for r in alert_rules()}
    assert names >= REQUIRED_ALERTS, REQUIRED_ALERTS - names


def test_alert_names_are_unique() -> None:
    """No two alerts share a name (their runbook sections would collide)."""
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    """The alert has severity page or ticket, a summary, a description and its runbook link."""
    assert rule["labels"]["severity"] in {"page", "ticket"}
    annotations = rule["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{rule['alert'].lower()}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_runbook_anchor_exists(rule: dict[str, Any]) -> None:
    """The alert's runbook_url anchor is a heading of docs/runbook.md."""
    anchor = rule["annotations"]["runbook_url"].partition("#")[2]
    assert anchor in github_anchors(RUNBOOK.read_text())


def test_runbook_has_no_section_for_a_missing_alert() -> None:
    """Every alert-named heading in the runbook belongs to an existing alert."""
    headings = re.findall(r"^##\s+(BatchWatcher\w+)", RUNBOOK.read_text(), re.MULTILINE)
    assert headings, "the runbook has no alert sections"
    assert set(headings) == {r["alert"] for r in alert_rules()}


def per_batch_alert_rules() -> list[dict[str, Any]]:
    return [
        r
        for r in alert_rules()
        if any(m.startswith("openai_vector_store_file_batch") for m in metric_names(r["expr"]))
    ]


def per_store_alert_rules() -> list[dict[str, Any]]:
    per_batch = per_batch_alert_rules()
    return [
        r
        for r in alert_rules()
        if r not in per_batch
        and any(m.startswith("openai_vector_store_") for m in metric_names(r["expr"]))
    ]


@pytest.mark.parametrize("rule", per_store_alert_rules(), ids=lambda r: r["alert"])
def test_per_store_alert_names_the_store(rule: dict[str, Any]) -> None:
    """An alert on per-store series names the vector store in its description."""
    assert "{{ $labels.vector_store_id }}" in rule["annotations"]["description"]


@pytest.mark.parametrize("rule", per_batch_alert_rules(), ids=lambda r: r["alert"])
def test_per_batch_alert_names_the_batch(rule: dict[str, Any]) -> None:
    """An alert on per-batch series names the vector store and the batch in its description."""
    description = rule["annotations"]["description"]
    assert "{{ $labels.vector_store_id }}" in description
    assert "{{ $labels.batch_id }}" in description


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_for_duration_is_sane(rule: dict[str, Any]) -> None:
    """Pages wait at least 5 minutes (no page on a blip); nothing waits longer than 30 minutes."""
    wait = duration_seconds(rule.get("for", "0s"))
    assert wait <= 30 * 60
    if rule["labels"]["severity"] == "page":
        assert wait >= 5 * 60


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_is_unit_tested_firing_and_quiet(rule: dict[str, Any]) -> None:
    """alerts_test.yaml has a case where the alert fires and one where it must stay quiet."""
    cases = [c for c in alert_tests() if c["alertname"] == rule["alert"]]
    assert any(c["exp_alerts"] for c in cases), "no firing case"
    assert any(not c["exp_alerts"] for c in cases), "no quiet case"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_firing_cases_expect_exact_labels_and_annotations(rule: dict[str, Any]) -> None:
    """Each expected firing alert spells out its severity and all three annotations."""
    firing = [a for c in alert_tests() if c["alertname"] == rule["alert"] for a in c["exp_alerts"]]
    assert firing
    for alert in firing:
        assert alert["exp_labels"]["severity"] == rule["labels"]["severity"]
        assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}
        assert alert["exp_annotations"]["runbook_url"] == rule["annotations"]["runbook_url"]


@pytest.fixture(scope="module")
def never_firing_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """For each alert, promtool's report on that alert's unit tests run against the rules with
    its expression replaced by one that never matches, by alert name.

    Each copy keeps only the test groups that evaluate the alert (the others cannot report it,
    and evaluating every group again for every alert was most of the time), and one promtool
    run checks every copy: promtool reports each test file on its own.
    """
    promtool = deploy_tools.promtool()
    root = tmp_path_factory.mktemp("never-firing")
    suite = yaml.safe_load(ALERTS_TEST.read_text())
    test_files: dict[str, Path] = {}
    for rule in alert_rules():
        alert = rule["alert"]
        folder = root / alert
        folder.mkdir()
        shutil.copy(RECORDING, folder / RECORDING.name)
        data = yaml.safe_load(ALERTS.read_text())
        for group in data["groups"]:
            for r in group["rules"]:
                if r.get("alert") == alert:
                    r["expr"] = "vector(0) == 1"
        (folder / ALERTS.name).write_text(yaml.safe_dump(data, sort_keys=False))
        own = [
            group
            for group in suite["tests"]
            if any(c["alertname"] == alert for c in group.get("alert_rule_test", []))
        ]
        assert own, f"no unit test evaluates {alert}"
        test_file = folder / ALERTS_TEST.name
        test_file.write_text(yaml.safe_dump({**suite, "tests": own}, sort_keys=False))
        test_files[alert] = test_file
    # promtool writes each file's heading to stdout and its failures to stderr: one stream
    # keeps them in order.
    result = subprocess.run(
        [promtool, "test", "rules", *(str(p) for p in test_files.values())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        timeout=120,
    )
    # "Unit Testing:  <file>" opens each file's report; what follows, up to the next, is its own.
    sections = re.split(r"^Unit Testing:\s+(\S+)\s*$", result.stdout, flags=re.MULTILINE)
    reports = dict(zip(sections[1::2], sections[2::2], strict=True))
    assert result.returncode != 0, result.stdout
    assert set(reports) == {str(p) for p in test_files.values()}, result.stdout
    return {alert: reports[str(path)] for alert, path in test_files.items()}


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_unit_tests_notice_an_alert_that_never_fires(
    rule: dict[str, Any], never_firing_reports: dict[str, str]
) -> None:
    """With the alert's expression replaced by one that never matches, the unit tests fail."""
    report = never_firing_reports[rule["alert"]]
    assert "FAILED" in report, report
    assert "SUCCESS" not in report, report
    assert f"alertname: {rule['alert']}" in report, report


def test_rule_expressions_use_only_contract_metrics() -> None:
    """Rules select only metrics the daemon exports (or that the recording rules define)."""
    known = CONTRACT_SERIES | recording_rule_names()
    for expression in iter_rule_expressions():
        unknown = metric_names(expression.expr) - known
        assert not unknown, f"{expression.name}: {sorted(unknown)}"


def test_recording_rules_follow_the_naming_convention() -> None:
    """Recorded series are named level:metric:operation, so they are never mistaken for raw ones."""
    for name in recording_rule_names():
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", name), name


def test_metric_name_extraction() -> None:
    """The metric-name scan finds selectors and skips functions, labels, keywords and variables."""
    expr = (
        'sum by (code) (rate(batch_watcher_api_requests_total{code="429", endpoint=~"a|b"}[5m]))'
        " / ignoring (status) group_left (team) openai_vector_store_file_batch_info"
        ' > bool 0.1 and on (job) up{job="x"} offset 5m unless absent(foo:bar:ratio)'
        " or histogram_quantile(0.9, x_bucket) * 1e3 + time()"
        ' + label_replace(y, "a", "$1", "b", "c")'
    )
    assert metric_names(expr) == {
        "batch_watcher_api_requests_total",
        "openai_vector_store_file_batch_info",
        "up",
        "foo:bar:ratio",
        "x_bucket",
        "y",
    }


def test_prometheusrule_manifest_is_rendered_from_the_rule_files() -> None:
    """deploy/kubernetes/rules/prometheusrule.yaml is what render_prometheusrule.py writes now."""
    result = run(sys.executable, str(PROMETHEUS / "render_prometheusrule.py"), "--check")
    assert result.returncode == 0, result.stderr
