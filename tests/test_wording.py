"""The shared words for files and durations: plain values."""

from __future__ import annotations

import pytest

from watcher.api.models import FileCounts
from watcher.core.wording import duration_text, eta_text, files_text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (7.4, "7s"), (59.6, "1m00s"), (125, "2m05s"), (3723, "1h02m03s"), (-3, "0s")],
)
def test_durations_read_in_hours_minutes_and_seconds(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_no_estimate_reads_as_a_question_mark() -> None:
    assert eta_text(None) == "?"
    assert eta_text(61) == "1m01s"


def test_files_name_cancelled_and_in_progress_only_when_there_are_any() -> None:
    quiet = FileCounts(in_progress=0, completed=80, failed=0, cancelled=0, total=80)
    busy = FileCounts(in_progress=3, completed=20, failed=2, cancelled=50, total=75)
    assert files_text(quiet) == "80 completed, 0 failed"
    assert files_text(busy) == "20 completed, 2 failed, 50 cancelled, 3 in progress"
