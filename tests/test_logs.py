"""Structured logs: the format, the event lines, and secrets scrubbed from every line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import structlog

from watcher import logs
from watcher.api.models import FileCounts, LastError
from watcher.core.events import BatchFinished, FileFailedEvent, PollFailed
from watcher.core.results import BatchResult, FailedFile
from watcher.core.states import State
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


def _ended_with_failed_files() -> list[FileFailedEvent | BatchFinished]:
    failed = tuple(FailedFile(f"file-{i}", LastError("invalid_file", "bad")) for i in range(3))
    result = BatchResult(
        vector_store_id="vs_1",
        batch_id="b_1",
        status=State.COMPLETED,
        file_counts=FileCounts(completed=7, failed=3, total=10),
        failed_files=failed,
        failed_by_code={"invalid_file": 3},
        failed_files_listed=3,
        failed_files_truncated=False,
        failed_files_complete=True,
        elapsed_seconds=65.0,
        finished_at=1.0,
        labels={"team": "search"},
    )
    files: list[FileFailedEvent | BatchFinished] = [
        FileFailedEvent(vector_store_id="vs_1", batch_id="b_1", file=f) for f in failed
    ]
    return [*files, BatchFinished(vector_store_id="vs_1", batch_id="b_1", result=result)]


def test_a_console_shows_one_short_line_per_batch_and_files_at_debug(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a console, a batch that ends with failed files is one short line; each file is a line
    only at debug."""
    logs.configure("console", "info")
    for event in _ended_with_failed_files():
        logs.log_event(event)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    [line] = lines
    assert "batch_completed" in line
    assert "batch=vs_1/b_1" in line
    assert "file_counts='7 completed, 3 failed of 10'" in line
    assert "failed_files_by_code='invalid_file 3'" in line
    assert "watched=1m05s" in line
    for quiet in ("finished_at", "failed_files_complete", "labels", "note=", "file_failed"):
        assert quiet not in line

    logs.configure("console", "debug")
    for event in _ended_with_failed_files():
        logs.log_event(event)
    assert capsys.readouterr().err.count("file_failed") == 3


def test_json_lines_keep_every_event_and_field(capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal (JSON), every failed file is a warning line, and the batch's line keeps
    every field."""
    logs.configure("json", "info")
    for event in _ended_with_failed_files():
        logs.log_event(event)
    lines = _lines(capsys.readouterr().err)
    assert [line["event"] for line in lines] == ["file_failed"] * 3 + ["batch_completed"]
    assert all(line["level"] == "warning" for line in lines)
    assert lines[-1]["file_counts"] == {
        "in_progress": 0,
        "completed": 7,
        "failed": 3,
        "cancelled": 0,
        "total": 10,
    }
    assert lines[-1]["labels"] == {"team": "search"}
    assert "finished_at" in lines[-1]
