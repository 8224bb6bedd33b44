"""A live progress bar per batch, for the ``watch`` command on a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)

from ..core.events import (
    BatchFinished,
    BatchProgressed,
    Event,
    StoreFinished,
    StoreProgressed,
    WatchStarted,
)
from .report import eta_text


class ProgressDisplay:
    """An engine sink that draws one bar per batch on stderr; log lines print above it."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            # Ids and statuses come from the server: shown as they are, never read as markup.
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            # Built-in columns: they show a batch whose size is not known yet without failing.
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}", markup=False),
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
            name = event.vector_store_id + (f"/{event.batch_id}" if event.batch_id else "")
            self._tasks[key] = self._progress.add_task(name, total=None, detail="waiting")
            return
        task = self._tasks.get(key)
        if task is None:
            return
        if isinstance(event, BatchProgressed | StoreProgressed):
            c = event.file_counts
            eta = event.eta_seconds if isinstance(event, BatchProgressed) else None
            detail = f"{event.status}  failed {c.failed}  ETA {eta_text(eta)}"
            self._progress.update(
                task, total=c.expected or None, completed=c.finished, detail=detail
            )
        elif isinstance(event, BatchFinished | StoreFinished):
            r = event.result
            failed = r.file_counts.failed if r.file_counts else 0
            self._progress.update(task, detail=f"{r.status}  failed {failed}")
