"""Structured logs: the format, the event lines, and secrets scrubbed from every line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import structlog

from watcher import logs
from watcher.core.events import PollFailed
from watcher.credentials import Secret, SecretSource


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    logs._secrets.clear()
    logs._sources.clear()
    structlog.reset_defaults()


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_events_are_json_lines_with_their_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """An engine event becomes one JSON line named for the event, carrying its fields."""
    logs.configure("json", "info")
    logs.log_event(
        PollFailed(
            vector_store_id="vs_1",
            batch_id="b_1",
            error="Transient",
            message="server error 503",
            http_status=503,
            request_id="req_9",
            retry_in=1.25,
        )
    )
    [line] = _lines(capsys.readouterr().err)
    assert line["event"] == "poll_failed"
    assert line["level"] == "warning"
    assert line["request_id"] == "req_9"
    assert line["batch_id"] == "b_1"


def test_debug_events_are_dropped_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    """At level info, debug lines are not written at all."""
    logs.configure("json", "info")
    logs.log.debug("noise", x=1)
    logs.log.info("signal", x=2)
    assert [line["event"] for line in _lines(capsys.readouterr().err)] == ["signal"]


def test_registered_secret_is_masked_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    """A registered secret is masked in messages and nested values alike."""
    logs.configure("json", "info")
    logs.register_secret(Secret("sk-test-RECOGNISABLE-1234"))
    logs.log.info(
        "oops",
        detail="key sk-test-RECOGNISABLE-1234 leaked",
        nested={"k": ["sk-test-RECOGNISABLE-1234"]},
    )
    err = capsys.readouterr().err
    assert "RECOGNISABLE" not in err
    assert logs.MASK in err


def test_rotated_key_file_is_followed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A key file that changes at run time has its new value masked too."""
    key_file = tmp_path / "key"
    key_file.write_text("sk-first-AAAAAAAA\n")
    now = [0.0]
    logs.configure("json", "info")
    logs.register_secret(SecretSource(file=key_file, clock=lambda: now[0]))
    key_file.write_text("sk-second-BBBBBBBB\n")
    os.utime(key_file, ns=(1, 10**18))
    now[0] = 10.0  # past the source's recheck interval
    logs.log.info("line", a="sk-second-BBBBBBBB")
    assert "BBBBBBBB" not in capsys.readouterr().err


def test_unknown_level_is_refused() -> None:
    """A log level outside the list is a clear error."""
    with pytest.raises(ValueError, match="not one of"):
        logs.configure("json", "verbose")
