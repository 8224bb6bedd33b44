"""The live progress display of the watch command."""

from __future__ import annotations

import io

from rich.console import Console

from watcher.api.models import FileCounts
from watcher.cli.progress import CANCELLED_STYLE, CLEAN, WITH_FAILURES, ProgressDisplay, bar_style
from watcher.core.events import BatchFinished, BatchProgressed, BatchStalled, WatchStarted
from watcher.core.results import BatchResult
from watcher.core.states import State


def test_bars_render_before_and_after_the_size_is_known() -> None:
    """A batch of unknown size renders without error; once counts arrive it shows n/total."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    display = ProgressDisplay(console)
    with display:
        display(WatchStarted(vector_store_id="vs_1", batch_id="b_1"))
        display._progress.refresh()
        display(
            BatchProgressed(
                vector_store_id="vs_1",
                batch_id="b_1",
                status="in_progress",
                file_counts=FileCounts(in_progress=5, completed=4, failed=1, total=10),
                eta_seconds=12.0,
            )
        )
        display._progress.refresh()
    text = out.getvalue()
    assert "vs_1/b_1" in text
    assert "5/10" in text
    assert "4 completed, 1 failed" in text
    assert "ETA 12s" in text


HOSTILE = "[link=https://evil.example/x]CLICK[/link] [blink]now[/blink] [/] :warning:"


def test_server_text_is_never_markup() -> None:
    """A status full of rich markup (a link, blinking, a stray ``[/]``) is drawn as the text it
    is: no hyperlink escape, no style, no emoji, and no error in the refresh."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system="truecolor")
    display = ProgressDisplay(console)
    with display:
        display(WatchStarted(vector_store_id="vs_1", batch_id="b_1"))
        display(
            BatchProgressed(
                vector_store_id="vs_1",
                batch_id="b_1",
                status=HOSTILE,
                file_counts=FileCounts(in_progress=5, completed=5, total=10),
                eta_seconds=None,
            )
        )
        display._progress.refresh()
    text = out.getvalue()
    assert HOSTILE in text
    assert "\x1b]8;" not in text  # the OSC 8 escape that makes a hyperlink
    assert "\x1b[5m" not in text  # blink


def _result(status: str, counts: FileCounts) -> BatchResult:
    return BatchResult(
        vector_store_id="vs_1",
        batch_id=f"b_{status}",
        status=State(status),
        file_counts=counts,
        failed_files=(),
        failed_by_code={},
        failed_files_listed=counts.failed,
        failed_files_truncated=False,
        failed_files_complete=True,
        elapsed_seconds=1.0,
        finished_at=0.0,
    )


def test_a_finished_bar_is_green_only_for_a_clean_batch() -> None:
    """Failed files or a bad end make the bar red, a cancel makes it yellow, and only a clean
    batch is green."""
    cases = [
        ("completed", FileCounts(completed=10, total=10), CLEAN),
        ("completed", FileCounts(completed=8, failed=2, total=10), WITH_FAILURES),
        ("failed", FileCounts(completed=10, total=10), WITH_FAILURES),
        ("timed_out", FileCounts(completed=3, in_progress=7, total=10), WITH_FAILURES),
        ("cancelled", FileCounts(completed=3, cancelled=7, total=10), CANCELLED_STYLE),
        ("completed", FileCounts(completed=9, cancelled=1, total=10), CANCELLED_STYLE),
    ]
    for status, counts, style in cases:
        assert bar_style(_result(status, counts)) == style, (status, counts)


def test_a_cancelled_batch_shows_its_cancelled_files_and_a_stalled_one_no_eta() -> None:
    """The end of a cancelled batch names its cancelled files (80/80 alone hides them); a
    stalled batch shows no ETA; the bar of a batch with failed files is drawn red."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system="standard")
    display = ProgressDisplay(console)
    counts = FileCounts(completed=30, cancelled=50, total=80)
    with display:
        for batch in ("b_c", "b_s", "b_f"):
            display(WatchStarted(vector_store_id="vs_1", batch_id=batch))
        display(
            BatchFinished(
                vector_store_id="vs_1", batch_id="b_c", result=_result("cancelled", counts)
            )
        )
        stalled = FileCounts(completed=5, in_progress=5, total=10)
        display(
            BatchStalled(
                vector_store_id="vs_1", batch_id="b_s", file_counts=stalled, stalled_seconds=99
            )
        )
        failed = FileCounts(completed=8, failed=2, total=10)
        display(
            BatchProgressed(
                vector_store_id="vs_1",
                batch_id="b_f",
                status="in_progress",
                file_counts=failed,
                eta_seconds=0,
            )
        )
        display(
            BatchFinished(
                vector_store_id="vs_1", batch_id="b_f", result=_result("completed", failed)
            )
        )
        display._progress.refresh()
    lines = out.getvalue().split("\r")[-1].splitlines()
    [cancelled] = [line for line in lines if "vs_1/b_c" in line]
    assert "cancelled  30 completed, 0 failed, 50 cancelled" in cancelled
    [stall] = [line for line in lines if "vs_1/b_s" in line]
    assert "stalled" in stall
    assert "ETA" not in stall
    [with_failures] = [line for line in lines if "vs_1/b_f" in line]
    assert "\x1b[31m━" in with_failures  # the bar is red
    assert "\x1b[32m━" not in with_failures  # and not green
