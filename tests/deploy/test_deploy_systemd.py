"""The systemd unit: accepted by systemd-analyze, hardened, and wired to the daemon's contract."""

from __future__ import annotations

import re
from pathlib import Path

import deploy_tools
import pytest
from deploy_contract import CONFIG_PATH, DEPLOY, env_override
from deploy_tools import run

from watcher.serving import ServerLimits

UNIT = DEPLOY / "systemd" / "batch-watcher.service"
EXEC = "/usr/local/bin/batch-watcher"
MAX_EXPOSURE = 2.0


def directives(text: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value given (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service() -> dict[str, list[str]]:
    return directives(UNIT.read_text())["Service"]


def verifiable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointed at a stub, since verify requires the binary to exist."""
    stub = tmp_path / "batch-watcher"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text((text or UNIT.read_text()).replace(EXEC, str(stub)))
    return unit


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit without a single warning."""
    systemd_analyze = deploy_tools.systemd_analyze()
    result = run(systemd_analyze, "verify", str(verifiable_copy(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == "", result.stderr


def test_systemd_analyze_verify_is_live(tmp_path: Path) -> None:
    """systemd-analyze verify does complain about an unknown directive."""
    systemd_analyze = deploy_tools.systemd_analyze()
    broken = UNIT.read_text().replace("[Service]\n", "[Service]\nProtectSystems=strict\n")
    result = run(systemd_analyze, "verify", str(verifiable_copy(tmp_path, broken)))
    assert "ProtectSystems" in result.stderr


def test_systemd_exposure_is_low(tmp_path: Path) -> None:
    """systemd-analyze security rates the unit's exposure at 2.0 or below ("OK" or better)."""
    systemd_analyze = deploy_tools.systemd_analyze()
    result = run(
        systemd_analyze, "security", "--offline=yes", "--no-pager", str(verifiable_copy(tmp_path))
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ExecStart", f"{EXEC} run --config {CONFIG_PATH}"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "batch-watcher"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
    ],
)
def test_unit_sets(key: str, value: str) -> None:
    """The unit sets the directive to the value the deployment guide promises."""
    assert value in service()[key]


def test_stop_timeout_leaves_room_to_drain() -> None:
    """TimeoutStopSec gives the graceful shutdown between 10 seconds and 2 minutes."""
    (timeout,) = service()["TimeoutStopSec"]
    seconds = int(timeout.removesuffix("s"))
    assert 10 <= seconds <= 120


def test_api_key_comes_from_a_credential() -> None:
    """The API key file the daemon reads is the credential LoadCredential hands over."""
    (credential,) = service()["LoadCredential"]
    name, _, source = credential.partition(":")
    assert source.startswith("/")
    environment = dict(e.partition("=")[::2] for e in service()["Environment"])
    assert environment[env_override("api", "api_key_file")] == f"%d/{name}"


def test_state_lives_in_the_state_directory() -> None:
    """The SQLite state path is inside StateDirectory (the only writable place)."""
    environment = dict(e.partition("=")[::2] for e in service()["Environment"])
    (state_dir,) = service()["StateDirectory"]
    assert environment[env_override("state", "path")].startswith(f"%S/{state_dir}/")


def test_open_files_limit_leaves_the_server_its_whole_connection_cap() -> None:
    """LimitNOFILE is set, and high enough that the HTTP server's connection cap is not lowered
    to fit under it (a lower limit would let fewer clients in before it refuses)."""
    [value] = service()["LimitNOFILE"]
    limits = ServerLimits()
    assert limits.connection_cap(int(value)) == limits.max_connections
    assert limits.connection_cap(1024) < limits.max_connections  # systemd's default soft limit
