"""The daemon process watching vector stores against a simulator process: a [[store]] table and
discovery of every listed store, their metrics, their page, and their watches across a kill -9."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import SimulatorProcess, start_daemon, start_simulator

pytestmark = pytest.mark.e2e


@pytest.fixture
def sim() -> Iterator[SimulatorProcess]:
    process = start_simulator(["--scenario", "empty"])
    process.control(
        "POST",
        "stores",
        {"vector_store_id": "vs_named", "name": 'Docs "main"', "expires_after_days": 2},
    )
    for vs, batch, failed in (("vs_named", "vsfb_n1", 2), ("vs_found", "vsfb_f1", 1)):
        body = {"vector_store_id": vs, "batch_id": batch, "total_files": 10}
        process.control(
            "POST", "batches", {**body, "duration_seconds": 1.0, "failed_files": failed}
        )
    yield process
    process.stop()


def _stored(tmp_path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    try:
        rows = db.execute("SELECT vector_store_id, batch_id FROM watches").fetchall()
    finally:
        db.close()
    return sorted(rows)


def test_configured_and_discovered_stores_are_exported_and_survive_a_kill(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    """A [[store]] and a store found by discovery both get their per-store series and page;
    after kill -9 and a restart both are watched again."""
    config = {
        "api": {"base_url": sim.url},
        "poll": {"interval_seconds": 0.2, "min_interval_seconds": 0.1},
        "discovery": {"vector_stores": True, "interval_seconds": 1.0},
        "store": [{"vector_store_id": "vs_named", "labels": {"team": "search"}}],
    }
    daemon = start_daemon(tmp_path, config, env={"OPENAI_API_KEY": "sk-e2e-stores"})
    try:

        def settled() -> bool:
            # Every file done, not only the completed ones counted: a failure may still be in
            # progress when the eighth file completes.
            def files(vs: str, status: str) -> float | None:
                return daemon.metric("openai_vector_store_files", vector_store_id=vs, status=status)

            named = (files("vs_named", "completed"), files("vs_named", "in_progress"))
            found = (files("vs_found", "failed"), files("vs_found", "in_progress"))
            return named == (8, 0) and found == (1, 0)

        daemon.wait_until(settled, what="both stores' files completed")
        assert (
            daemon.metric(
                "openai_vector_store_status", vector_store_id="vs_named", status="completed"
            )
            == 1
        )
        assert daemon.metric(
            "openai_vector_store_expires_timestamp_seconds", vector_store_id="vs_named"
        )
        assert (
            daemon.metric(
                "openai_vector_store_expires_timestamp_seconds", vector_store_id="vs_found"
            )
            is None
        )
        [info] = [
            labels
            for name, labels, _ in daemon.samples()
            if name == "openai_vector_store_info" and labels["vector_store_id"] == "vs_named"
        ]
        assert info["name"] == 'Docs "main"'
        assert info["team"] == "search"
        assert (
            daemon.metric("openai_vector_store_file_batch_files", vector_store_id="vs_named")
            is None
        )
        page = daemon.request("GET", "/stores/vs_named")
        assert page.status_code == 200
        assert "Docs &#34;main&#34;" in page.text
        assert 'href="/stores/vs_found"' in daemon.request("GET", "/").text
        stores = daemon.request("GET", "/v1/stores").json()["stores"]
        assert sorted(s["vector_store_id"] for s in stores) == ["vs_found", "vs_named"]
        # A watch is written within a second or so of its start; then a kill -9 cannot lose it.
        daemon.wait_until(
            lambda: _stored(tmp_path) == [("vs_found", ""), ("vs_named", "")],
            what="both store watches in the state store",
        )
        daemon.kill9()
    finally:
        daemon.stop()
    again = start_daemon(
        tmp_path,
        {**config, "discovery": {"vector_stores": False}},
        env={"OPENAI_API_KEY": "sk-e2e-stores"},
        name="again",
    )
    try:
        again.wait_until(
            lambda: (
                again.metric(
                    "openai_vector_store_files", vector_store_id="vs_found", status="total"
                )
                == 10
            ),
            what="the discovered store watched again from the state store",
        )
    finally:
        again.stop()
