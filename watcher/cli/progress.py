"""A live progress bar per batch, for the ``watch`` command on a terminal.

Text from the server (a status) goes into the display as :class:`rich.text.Text`, never as
markup. A bar is green only for a batch that completed with no failed file.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.progress_bar import ProgressBar
from rich.text import Text

from ..api.models import FileCounts
from ..core.events import (
    BatchFinished,
    BatchProgressed,
    BatchStalled,
    Event,
    StoreFinished,
    StoreProgressed,
    WatchStarted,
)
from ..core.results import BatchResult
from ..core.states import State
from ..core.wording import eta_text, files_text

#: How a finished bar is drawn, by how the batch ended.
CLEAN, WITH_FAILURES, CANCELLED_STYLE = "green", "red", "yellow"


class _OutcomeBar(BarColumn):
    """A bar whose colour, once the batch has ended, says how it ended (``bar_style``)."""

    def render(self, task: Task) -> ProgressBar:
        bar = super().render(task)
        style = task.fields.get("bar_style")
        if style is not None:
            bar.complete_style = bar.finished_style = style
        return bar


class _TextField(ProgressColumn):
    """A task field holding :class:`Text`, shown as it is (no markup is read from it)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def render(self, task: Task) -> Text:
        value = task.fields.get(self._name)
        return value if isinstance(value, Text) else Text(str(value or ""))


class ProgressDisplay:
    """An engine sink that draws one bar per batch on stderr; log lines print above it."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            # Ids and statuses come from the server: shown as they are, never read as markup.
            TextColumn("{task.description}", markup=False),
            _OutcomeBar(),
            # Built-in columns: they show a batch whose size is not known yet without failing.
            TaskProgressColumn(),
            MofNCompleteColumn(),
            _TextField("detail"),
            console=console or Console(stderr=True),
            transient=False,
            redirect_stderr=True,
            refresh_per_second=4,
        )
        self._tasks: dict[tuple[str, str], TaskID] = {}

    def __enter__(self) -> ProgressDisplay:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    @property
    def live(self) -> bool:
        """Whether the bars are redrawn in place (on a terminal)."""
        return self._progress.live.is_started and self._progress.console.is_terminal

    def print_above(self, line: str) -> None:
        """Print ``line`` above the bars, where no redraw of them can overwrite it."""
        self._progress.console.print(
            line, markup=False, highlight=False, emoji=False, soft_wrap=True
        )

    def __call__(self, event: Event) -> None:
        key = (event.vector_store_id, event.batch_id)
        if isinstance(event, WatchStarted):
            # A store's watch has no batch id: its bar is named by the store alone.
            name = event.vector_store_id + (f"/{event.batch_id}" if event.batch_id else "")
            self._tasks[key] = self._progress.add_task(name, total=None, detail=Text("waiting"))
            return
        task = self._tasks.get(key)
        if task is None:
            return
        if isinstance(event, BatchProgressed | StoreProgressed):
            c = event.file_counts
            eta = event.eta_seconds if isinstance(event, BatchProgressed) else None
            detail = Text(event.status)
            detail.append(f"  {files_text(c)}  ETA {eta_text(eta)}")
            self._progress.update(
                task, total=c.expected or None, completed=c.finished, detail=detail
            )
        elif isinstance(event, BatchStalled):
            # No ETA while nothing moves: the last one was a promise the batch is not keeping.
            detail = Text(f"stalled  {files_text(event.file_counts)}  no progress")
            self._progress.update(task, detail=detail)
        elif isinstance(event, BatchFinished | StoreFinished):
            r = event.result
            detail = Text(r.status)
            if r.file_counts is not None:
                detail.append(f"  {files_text(r.file_counts)}")
            self._progress.update(task, detail=detail, bar_style=bar_style(r))


def bar_style(result: BatchResult) -> str:
    """Red for failed files or an end other than ``completed`` or ``cancelled``; yellow for a
    cancelled batch or cancelled files; green for the rest, a batch that completed cleanly."""
    counts = result.file_counts or FileCounts()
    ok_endings = (State.COMPLETED, State.CANCELLED)
    if counts.failed or result.failed_files_listed or result.status not in ok_endings:
        return WITH_FAILURES
    if counts.cancelled or result.status is State.CANCELLED:
        return CANCELLED_STYLE
    return CLEAN
