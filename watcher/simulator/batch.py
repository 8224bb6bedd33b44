"""One simulated batch's state, and the ways the simulated API refuses a request about one.

A batch stores only its spec and a few moments (when it was added, when a client asked to
cancel it, when a reply first showed it terminal); its progress and files are computed from the
clock when asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from .files import file_id, file_index
from .scenario import BatchSpec, Progress, progress_at, terminal_after


class UnknownBatch(LookupError):
    """No such batch (or it vanished, or it belongs to another vector store)."""


class UnknownStore(LookupError):
    """No such vector store: no spec names it and no visible batch belongs to it."""


class BatchNotCancellable(ValueError):
    """The batch is already terminal."""


class BatchRefused(ValueError):
    """A new batch the API would refuse (400); ``attached``: because of a file still in the
    store."""

    def __init__(self, message: str, *, attached: bool = False) -> None:
        super().__init__(message)
        self.attached = attached


#: The most files one ``POST .../file_batches`` may carry.
MAX_BATCH_FILES = 2000


@dataclass(slots=True)
class SimBatch:
    """One batch's mutable state; everything else is computed from ``spec`` and the clock."""

    spec: BatchSpec
    added_at: float  # when its clock started: when it was added, or first asked for
    created_at: int
    cancel_requested: float | None = None
    vanished: bool = False
    seen_terminal_at: float | None = None
    started: bool = True  # False: its clock waits for the first request that asks for it
    #: A batch made by ``POST .../file_batches`` holds files that already exist: their ids.
    file_ids: tuple[str, ...] = ()

    def file_id(self, index: int) -> str:
        return self.file_ids[index] if self.file_ids else file_id(self.spec.batch_id, index)

    def file_index(self, candidate: str) -> int | None:
        """The index a file id stands for in this batch, or None if it is not one of its."""
        if not self.file_ids:
            return file_index(self.spec.batch_id, self.spec.total_files, candidate)
        try:
            return self.file_ids.index(candidate)
        except ValueError:
            return None

    def progress(self, now: float, cancel_seconds: float) -> Progress:
        return progress_at(
            self.spec,
            now - self.added_at if self.started else 0.0,
            cancel_requested=self.cancel_requested,
            cancel_seconds=cancel_seconds,
        )

    def terminal_at(self, cancel_seconds: float, now: float) -> float:
        """When it becomes terminal; for a batch whose clock has not started, as if it started
        ``now``."""
        after = terminal_after(
            self.spec, cancel_requested=self.cancel_requested, cancel_seconds=cancel_seconds
        )
        return (self.added_at if self.started else now) + after
