"""Write deploy/kubernetes/rules/prometheusrule.yaml from alerts.yaml and recording.yaml.

The PrometheusRule (Prometheus Operator) carries the same rule groups as the plain rule files, so
there is one source of truth. Run after editing either rule file:

    python deploy/prometheus/render_prometheusrule.py          # rewrite the manifest
    python deploy/prometheus/render_prometheusrule.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULE_FILES = (HERE / "alerts.yaml", HERE / "recording.yaml")
MANIFEST = HERE.parent / "kubernetes" / "rules" / "prometheusrule.yaml"

HEADER = """\
# Generated from deploy/prometheus/alerts.yaml and deploy/prometheus/recording.yaml by
# deploy/prometheus/render_prometheusrule.py. Do not edit by hand: edit the rule files and rerun.
"""


class _BlockDumper(yaml.SafeDumper):
    """Dumps multi-line strings (PromQL) as literal blocks, so the manifest stays readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def rule_groups() -> list[dict[str, Any]]:
    """The groups of every rule file, in order."""
    groups: list[dict[str, Any]] = []
    for path in RULE_FILES:
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def render() -> str:
    """The PrometheusRule manifest text."""
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "batch-watcher",
            "labels": {
                "app.kubernetes.io/name": "batch-watcher",
                "app.kubernetes.io/component": "monitoring",
            },
        },
        "spec": {"groups": rule_groups()},
    }
    body = yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False, width=1000)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the manifest is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not MANIFEST.exists() or MANIFEST.read_text() != text:
            print(f"{MANIFEST} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    MANIFEST.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
