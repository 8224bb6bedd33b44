"""The control API's OpenAPI document against the running daemon: schemathesis generates
requests from it, valid and not, and every answer must be one the document describes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from harness import DaemonProcess, SimulatorProcess, start_daemon, start_simulator
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

pytestmark = pytest.mark.e2e

DOCUMENT = Path(__file__).parents[2] / "docs" / "openapi.json"
#: Examples per operation (each is one request, or a few for the stateful checks).
EXAMPLES = 40
TOKEN = "fuzz-control-token-0123456789"


@pytest.fixture(scope="module", params=["no token", "token"])
def daemon(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonProcess]:
    """A daemon on loopback against the simulator, without a control token (the API open to
    loopback names) and with one."""
    env = {"OPENAI_API_KEY": "sk-fuzz"}
    if request.param == "token":
        env["BATCH_WATCHER_CONTROL_TOKEN"] = TOKEN
    sim: SimulatorProcess = start_simulator(["--scenario", "empty"])
    workdir = tmp_path_factory.mktemp("fuzz")
    config = {
        "api": {"base_url": sim.url},
        "poll": {"interval_seconds": 0.5},
        "state": {"max_watches": 50},
        "watch": [{"vector_store_id": "vs_fuzz", "batch_id": "vsfb_declared"}],
    }
    process = start_daemon(workdir, config, env=env)
    yield process
    process.stop()
    sim.stop()


schema = schemathesis.openapi.from_path(DOCUMENT)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_is_one_the_document_describes(
    case: schemathesis.Case, daemon: DaemonProcess
) -> None:
    """No generated request, valid or not, gets a 500, crashes the daemon, or an answer whose
    status, type or body the OpenAPI document does not describe."""
    # Every check but one: a label value the document calls valid may still be refused (422,
    # documented), since JSON Schema's patterns cannot say exactly what str.isprintable does.
    headers = {"Authorization": f"Bearer {daemon.token}"} if daemon.token else None
    case.call_and_validate(
        base_url=daemon.url, headers=headers, excluded_checks=[positive_data_acceptance]
    )
    assert daemon.proc.poll() is None, daemon.tail()
