"""Objects many tests need, built one way."""

from __future__ import annotations

from watcher.core.events import BatchResult
from watcher.core.watch import Phase, Watch


def ended_watch(vector_store_id: str, batch_id: str, status: str = "completed") -> Watch:
    """A watch that ended with ``status`` at t=2, registered at t=1, with no failed files."""
    watch = Watch(vector_store_id, batch_id, registered_at=1.0)
    watch.result = BatchResult(
        vector_store_id=vector_store_id,
        batch_id=batch_id,
        status=status,
        file_counts=None,
        failed_files=(),
        failed_by_code={},
        failed_files_listed=0,
        failed_files_truncated=False,
        failed_files_complete=True,
        elapsed_seconds=1.0,
        finished_at=2.0,
    )
    watch.finished_at, watch.phase = 2.0, Phase.FINISHED
    return watch
