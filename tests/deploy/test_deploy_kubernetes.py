"""The Kubernetes manifests: schema-valid, complete kustomizations, hardened, wired consistently."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import deploy_tools
import kubernetes_validate
import pytest
import yaml
from deploy_contract import (
    CONFIG_KEYS,
    CONFIG_PATH,
    DEPLOY,
    HTTP_PORT,
    LIVENESS_PATH,
    READINESS_PATH,
)
from deploy_promql import RULE_FILES, load_rule_groups
from deploy_tools import run

KUBERNETES = DEPLOY / "kubernetes"
KUSTOMIZATIONS = sorted(p.parent for p in KUBERNETES.glob("*/kustomization.yaml"))
DEPLOYABLE = [KUBERNETES / "standalone", KUBERNETES / "sidecar", KUBERNETES / "fleet"]
# The oldest Kubernetes the manifests promise to work on, and the newest schemas installed.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
CRD_GROUP = "monitoring.coreos.com/v1"
WATCHER_CONTAINER = "batch-watcher"

Doc = dict[str, Any]


def load_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_files() -> list[Path]:
    return sorted(
        p for d in KUSTOMIZATIONS for p in d.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def all_docs() -> Iterator[tuple[Path, Doc]]:
    for path in manifest_files():
        for doc in load_docs(path):
            yield path, doc


def docs_of(directory: Path, kind: str) -> list[Doc]:
    return [d for p, d in all_docs() if p.parent == directory and d["kind"] == kind]


def kustomization(directory: Path) -> Doc:
    data: Doc = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return data


def doc_id(item: tuple[Path, Doc]) -> str:
    path, doc = item
    return f"{path.parent.name}/{path.name}:{doc['kind']}"


def builtin_docs() -> list[tuple[Path, Doc]]:
    return [(p, d) for p, d in all_docs() if d["apiVersion"] != CRD_GROUP]


def deployment(directory: Path) -> Doc:
    (found,) = docs_of(directory, "Deployment")
    return found


def watcher_container(pod_spec: Doc) -> Doc:
    (container,) = [c for c in pod_spec["containers"] if c["name"] == WATCHER_CONTAINER]
    found: Doc = container
    return found


def watcher_config(directory: Path) -> dict[str, Any]:
    (generator,) = kustomization(directory)["configMapGenerator"]
    (file,) = generator["files"]
    return tomllib.loads((directory / file).read_text())


def volume_for(pod_spec: Doc, container: Doc, file_path: str) -> tuple[Doc, Doc, str]:
    """The volume mount holding a path, the volume, and the path inside the mount."""
    path = PurePosixPath(file_path)
    for mount in container["volumeMounts"]:
        if path.is_relative_to(mount["mountPath"]):
            (volume,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
            return mount, volume, str(path.relative_to(mount["mountPath"]))
    raise AssertionError(f"{file_path} is on no volume of container {container['name']}")


def kustomize_build(command: list[str], directory: Path) -> list[Doc]:
    result = run(*command, str(directory))
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


# --- kustomizations ---------------------------------------------------------------------------


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_kustomization_lists_existing_files_and_every_manifest(directory: Path) -> None:
    """Each resource a kustomization names exists, and each manifest beside it is listed."""
    data = kustomization(directory)
    listed = set()
    for resource in data["resources"]:
        target = (directory / resource).resolve()
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), resource
        else:
            assert target.is_file(), resource
            listed.add(target)
    manifests = {p.resolve() for p in directory.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert manifests == listed
    generated = {f for g in data.get("configMapGenerator", []) for f in g["files"]}
    for file in generated:
        assert (directory / file).is_file(), file
    others = {p.name for p in directory.iterdir() if p.suffix != ".yaml"}
    assert others <= generated, "files beside the kustomization that nothing uses"


def test_every_kustomization_is_covered() -> None:
    """The deployable examples and the shared rules are kustomizations the tests see."""
    assert {d.name for d in KUSTOMIZATIONS} == {"rules", "standalone", "sidecar", "fleet"}


@pytest.mark.parametrize("directory", DEPLOYABLE, ids=lambda d: d.name)
def test_kustomize_build_output_validates(directory: Path) -> None:
    """kustomize builds the example, and every built-in object it renders fits the schemas."""
    kustomize = deploy_tools.kustomize()
    built = kustomize_build(kustomize, directory)
    kinds = {d["kind"] for d in built}
    assert {"Deployment", "ConfigMap", "PrometheusRule", "NetworkPolicy"} <= kinds
    for doc in built:
        if doc["apiVersion"] == CRD_GROUP:
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    (config_map,) = [d for d in built if d["kind"] == "ConfigMap"]
    (built_deployment,) = [d for d in built if d["kind"] == "Deployment"]
    pod = built_deployment["spec"]["template"]["spec"]
    names = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert names == {config_map["metadata"]["name"]}, "the Deployment mounts the generated config"
    assert "config.toml" in config_map["data"]
    image = watcher_container(pod)["image"]
    assert image == "registry.example.com/batch-watcher:0.1.0"


# --- schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("item", builtin_docs(), ids=doc_id)
def test_manifest_validates_against_kubernetes_schema(item: tuple[Path, Doc], version: str) -> None:
    """The object fits the Kubernetes schema (strict: no unknown fields)."""
    _, doc = item
    assert kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_rejects_a_broken_manifest() -> None:
    """The validator is live: a misspelled field in the Deployment is refused."""
    broken = deployment(KUBERNETES / "standalone")
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


# --- Prometheus Operator objects (no schema: checked by hand) ---------------------------------


def test_prometheusrule_carries_exactly_the_rule_files_groups() -> None:
    """The PrometheusRule's spec.groups equal the groups of alerts.yaml and recording.yaml."""
    (rule,) = docs_of(KUBERNETES / "rules", "PrometheusRule")
    assert rule["apiVersion"] == CRD_GROUP
    assert rule["metadata"]["name"]
    assert set(rule["spec"]) == {"groups"}
    expected = [group for path in RULE_FILES for group in load_rule_groups(path)]
    assert rule["spec"]["groups"] == expected


def test_servicemonitor_scrapes_the_watcher_service() -> None:
    """The ServiceMonitor selects the watcher's Service and a port it has, at /metrics."""
    directory = KUBERNETES / "standalone"
    (monitor,) = docs_of(directory, "ServiceMonitor")
    (service,) = docs_of(directory, "Service")
    assert monitor["apiVersion"] == CRD_GROUP
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
    # Prometheus names the job after the Service; the alerts select job="batch-watcher".
    assert "jobLabel" not in monitor["spec"]
    assert service["metadata"]["name"] == "batch-watcher"


def test_podmonitor_scrapes_the_sidecar_as_job_batch_watcher() -> None:
    """The PodMonitor selects the app's pods and the watcher's port, and sets job=batch-watcher."""
    directory = KUBERNETES / "sidecar"
    (monitor,) = docs_of(directory, "PodMonitor")
    assert monitor["apiVersion"] == CRD_GROUP
    assert set(monitor["spec"]) <= {"selector", "podMetricsEndpoints", "namespaceSelector"}
    template = deployment(directory)["spec"]["template"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    )
    ports = {p["name"] for p in watcher_container(template["spec"])["ports"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"
    assert {
        "action": "replace",
        "targetLabel": "job",
        "replacement": "batch-watcher",
    } in endpoint["relabelings"]


# --- hardening --------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", DEPLOYABLE, ids=lambda d: d.name)
def test_pods_run_non_root_with_runtime_default_seccomp(directory: Path) -> None:
    """The pod runs as non-root under seccomp RuntimeDefault, with no Kubernetes API token."""
    pod = deployment(directory)["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] > 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("directory", DEPLOYABLE, ids=lambda d: d.name)
def test_containers_are_locked_down(directory: Path) -> None:
    """Each container: no privilege escalation, no capabilities, read-only root, resource limits."""
    pod = deployment(directory)["spec"]["template"]["spec"]
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "add" not in context["capabilities"], container["name"]
        assert context["runAsNonRoot"] is True, container["name"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), container["name"]
        assert {"cpu", "memory"} <= resources["limits"].keys(), container["name"]
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp, f"{container['name']} has no writable /tmp"
        _, volume, _ = volume_for(pod, container, "/tmp/x")
        assert "emptyDir" in volume


@pytest.mark.parametrize("directory", DEPLOYABLE, ids=lambda d: d.name)
def test_watcher_probes_use_healthz_and_readyz(directory: Path) -> None:
    """Liveness asks /healthz on the watcher's port; readiness (standalone, fleet) asks
    /readyz."""
    container = watcher_container(deployment(directory)["spec"]["template"]["spec"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [HTTP_PORT]
    liveness = container["livenessProbe"]["httpGet"]
    assert liveness["path"] == LIVENESS_PATH
    assert liveness["port"] in ports
    assert container["startupProbe"]["httpGet"]["path"] == LIVENESS_PATH
    if directory.name in ("standalone", "fleet"):
        readiness = container["readinessProbe"]["httpGet"]
        assert readiness["path"] == READINESS_PATH
        assert readiness["port"] in ports
    else:
        # In the sidecar, /readyz would take the app out of its Service (docs/deploy.md).
        assert "readinessProbe" not in container


def test_standalone_keeps_state_on_a_pvc_with_recreate() -> None:
    """One replica, strategy Recreate, and the state path on a ReadWriteOnce claim it mounts."""
    directory = KUBERNETES / "standalone"
    spec = deployment(directory)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    container = watcher_container(pod)
    mount, volume, _ = volume_for(pod, container, watcher_config(directory)["state"]["path"])
    assert not mount.get("readOnly", False)
    (claim,) = docs_of(directory, "PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_sidecar_keeps_state_on_an_emptydir() -> None:
    """Each sidecar keeps its state in a writable emptyDir (replicas cannot share a RWO claim)."""
    directory = KUBERNETES / "sidecar"
    pod = deployment(directory)["spec"]["template"]["spec"]
    mount, volume, _ = volume_for(
        pod, watcher_container(pod), watcher_config(directory)["state"]["path"]
    )
    assert "emptyDir" in volume
    assert not mount.get("readOnly", False)
    assert not docs_of(directory, "PersistentVolumeClaim")


# --- wiring between config.toml and the manifests ---------------------------------------------


@pytest.mark.parametrize("directory", DEPLOYABLE, ids=lambda d: d.name)
def test_config_is_mounted_where_the_command_reads_it(directory: Path) -> None:
    """The watcher reads --config /etc/batch-watcher/config.toml from its generated ConfigMap."""
    pod = deployment(directory)["spec"]["template"]["spec"]
    container = watcher_container(pod)
    assert container["args"] == ["run", "--config", CONFIG_PATH]
    mount, volume, inner = volume_for(pod, container, CONFIG_PATH)
    assert mount["readOnly"] is True
    (generator,) = kustomization(directory)["configMapGenerator"]
    assert volume["configMap"]["name"] == generator["name"]
    assert inner in generator["files"]


@pytest.mark.parametrize("directory", DEPLOYABLE, ids=lambda d: d.name)
@pytest.mark.parametrize(
    ("section", "key", "secret_key"),
    [("api", "api_key_file", "api-key"), ("server", "control_token_file", "token")],
)
def test_secret_files_are_mounted_from_secrets(
    directory: Path, section: str, key: str, secret_key: str
) -> None:
    """The API key and control token files the config names come from Secret volumes, read-only."""
    pod = deployment(directory)["spec"]["template"]["spec"]
    path = watcher_config(directory)[section][key]
    mount, volume, inner = volume_for(pod, watcher_container(pod), path)
    assert mount["readOnly"] is True
    assert "subPath" not in mount, "a subPath mount would not see a rotated Secret"
    assert {"key": secret_key, "path": inner} in volume["secret"]["items"]


@pytest.mark.parametrize("directory", DEPLOYABLE, ids=lambda d: d.name)
def test_listener_is_reachable_and_control_api_is_guarded(directory: Path) -> None:
    """The watcher listens on all interfaces at its container port, so it needs a control token."""
    config = watcher_config(directory)
    host, _, port = config["server"]["listen"].rpartition(":")
    assert host == "0.0.0.0"  # noqa: S104 - the manifest's documented choice
    assert int(port) == HTTP_PORT
    assert config["server"]["control_token_file"]


def test_sidecar_app_uses_the_watchers_control_token() -> None:
    """The app container gets the control token from the Secret the watcher reads."""
    pod = deployment(KUBERNETES / "sidecar")["spec"]["template"]["spec"]
    (app,) = [c for c in pod["containers"] if c["name"] != WATCHER_CONTAINER]
    env = {e["name"]: e for e in app["env"]}
    ref = env["BATCH_WATCHER_CONTROL_TOKEN"]["valueFrom"]["secretKeyRef"]
    _, volume, _ = volume_for(
        pod,
        watcher_container(pod),
        watcher_config(KUBERNETES / "sidecar")["server"]["control_token_file"],
    )
    assert ref["name"] == volume["secret"]["secretName"]
    assert env["BATCH_WATCHER_URL"]["value"] == f"http://127.0.0.1:{HTTP_PORT}"


@pytest.mark.parametrize("directory", DEPLOYABLE, ids=lambda d: d.name)
def test_services_and_policies_point_at_existing_pods_and_ports(directory: Path) -> None:
    """Services and NetworkPolicies select the Deployment's pods and name ports those pods have."""
    template = deployment(directory)["spec"]["template"]
    labels = template["metadata"]["labels"]
    ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    for service in docs_of(directory, "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    for policy in docs_of(directory, "NetworkPolicy"):
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        named = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert named <= ports


@pytest.mark.parametrize(
    "path", sorted(DEPLOY.rglob("*.toml")), ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_config_files_use_only_contract_keys(path: Path) -> None:
    """Shipped config.toml files use only sections and keys the daemon documents."""
    config = tomllib.loads(path.read_text())
    for section, values in config.items():
        assert section in CONFIG_KEYS, section
        tables = values if isinstance(values, list) else [values]
        for table in tables:
            unknown = set(table) - CONFIG_KEYS[section]
            assert not unknown, f"[{section}] {sorted(unknown)}"
