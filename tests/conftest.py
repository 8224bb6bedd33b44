"""What every test shares: the e2e marker and structlog capture. (Plain helpers, such as
virtual time, are in factories.py: a module named conftest cannot be imported twice.)"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

_E2E = Path(__file__).parent / "e2e"

# Keep compiled modules, whatever PYTHONDONTWRITEBYTECODE says: without them every run (and every
# xdist worker, daemon and simulator process a test starts) parses and compiles the test modules
# with their assertions rewritten, the package and the lazily imported parts of the plugins again,
# about 20 s of CPU a run on this machine. Python reads cached bytecode whatever the variable
# says, so the processes the tests start use what this one wrote.
sys.dont_write_bytecode = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e starts real processes: mark it ``e2e`` (``-m 'not e2e'``
    runs the rest)."""
    for item in items:
        if item.path.is_relative_to(_E2E):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event of the test; none of them may report an engine bug."""
    saved = structlog.get_config()
    structlog.reset_defaults()  # whatever level an earlier test configured, keep every event
    try:
        with structlog.testing.capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)
    bugs = [e for e in captured if e["event"] in ("internal_error", "sink_failed")]
    assert bugs == []


pytest_plugins = ("postgres_fixtures",)  # PostgreSQL, a schema per test
