"""``batch-watcher run`` as a real process whose state file cannot be written: locked by another
process while it runs (it polls on, refuses changes with 503, announces nothing it could not
write, and recovers), and unwritable at start (exit 2)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import (
    PYTHON,
    DaemonProcess,
    SimulatorProcess,
    WebhookReceiver,
    _env,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e

VS = "vs_store"
TOKEN = "store-failure-token-1234"
FAST_POLL = {"interval_seconds": 0.2, "min_interval_seconds": 0.1, "max_interval_seconds": 1.0}


def _ids(batch_id: str) -> dict[str, str]:
    return {"vector_store_id": VS, "batch_id": batch_id}


def _stored(path: Path) -> dict[str, bool]:
    """Each batch in the state file, and whether it has ended (read as another process)."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT batch_id, result IS NOT NULL FROM watches").fetchall()
        return {batch: bool(done) for batch, done in rows}
    finally:
        db.close()


def _requests(daemon: DaemonProcess) -> float:
    return sum(
        value for name, _, value in daemon.samples() if name == "batch_watcher_api_requests_total"
    )


def test_the_daemon_outlasts_a_state_file_locked_by_another_process(
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    """While another process holds the state file's write lock, the daemon stays up: it polls,
    serves health and metrics, answers changes with 503, ``/readyz`` says why, and a batch that
    ends is not announced; once the lock is released it writes what waited, announces that
    batch once, is ready again, and stops cleanly."""
    sim = simulator_factory("--scenario", "empty")
    for batch_id in ("vsfb_slow", "vsfb_ends", "vsfb_api"):
        sim.control(
            "POST", "batches", {**_ids(batch_id), "total_files": 40, "duration_seconds": 600}
        )
    state = tmp_path / "state.sqlite3"
    with WebhookReceiver() as hooks:
        daemon = daemon_factory(
            {
                "api": {"base_url": sim.url},
                "poll": FAST_POLL,
                "notify": {"webhook_url": hooks.url},
                "watch": [_ids("vsfb_slow"), _ids("vsfb_ends")],
            },
            env={"BATCH_WATCHER_CONTROL_TOKEN": TOKEN},
        )
        # One watch registered through the API, which may be deleted there (a configured one
        # answers 409 whatever the store's state).
        registered = daemon.request("POST", "/v1/watches", token=TOKEN, json=_ids("vsfb_api"))
        assert registered.status_code == 201, registered.text
        wait_for(lambda: len(_stored(state)) == 3, what="the three watches on disk")
        holder = sqlite3.connect(state, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            refused = daemon.request(
                "POST", "/v1/watches", token=TOKEN, json=_ids("vsfb_new"), timeout=60
            )
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "5"
            assert "locked" in refused.json()["error"]
            ready = daemon.request("GET", "/readyz")
            assert ready.status_code == 503
            assert any("state store cannot write" in p for p in ready.json()["problems"])

            # The batch ends while the store cannot write: its result waits, unannounced.
            sim.inject({"kind": "unknown_status", "value": "cancelled"}, batch_id="vsfb_ends")
            daemon.wait_until(
                lambda: any(
                    e.get("deliveries", 0) >= 1 for e in daemon.events("state_write_failed")
                ),
                what="the ended batch's write refused",
            )
            before = _requests(daemon)
            daemon.wait_until(lambda: _requests(daemon) >= before + 5, what="polling goes on")
            assert daemon.request("GET", "/healthz").status_code == 200
            assert daemon.request("GET", "/metrics").status_code == 200
            assert daemon.request("GET", "/v1/watches", token=TOKEN).status_code == 200
            assert (
                daemon.request("DELETE", f"/v1/watches/{VS}/vsfb_api", token=TOKEN).status_code
                == 503
            )
            assert daemon.events("batch_cancelled") == []
            assert hooks.received() == []
            assert daemon.proc.poll() is None
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        daemon.wait_until(
            lambda: daemon.request("GET", "/readyz").status_code == 200, what="ready again"
        )
        daemon.wait_until(lambda: len(hooks.received()) == 1, what="the ended batch delivered")
        # The refused deletion changed nothing: the watch is still there, on disk too.
        assert _stored(state) == {"vsfb_slow": False, "vsfb_ends": True, "vsfb_api": False}
        added = daemon.request("POST", "/v1/watches", token=TOKEN, json=_ids("vsfb_slow"))
        assert added.status_code == 200
        assert daemon.terminate() == 0
    assert [e["batch_id"] for e in daemon.events("batch_cancelled")] == ["vsfb_ends"]
    assert [d.json["batch_id"] for d in hooks.received()] == ["vsfb_ends"]
    recovered = daemon.events("state_write_recovered")
    assert len(recovered) >= 1
    assert "Traceback" not in daemon.log_path.read_text()


def _run(config: dict[str, Any], workdir: Path, wrap: list[str] | None = None) -> Any:
    """``batch-watcher run`` with ``config`` to its end (it is meant to refuse to start)."""
    path = write_config(workdir / "refused.toml", config)
    return subprocess.run(
        [*(wrap or []), PYTHON, "-m", "watcher", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        env=_env({}),
        timeout=60,
        check=False,
    )


def test_a_state_file_locked_at_start_is_refused_with_exit_2(tmp_path: Path) -> None:
    """A state file another process holds the write lock of is refused at start: exit 2, a
    message naming ``state.path`` and the lock, no traceback."""
    state = tmp_path / "state.sqlite3"
    holder = sqlite3.connect(state, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        done = _run({"state": {"path": str(state)}}, tmp_path)
    finally:
        holder.close()
    assert done.returncode == 2, done.stderr
    assert f"state.path: cannot use {str(state)!r}" in done.stderr
    assert "locked" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_a_read_only_state_file_is_refused_with_exit_2(tmp_path: Path) -> None:
    """A state file on a read-only mount (root ignores file modes; a mount it cannot) is
    refused at start: exit 2, a message naming ``state.path``, no traceback."""
    where = tmp_path / "ro"
    where.mkdir()
    state = where / "state.sqlite3"
    db = sqlite3.connect(state)
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind -o ro {where} {where}"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0 or os.geteuid() != 0:
        pytest.skip(f"no private read-only mount here: {probe.stderr!r}")
    wrap = ["unshare", "-m", "sh", "-c", f'mount --bind -o ro {where} {where} && exec "$@"', "sh"]
    done = _run({"state": {"path": str(state)}}, tmp_path, wrap)
    assert done.returncode == 2, done.stderr
    assert f"state.path: cannot use {str(state)!r}" in done.stderr
    assert "read" in done.stderr.lower()
    assert "Traceback" not in done.stderr


def test_a_damaged_row_is_refused_with_exit_2_naming_it(tmp_path: Path) -> None:
    """A state file with rows the daemon could not have written (progress ``null``, a
    negative count, a status stored as an object) is refused at start: exit 2, each row named
    with its fault, no traceback, and nothing listening."""
    state = tmp_path / "state.sqlite3"
    db = sqlite3.connect(state)
    db.execute(
        "CREATE TABLE IF NOT EXISTS watches (vector_store_id TEXT NOT NULL, batch_id TEXT NOT "
        "NULL, labels TEXT NOT NULL, options TEXT NOT NULL, registered_at REAL NOT NULL, "
        "progress TEXT NOT NULL, result TEXT, finished_at REAL, "
        "PRIMARY KEY (vector_store_id, batch_id))"
    )
    damaged = [
        ("vsfb_null", "null", "progress is null"),
        ("vsfb_negative", '{"file_counts": {"failed": -4}}', "failed is out of range"),
        ("vsfb_object", '{"status": {"x": 1}}', "progress.status is"),
    ]
    for batch_id, progress, _ in damaged:
        db.execute(
            "INSERT INTO watches VALUES (?, ?, '{}', '{}', 1.0, ?, NULL, NULL)",
            (VS, batch_id, progress),
        )
    db.commit()
    db.close()
    done = _run({"state": {"path": str(state)}, "server": {"listen": "127.0.0.1:0"}}, tmp_path)
    assert done.returncode == 2, done.stderr
    for batch_id, _, said in damaged:
        [line] = [line for line in done.stderr.splitlines() if batch_id in line]
        assert line.startswith(f"batch-watcher: state.path: {str(state)!r}: the watch")
        assert said in line
    assert "3 damaged watch rows" in done.stderr
    assert "Traceback" not in done.stderr
