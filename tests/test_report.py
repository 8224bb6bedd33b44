"""The watch command's exit status from the results of its batches."""

from __future__ import annotations

import dataclasses
import io

import pytest

from watcher.api.models import FileCounts, LastError
from watcher.cli.report import ExitStatus, exit_status, write_text_summary
from watcher.core.results import BatchResult, FailedFile, FileName, StuckFile
from watcher.core.states import State


def result(status: str, failed: int = 0) -> BatchResult:
    return BatchResult(
        vector_store_id="vs",
        batch_id=f"b_{status}_{failed}",
        status=State(status),
        file_counts=FileCounts(completed=10 - failed, failed=failed, total=10),
        failed_files=(),
        failed_by_code={"invalid_file": failed} if failed else {},
        failed_files_listed=failed,
        failed_files_truncated=False,
        failed_files_complete=True,
        elapsed_seconds=1.0,
        finished_at=0.0,
    )


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([("completed", 0)], ExitStatus.OK),
        ([("completed", 0), ("completed", 2)], ExitStatus.FAILURES),
        ([("failed", 0)], ExitStatus.FAILURES),
        ([("cancelled", 0)], ExitStatus.FAILURES),
        ([("failed", 3), ("timed_out", 0)], ExitStatus.DEADLINE),
        ([("timed_out", 0), ("not_found", 0)], ExitStatus.REFUSED),
        ([("completed", 0), ("rejected", 0)], ExitStatus.REFUSED),
        ([("auth_failed", 0)], ExitStatus.REFUSED),
    ],
)
def test_most_serious_outcome_decides(
    statuses: list[tuple[str, int]], expected: ExitStatus
) -> None:
    """Refused beats a deadline, which beats failures, which beat a clean run."""
    assert exit_status([result(s, f) for s, f in statuses]) == expected


def test_the_text_summary_shows_server_text_as_it_is() -> None:
    """Markup and emoji codes in a note, an error code or a message are printed as the text
    they are, with no hyperlink or style escape."""
    hostile = "[link=https://evil.example/x]CLICK[/link] [/] :warning:"
    r = dataclasses.replace(
        result("completed", 1),
        note=hostile,
        failed_by_code={hostile: 1},
        failed_files=(FailedFile("file-1", LastError(hostile, hostile)),),
    )
    out = io.StringIO()
    write_text_summary([r], out)
    text = out.getvalue()
    assert text.count(hostile) >= 3
    assert "⚠" not in text
    assert "\x1b" not in text


def test_the_summary_says_whose_time_and_which_store() -> None:
    """The time in the summary is the watch's ("watched for"), a cancelled batch names its
    cancelled files, and the failed-files table names each file's vector store."""
    failed = dataclasses.replace(
        result("completed", 1),
        vector_store_id="vs_store_9",
        failed_files=(FailedFile("file-1", LastError("invalid_file", "bad [b]bytes[/b]")),),
        elapsed_seconds=75.0,
    )
    cancelled = dataclasses.replace(
        result("cancelled"), file_counts=FileCounts(completed=30, cancelled=50, total=80)
    )
    out = io.StringIO()
    write_text_summary([failed, cancelled], out)
    text = out.getvalue()
    assert "vs_store_9/b_completed_1: completed — 9 completed, 1 failed" in text
    assert "(watched for 1m15s)" in text
    assert " in 1m15s" not in text
    assert "30 completed, 0 failed, 50 cancelled, 0 in progress of 80" in text

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.replace("┃", "│").split("│") if cell.strip()]

    header = next(line for line in text.splitlines() if "message" in line)
    assert cells(header) == ["vector store", "batch", "file", "name", "code", "message"]
    row = next(line for line in text.splitlines() if "file-1" in line)
    assert cells(row)[:5] == [
        "vs_store_9",
        "b_completed_1",
        "file-1",
        "name unknown",
        "invalid_file",
    ]
    assert "bad [b]bytes[/b]" in row


def test_the_text_summary_names_failed_and_stuck_files() -> None:
    """The table shows each failed file's name (or why it has none); stuck files are listed
    with how long the batch has made no progress."""
    r = dataclasses.replace(
        result("timed_out", 2),
        failed_files=(
            FailedFile("file-1", LastError("invalid_file", "bad"), FileName("report.pdf", 9)),
            FailedFile("file-2", LastError("invalid_file", "bad"), FileName(error="HTTP 500")),
        ),
        stuck_files=(StuckFile("file-3", FileName("slow.docx", 5), 125.0),),
    )
    out = io.StringIO()
    write_text_summary([r], out)
    text = out.getvalue()
    assert "report.pdf" in text
    assert "name unknown: HTTP 500" in text
    assert "1 files still in progress, no progress for 2m05s:" in text
    assert "file-3 (slow.docx)" in text
