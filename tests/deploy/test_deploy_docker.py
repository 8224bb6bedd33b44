"""The container image recipe: linted, minimal context, non-root, and a working health check."""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import deploy_tools
import pytest
from deploy_contract import CONFIG_PATH, DEPLOY, LIVENESS_PATH, REPO, env_override
from deploy_tools import run

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def dockerignore_sends(path: str) -> bool:
    """Whether the build context includes a path (last matching .dockerignore pattern wins)."""
    sent = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        candidates = [pattern]
        if pattern.startswith("**/"):
            candidates.append(pattern[3:])
        for prefix in prefixes:
            names = [prefix, *("/".join(prefix.split("/")[i:]) for i in range(1, len(parts)))]
            if any(fnmatch.fnmatchcase(n, c) for n in names for c in candidates):
                sent = negate
                break
    return sent


def healthcheck_command() -> list[str]:
    (args,) = [a for k, a in final_stage() if k == "HEALTHCHECK"]
    command = json.loads(args.partition("CMD")[2])
    assert isinstance(command, list)
    return [str(c) for c in command]


@pytest.fixture
def health_server() -> Iterator[tuple[int, list[int]]]:
    """A loopback HTTP server answering /healthz with the status at the head of a list."""
    statuses = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses[0] if self.path == LIVENESS_PATH else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], statuses
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(listen: str) -> int:
    """Run the HEALTHCHECK's Python code here with the given listen address; its exit status."""
    command = healthcheck_command()
    assert command[0] == "python"
    code = command[command.index("-c") + 1]
    env = {**os.environ, env_override("server", "listen"): listen}
    completed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, check=False, timeout=30
    )
    return completed.returncode


def test_hadolint_finds_nothing() -> None:
    """hadolint reports no finding at any severity for the Dockerfile."""
    hadolint = deploy_tools.hadolint()
    result = run(hadolint, "--failure-threshold", "style", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_is_live(tmp_path: Path) -> None:
    """hadolint does flag a careless Dockerfile, so a clean report means something."""
    hadolint = deploy_tools.hadolint()
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = run(hadolint, "--failure-threshold", "style", str(bad))
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the :latest tag


def test_multi_stage_on_python_311_slim() -> None:
    """A builder stage makes the venv; the runtime stage is python:3.11-slim and copies only it."""
    steps = instructions(DOCKERFILE.read_text())
    froms = [a for k, a in steps if k == "FROM"]
    assert froms == ["python:3.11-slim AS builder", "python:3.11-slim AS runtime"]
    copies = [a for k, a in final_stage() if k == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]


def test_runs_as_non_root_with_the_contract_command() -> None:
    """The runtime runs as a numeric non-root user: batch-watcher run --config <config>."""
    stage = final_stage()
    (user,) = [a for k, a in stage if k == "USER"]
    uid = user.partition(":")[0]
    assert uid.isdigit()
    assert int(uid) > 0
    assert [json.loads(a) for k, a in stage if k == "ENTRYPOINT"] == [["batch-watcher"]]
    assert [json.loads(a) for k, a in stage if k == "CMD"] == [["run", "--config", CONFIG_PATH]]
    assert [a for k, a in stage if k == "EXPOSE"] == ["9464"]


def test_no_curl_or_wget() -> None:
    """Nothing in the image recipe relies on curl or wget (the slim image has neither)."""
    assert not re.search(
        r"\b(curl|wget)\b", " ".join(a for _, a in instructions(DOCKERFILE.read_text()))
    )


def test_healthcheck_passes_on_200(health_server: tuple[int, list[int]]) -> None:
    """The HEALTHCHECK command exits 0 when /healthz answers 200 (0.0.0.0 is asked on loopback)."""
    port, _ = health_server
    assert run_healthcheck(f"0.0.0.0:{port}") == 0
    assert run_healthcheck(f"127.0.0.1:{port}") == 0


def test_healthcheck_fails_on_503(health_server: tuple[int, list[int]]) -> None:
    """The HEALTHCHECK command exits non-zero when /healthz answers 503."""
    port, statuses = health_server
    statuses[0] = 503
    assert run_healthcheck(f"0.0.0.0:{port}") != 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    """The HEALTHCHECK command exits non-zero when the port is closed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert run_healthcheck(f"0.0.0.0:{port}") != 0


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    """The build context holds what COPY needs, and not .git, the venv, tests or deploy/."""
    sources = [
        src
        for k, a in instructions(DOCKERFILE.read_text())
        if k == "COPY" and not a.startswith("--from")
        for src in a.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert dockerignore_sends(source.rstrip("/")), source
    assert dockerignore_sends("watcher/__init__.py")
    for path in (
        ".git/config",
        ".venv/bin/python",
        "tests/deploy/conftest.py",
        "deploy/docker/Dockerfile",
        "watcher/__pycache__/x.pyc",
        "state.sqlite3",
    ):
        assert not dockerignore_sends(path), path
