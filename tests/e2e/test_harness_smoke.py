"""The end-to-end harness itself: a daemon process watching a simulator process."""

from __future__ import annotations

from collections.abc import Callable

from harness import DaemonProcess, SimulatorProcess


def test_daemon_sees_a_template_batch_complete(
    simulator_factory: Callable[..., SimulatorProcess],
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """A daemon watching one quick simulated batch reports it completed, as the simulator says."""
    sim = simulator_factory(
        "--scenario", "template", "--batches", "1", "--files", "10", "--duration", "1"
    )
    [(batch_id, truth)] = sim.truth().items()
    daemon = daemon_factory(
        {
            "api": {"base_url": sim.url},
            "poll": {"interval_seconds": 0.2, "min_interval_seconds": 0.1},
            "watch": [{"vector_store_id": truth["vector_store_id"], "batch_id": batch_id}],
        }
    )
    labels = {"vector_store_id": truth["vector_store_id"], "batch_id": batch_id}
    daemon.wait_until(
        lambda: (
            daemon.metric("openai_vector_store_file_batch_status", status="completed", **labels)
            == 1.0
        ),
        what="batch completed",
    )
    assert (
        daemon.metric("openai_vector_store_file_batch_files", status="completed", **labels) == 10.0
    )
    assert [e["batch_id"] for e in daemon.events("batch_completed")] == [batch_id]
    assert daemon.terminate() == 0
