"""The operator docs: accurate paths, the full metrics reference, snippets that parse."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import deploy_tools
import pytest
import yaml
from deploy_contract import CONFIG_KEYS, CONTRACT_SERIES, DEPLOY, DOCS, METRICS, REPO, Metric
from deploy_promql import metric_names, recording_rule_names
from deploy_tools import run

DEPLOY_DOC = DOCS / "deploy.md"
METRICS_DOC = DOCS / "metrics.md"
README = DEPLOY / "README.md"
OPERATOR_DOCS = [DEPLOY_DOC, METRICS_DOC, DOCS / "runbook.md", README]


def code_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("doc", OPERATOR_DOCS, ids=lambda p: p.name)
def test_repository_paths_in_docs_exist(doc: Path) -> None:
    """Every deploy/… or docs/… path a document names exists in the repository."""
    paths = set()
    for line in doc.read_text().splitlines():
        for match in re.finditer(r"(?<![\w/.-])((?:deploy|docs)/[\w./-]*[\w/])", line):
            if not re.search(r"\bkubectl\b", line[: match.start()]):  # kubectl's deploy/NAME
                paths.add(match.group(1))
    assert paths
    missing = [p for p in paths if not (REPO / p).exists()]
    assert not missing


def test_deploy_readme_indexes_every_entry() -> None:
    """deploy/README.md names every file and kustomization under deploy/."""
    text = README.read_text()
    entries = [p for p in DEPLOY.glob("*/*") if p.parent.name != "kubernetes" and p.is_file()]
    entries += [p for p in (DEPLOY / "kubernetes").iterdir() if p.is_dir()]
    entries += [DEPLOY / "grafana" / "provisioning"]
    for entry in entries:
        relative = str(entry.relative_to(DEPLOY)) + ("/" if entry.is_dir() else "")
        if "provisioning/" in relative and relative != "grafana/provisioning/":
            continue
        assert f"`{relative}`" in text, relative
    for path in re.findall(r"^\| `([^`]+)` \|", text, re.MULTILINE):
        assert (DEPLOY / path).exists(), path


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_metrics_doc_lists_metric_with_type_and_labels(metric: Metric) -> None:
    """docs/metrics.md has a table row naming the metric as exposed, its type and its labels."""
    rows = [
        line
        for line in METRICS_DOC.read_text().splitlines()
        if line.startswith("| `")
        and any(line.startswith(f"| `{n}`") for n in {metric.name, *metric.series_names()})
    ]
    assert len(rows) == 1, rows
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == metric.type
    for label in metric.labels:
        if label not in {"vector_store_id", "batch_id"}:
            assert f"`{label}`" in cells[2], label


def test_metrics_doc_queries_use_contract_metrics() -> None:
    """Every example query in docs/metrics.md selects only contract metrics or recording rules."""
    queries = [q for block in code_blocks(METRICS_DOC, "promql") for q in block.split("\n\n")]
    assert len(queries) >= 8
    known = CONTRACT_SERIES | recording_rule_names()
    for query in queries:
        names = metric_names(query)
        assert names, query
        assert names <= known, query


def test_metrics_doc_queries_parse(tmp_path: Path) -> None:
    """promtool parses every example query in docs/metrics.md."""
    promtool = deploy_tools.promtool()
    queries = [q for block in code_blocks(METRICS_DOC, "promql") for q in block.split("\n\n")]
    rules = [{"record": f"docs:query_{i}:check", "expr": q} for i, q in enumerate(queries)]
    path = tmp_path / "docs_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "docs", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("doc", [DEPLOY_DOC, DOCS / "runbook.md"], ids=lambda p: p.name)
def test_yaml_snippets_parse(doc: Path) -> None:
    """Every YAML snippet in the document is valid YAML."""
    blocks = code_blocks(doc, "yaml")
    assert blocks
    for block in blocks:
        assert yaml.safe_load(block) is not None


def test_toml_snippets_use_contract_keys() -> None:
    """The config.toml in docs/deploy.md parses and uses only documented keys."""
    (block,) = code_blocks(DEPLOY_DOC, "toml")
    for section, table in tomllib.loads(block).items():
        tables = table if isinstance(table, list) else [table]
        for entries in tables:
            assert set(entries) <= CONFIG_KEYS[section], section


def test_ci_snippets_wait_with_json_output() -> None:
    """The GitHub Actions and GitLab snippets run `batch-watcher watch` with JSON and a timeout."""
    snippets = [yaml.safe_load(b) for b in code_blocks(DEPLOY_DOC, "yaml")]
    github = next(s for s in snippets if "jobs" in s)
    gitlab = next(s for s in snippets if "wait-for-batch" in s)
    github_runs = [step.get("run", "") for job in github["jobs"].values() for step in job["steps"]]
    gitlab_runs = gitlab["wait-for-batch"]["script"]
    for runs in (github_runs, gitlab_runs):
        (command,) = [r for r in runs if r.startswith("batch-watcher watch")]
        assert "--output json" in command
        assert re.search(r"--timeout \d+", command)


def test_exit_codes_documented() -> None:
    """docs/deploy.md tabulates the CI command's exit codes 0 to 4."""
    rows = re.findall(r"^\| (\d) \| (.+) \|$", DEPLOY_DOC.read_text(), re.MULTILINE)
    assert [code for code, _ in rows] == ["0", "1", "2", "3", "4"]
