"""The fleet example: several replicas over PostgreSQL, the URL from a Secret, drained one at a
time."""

from __future__ import annotations

from test_deploy_kubernetes import (
    KUBERNETES,
    deployment,
    docs_of,
    watcher_config,
    watcher_container,
)

FLEET = KUBERNETES / "fleet"


def test_several_replicas_roll_one_at_a_time_without_a_volume() -> None:
    """Three replicas, a rolling update that keeps the others up, and no state volume: the
    state is in PostgreSQL."""
    spec = deployment(FLEET)["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 1
    assert not docs_of(FLEET, "PersistentVolumeClaim")
    assert "path" not in watcher_config(FLEET).get("state", {})


def test_a_disruption_budget_takes_one_replica_at_a_time() -> None:
    """The PodDisruptionBudget selects the Deployment's pods and lets one go at a time."""
    (pdb,) = docs_of(FLEET, "PodDisruptionBudget")
    labels = deployment(FLEET)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_the_url_comes_from_a_secret_and_the_name_from_the_pod() -> None:
    """BATCH_WATCHER_STATE_URL (password and all) comes from a Secret, never from the config
    file; BATCH_WATCHER_REPLICA_ID is the pod's name."""
    container = watcher_container(deployment(FLEET)["spec"]["template"]["spec"])
    env = {e["name"]: e["valueFrom"] for e in container["env"]}
    assert env["BATCH_WATCHER_STATE_URL"]["secretKeyRef"] == {
        "name": "batch-watcher-postgres",
        "key": "url",
    }
    assert env["BATCH_WATCHER_REPLICA_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "url" not in watcher_config(FLEET)["state"]
