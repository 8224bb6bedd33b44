"""Every PromQL expression that ships under deploy/: dashboard targets and rule expressions.

For an end-to-end test that runs the daemon and a real Prometheus and evaluates them all::

    from deploy_promql import iter_promql_expressions   # tests/deploy is on sys.path for its tests

    for e in iter_promql_expressions(rate_interval="1m"):
        query(e.expr)  # e.source, e.name say where it came from

Grafana variables in dashboard queries are replaced so the text is plain PromQL: every
``$vector_store_id``/``$batch_id`` becomes ``.*`` (the dashboard's "All"), ``$__rate_interval``
the given interval.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "batch-watcher.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
RECORDING = DEPLOY / "prometheus" / "recording.yaml"
RULE_FILES = (ALERTS, RECORDING)

Kind = Literal["dashboard", "alert", "record"]


@dataclass(frozen=True, slots=True)
class PromQLExpression:
    """One expression and where it lives."""

    kind: Kind
    source: str  # path relative to deploy/
    name: str  # the panel title and refId, or the alert/record name
    expr: str


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows included; rows themselves too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@functools.cache
def _parsed_rule_groups(path: Path) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def load_rule_groups(path: Path) -> list[dict[str, Any]]:
    """The file's rule groups: parsed once (collection asks for them dozens of times), a fresh
    copy each call so that no caller sees another's changes."""
    return copy.deepcopy(_parsed_rule_groups(path))


def rules(path: Path) -> Iterator[dict[str, Any]]:
    for group in load_rule_groups(path):
        yield from group["rules"]


def recording_rule_names() -> frozenset[str]:
    return frozenset(r["record"] for path in RULE_FILES for r in rules(path) if "record" in r)


_GRAFANA_BUILTINS = {"__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def expand_grafana_variables(expr: str, rate_interval: str = "5m") -> str:
    """Replace Grafana's variables with values Prometheus accepts."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name == "__rate_interval":
            return rate_interval
        return _GRAFANA_BUILTINS.get(name, ".*")

    return _VARIABLE.sub(value, expr)


def iter_dashboard_expressions(rate_interval: str = "5m") -> Iterator[PromQLExpression]:
    source = str(DASHBOARD.relative_to(DEPLOY))
    for panel in dashboard_panels(load_dashboard()):
        for target in panel.get("targets", []):
            yield PromQLExpression(
                kind="dashboard",
                source=source,
                name=f"{panel['title']} [{target['refId']}]",
                expr=expand_grafana_variables(target["expr"], rate_interval),
            )


def iter_rule_expressions() -> Iterator[PromQLExpression]:
    for path in RULE_FILES:
        source = str(path.relative_to(DEPLOY))
        for rule in rules(path):
            if "alert" in rule:
                yield PromQLExpression("alert", source, rule["alert"], rule["expr"])
            else:
                yield PromQLExpression("record", source, rule["record"], rule["expr"])


def iter_promql_expressions(rate_interval: str = "5m") -> Iterator[PromQLExpression]:
    """Every PromQL expression of the dashboard and of the rule files."""
    yield from iter_dashboard_expressions(rate_interval)
    yield from iter_rule_expressions()


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
)


def metric_names(expr: str) -> frozenset[str]:
    """The metric names an expression selects (functions, keywords and labels left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return frozenset(names)
