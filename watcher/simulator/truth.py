"""The truth about a simulated batch, for tests and benchmarks: what really is, whatever the
API has been told to say (``GET /_sim/batches/{id}`` and :meth:`.Simulator.truth`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .batch import SimBatch
from .files import failed_indices
from .scenario import file_error


def batch_truth(
    found: SimBatch,
    *,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
    cancel_seconds: float,
    failed_files: bool = True,
) -> dict[str, Any]:
    """The batch as it really is now: status, counts, when it ends and when a client saw it
    end (on ``clock`` and as Unix times), and its failed files with their errors."""

    def unix(moment: float) -> float:
        return wall_clock() - (now - moment)

    spec = found.spec
    now = clock()
    progress = found.progress(now, cancel_seconds)
    terminal_at = found.terminal_at(cancel_seconds, now) if found.started else None
    out: dict[str, Any] = {
        "id": spec.batch_id,
        "vector_store_id": spec.vector_store_id,
        "status": progress.status,
        "file_counts": progress.file_counts.as_dict(),
        "created_at": found.created_at,
        "started": found.started,
        "terminal_at": terminal_at,
        "terminal_at_unix": None if terminal_at is None else unix(terminal_at),
        "seen_terminal_at": found.seen_terminal_at,
        "seen_terminal_at_unix": (
            unix(found.seen_terminal_at) if found.seen_terminal_at is not None else None
        ),
        "cancel_requested": found.cancel_requested is not None,
        "vanished": found.vanished,
    }
    if failed_files:
        out["failed_files"] = [
            {"id": found.file_id(i), **file_error(spec, i).as_dict()}
            for i in failed_indices(spec, progress)
        ]
    return out
