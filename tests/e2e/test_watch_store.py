"""The real ``batch-watcher watch VS`` process on a whole vector store, against a simulator
process: it waits until no file of the store is in progress, lists the store's failed files, and
exits as for batches."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from harness import SimulatorProcess, iter_json_lines, run_command, start_simulator

pytestmark = pytest.mark.e2e

KEY = "sk-store-cmd-KEY-0123456789abcdef"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    process = start_simulator(
        ["--scenario", "empty", "--api-key-env", "SIM_KEY"], env={"SIM_KEY": KEY}
    )
    yield process
    process.stop()


def add(sim: SimulatorProcess, vs: str, batch_id: str, **spec: Any) -> None:
    body = {"vector_store_id": vs, "batch_id": batch_id, "total_files": 20}
    sim.control("POST", "batches", {**body, "duration_seconds": 1.0, **spec})


def watch(sim: SimulatorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_command(
        ["watch", *args, "--base-url", sim.url, "--interval", "0.1"],
        env={"OPENAI_API_KEY": KEY},
        timeout=60,
    )
    assert KEY not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_a_store_is_watched_until_idle_and_its_failed_files_listed(
    sim: SimulatorProcess,
) -> None:
    """``watch vs_...`` ends once both batches of the store are done, lists the failed files of
    both from the store's file list, and exits 1 for them."""
    add(sim, "vs_e2e_store", "vsfb_e2e_a", failed_files=2)
    add(sim, "vs_e2e_store", "vsfb_e2e_b", failed_files=1, duration_seconds=2.0)
    result = watch(sim, "vs_e2e_store", "--output", "json")
    assert result.returncode == 1, result.stderr
    [line] = list(iter_json_lines(result.stdout))
    assert line["vector_store_id"] == "vs_e2e_store"
    assert line["batch_id"] == ""
    assert line["status"] == "completed"
    assert line["file_counts"]["in_progress"] == 0
    assert line["file_counts"]["failed"] == 3
    truth = sim.truth()
    expected = [f["id"] for b in ("vsfb_e2e_a", "vsfb_e2e_b") for f in truth[b]["failed_files"]]
    assert sorted(f["id"] for f in line["failed_files"]) == sorted(expected)
    assert line["failed_files_complete"] is True
    records = sim.control("GET", "requests?limit=0&batch_id=vs_e2e_store")["data"]
    lists = [r for r in records if r["endpoint"] == "list_store_files"]
    assert lists
    assert all(parse_qs(r["query"])["filter"] == ["failed"] for r in lists)
    assert not [r for r in records if r["endpoint"] == "retrieve"]


def test_a_clean_store_exits_0_with_a_text_summary(sim: SimulatorProcess) -> None:
    """A store whose files all completed exits 0 and says so in the text summary."""
    add(sim, "vs_e2e_clean", "vsfb_e2e_clean", duration_seconds=0.3)
    result = watch(sim, "vs_e2e_clean", "--output", "text")
    assert result.returncode == 0, result.stderr
    assert "vs_e2e_clean: completed — 20 completed, 0 failed" in result.stdout


def test_an_unknown_store_exits_4(sim: SimulatorProcess) -> None:
    """A store the API does not know ends not_found, with exit 4."""
    result = watch(sim, "vs_e2e_missing", "--output", "json")
    assert result.returncode == 4, result.stderr
    [line] = list(iter_json_lines(result.stdout))
    assert line["status"] == "not_found"
