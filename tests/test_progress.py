"""The live progress display of the watch command."""

from __future__ import annotations

import io

from rich.console import Console

from watcher.api.models import FileCounts
from watcher.cli.progress import ProgressDisplay
from watcher.core.events import BatchProgressed, WatchStarted


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
    assert "failed 1" in text
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
