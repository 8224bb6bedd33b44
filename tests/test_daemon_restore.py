"""What the daemon does with the state store at start."""

from __future__ import annotations

from pathlib import Path

from factories import ended_watch
from structlog.testing import capture_logs

from watcher.config import config_from_mapping
from watcher.core.states import Phase
from watcher.core.watch import STORE
from watcher.daemon.service import Daemon
from watcher.store.sqlite import SQLiteStore


async def test_rejected_watches_are_tried_again_after_a_restart(tmp_path: Path) -> None:
    """A watch that ended rejected (usually a configuration problem) is watched again after a
    restart; one that really ended stays ended, and the start's log line counts it as ended."""
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    for status, batch_id in (("rejected", "b_rejected"), ("completed", "b_done")):
        await store.save_finished(ended_watch("vs_r", batch_id, status))
    await store.aclose()
    daemon = Daemon(config_from_mapping({"state": {"path": str(path)}}, {}))
    with capture_logs() as logged:
        await daemon.restore()
    [restored] = [e for e in logged if e["event"] == "watches_restored"]
    # The finished watch is restored but not watched: only the rejected one is polled again.
    assert (restored["restored"], restored["watching"], restored["finished"]) == (2, 1, 1)
    rejected = daemon.engine.get("vs_r", "b_rejected")
    done = daemon.engine.get("vs_r", "b_done")
    assert rejected is not None
    assert rejected.phase is Phase.WATCHING
    assert rejected.result is None
    assert done is not None
    assert done.phase is Phase.FINISHED
    await daemon.store.aclose()
    await daemon.engine.client.aclose()


async def test_configured_stores_are_watched_and_kept_across_a_restart(tmp_path: Path) -> None:
    """A [[store]] table becomes a store watch with its labels, saved in the state store, and
    comes back as a store watch after a restart."""
    path = tmp_path / "state.sqlite3"
    document = {
        "state": {"path": str(path)},
        "store": [{"vector_store_id": "vs_kept", "labels": {"team": "search"}}],
    }
    daemon = Daemon(config_from_mapping(document, {}))
    await daemon.restore()
    watch = daemon.engine.get("vs_kept", STORE)
    assert watch is not None
    assert watch.is_store
    assert dict(watch.labels) == {"team": "search"}
    assert watch.deadline_at is None
    await daemon.store.flush()
    await daemon.store.aclose()
    await daemon.engine.client.aclose()
    again = Daemon(config_from_mapping({"state": {"path": str(path)}}, {}))
    await again.restore()
    back = again.engine.get("vs_kept", STORE)
    assert back is not None
    assert back.is_store
    assert dict(back.labels) == {"team": "search"}
    await again.store.aclose()
    await again.engine.client.aclose()
