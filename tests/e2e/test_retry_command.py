"""The real ``batch-watcher retry`` process against a simulator process: the new batches it
makes (split at 2,000 files, each file's attributes kept, attached files detached first), its
``--code`` filter, ``--dry-run`` and ``--watch``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from harness import SimulatorProcess, iter_json_lines, run_command, start_simulator

pytestmark = pytest.mark.e2e

VS = "vs_retry"
KEY = "sk-retry-RIGHTKEY-4f6c0d1e9b8a7f65"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    process = start_simulator(
        ["--scenario", "empty", "--api-key-env", "SIM_KEY", "--created-batch-seconds", "0.5"],
        env={"SIM_KEY": KEY},
    )
    yield process
    process.stop()


def add(sim: SimulatorProcess, batch_id: str, **spec: Any) -> str:
    body = {"vector_store_id": VS, "batch_id": batch_id, "total_files": 20, "duration_seconds": 0}
    sim.control("POST", "batches", {**body, **spec})
    return batch_id


def retry(
    sim: SimulatorProcess, batch_id: str, *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    result = run_command(
        ["retry", f"{VS}/{batch_id}", "--base-url", sim.url, "--interval", "0.1", *args],
        env={"OPENAI_API_KEY": KEY},
        timeout=timeout,
    )
    assert KEY not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def failed_ids(sim: SimulatorProcess, batch_id: str, code: str | None = None) -> list[str]:
    files = sim.control("GET", f"batches/{batch_id}")["failed_files"]
    return [f["id"] for f in files if code is None or f["code"] == code]


def test_retry_makes_one_batch_of_the_failed_files(sim: SimulatorProcess) -> None:
    """The failed files (and only they) go into one new batch, detached from the store first;
    the JSON line links it to the batch it retries."""
    batch = add(sim, "vsfb_retry_plain", failed_files=5)
    before = sim.stats()["by_endpoint"]
    result = retry(sim, batch, "--output", "json")
    assert result.returncode == 0, result.stderr
    [line] = iter_json_lines(result.stdout)
    assert line["vector_store_id"] == VS
    assert line["retry_of"] == batch
    assert line["files"] == failed_ids(sim, batch)
    assert sim.control("GET", f"batches/{line['batch_id']}")["file_counts"]["total"] == 5
    after = sim.stats()["by_endpoint"]
    # Refused once (the files were attached), five detached, sent again.
    assert after["create_batch"] - before.get("create_batch", 0) == 2
    assert after["detach_file"] - before.get("detach_file", 0) == 5
    assert after["store_file"] - before.get("store_file", 0) == 5


def test_code_filter_and_dry_run_send_nothing(sim: SimulatorProcess) -> None:
    """``--code`` keeps only the failed files of that code; ``--dry-run`` shows the request with
    each file's attributes and chunking strategy, and creates nothing."""
    batch = add(sim, "vsfb_retry_dry", failed_files=6)
    before = sim.stats()["by_endpoint"].get("create_batch", 0)
    result = retry(sim, batch, "--code", "server_error", "--dry-run", "--output", "json")
    assert result.returncode == 0, result.stderr
    [plan] = iter_json_lines(result.stdout)
    assert plan["dry_run"] is True
    assert plan["batch_id"] is None
    sent = plan["request"]["files"]
    assert [f["file_id"] for f in sent] == failed_ids(sim, batch, "server_error")
    assert all(f["chunking_strategy"]["type"] == "static" for f in sent)
    assert sim.stats()["by_endpoint"].get("create_batch", 0) == before
    text = retry(sim, batch, "--code", "no_such_code")
    assert text.returncode == 0
    assert "no failed files with code no_such_code to retry" in text.stdout


def test_retry_watch_watches_the_new_batch_to_its_end(sim: SimulatorProcess) -> None:
    """``--watch`` prints the new batch, then watches it as ``watch`` does (exit 0: clean)."""
    batch = add(sim, "vsfb_retry_watch", failed_files=3)
    result = retry(sim, batch, "--watch", "--output", "json")
    assert result.returncode == 0, result.stderr
    made, ended = iter_json_lines(result.stdout)
    assert made["retry_of"] == batch
    assert ended["batch_id"] == made["batch_id"]
    assert ended["status"] == "completed"
    assert ended["file_counts"]["completed"] == 3


def test_more_than_2000_files_are_split(sim: SimulatorProcess) -> None:
    """2,001 failed files go out as two batches: 2,000 and 1."""
    batch = add(sim, "vsfb_retry_big", total_files=2001, failed_files=2001)
    # A retry reads each failed file it sends again: 2,001 requests, which took 100 s of the
    # default 120 beside stress-ng --cpu 2.
    result = retry(
        sim, batch, "--output", "json", "--max-requests-per-minute", "1000000", timeout=600
    )
    assert result.returncode == 0, result.stderr
    lines = list(iter_json_lines(result.stdout))
    assert [len(line["files"]) for line in lines] == [2000, 1]
    assert len({line["batch_id"] for line in lines}) == 2
    assert [f for line in lines for f in line["files"]] == failed_ids(sim, batch)


def test_a_batch_not_found_exits_4(sim: SimulatorProcess) -> None:
    """Retrying a batch the API does not know exits 4 and says why."""
    result = retry(sim, "vsfb_nobody")
    assert result.returncode == 4
    assert "not found" in result.stderr
