"""What a store has been told to write and has not written yet, and how a write takes it and,
should the write fail, gives it back.

No I/O: :class:`~watcher.store.sqlite.SQLiteStore` notes here on the event loop, takes what is
noted in one piece for a transaction, and gives back what failed to write. Nothing noted is ever
dropped, and nothing older overwrites what was noted since.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.watch import Key, Watch
from .codec import Row, encode


@dataclass(slots=True)
class Taken:
    """What was noted, taken to be written in one transaction."""

    dirty: dict[Key, Row]
    deleted: set[Key]
    deliveries: list[tuple[Key, str]]
    # Noted progress (at a checkpoint), and the rows made of it: newer than ``dirty``'s.
    progress: dict[Key, Watch] = field(default_factory=dict)
    progress_rows: list[Row] = field(default_factory=list)
    failure: BaseException | None = None


class PendingWrites:
    """Saved rows, deletions, noted progress and webhook deliveries not yet written."""

    __slots__ = ("deleted", "deliveries", "dirty", "progress")

    def __init__(self) -> None:
        self.dirty: dict[Key, Row] = {}
        self.deleted: set[Key] = set()
        # Watches whose progress moved since the last checkpoint; their rows are made when taken.
        self.progress: dict[Key, Watch] = {}
        # Webhook payloads of finished watches, written in the transaction that writes the watch.
        self.deliveries: list[tuple[Key, str]] = []

    def counts(self) -> dict[str, int]:
        return {
            "saved": len(self.dirty),
            "deleted": len(self.deleted),
            "progress": len(self.progress),
            "deliveries": len(self.deliveries),
        }

    def any(self, *, progress: bool) -> bool:
        """Whether there is something to write (noted progress only with ``progress``)."""
        return bool(self.dirty or self.deleted or self.deliveries or (progress and self.progress))

    def save(self, watch: Watch) -> None:
        self.deleted.discard(watch.key)
        self.progress.pop(watch.key, None)  # the row made now is newer
        self.dirty[watch.key] = encode(watch)

    def note_progress(self, watch: Watch) -> None:
        self.progress[watch.key] = watch

    def delete(self, key: Key) -> None:
        self.dirty.pop(key, None)
        self.progress.pop(key, None)
        self.deleted.add(key)
        if self.deliveries:
            # A finished watch not yet written was never announced: once it is deleted, it
            # never will be. (A delivery written already stays: its batch was announced.)
            self.deliveries = [d for d in self.deliveries if d[0] != key]

    def forget(self, key: Key) -> None:
        """Write nothing more of this watch, and delete nothing (it is someone else's now)."""
        self.dirty.pop(key, None)
        self.progress.pop(key, None)
        self.deleted.discard(key)
        if self.deliveries:
            self.deliveries = [d for d in self.deliveries if d[0] != key]

    def deliver(self, key: Key, payload: str) -> None:
        self.deliveries.append((key, payload))

    def take(self, *, progress: bool) -> Taken:
        taken = Taken(self.dirty, self.deleted, self.deliveries)
        self.dirty, self.deleted, self.deliveries = {}, set(), []
        if progress and self.progress:
            taken.progress, self.progress = self.progress, {}
            # Made here, not in the writer thread: the engine changes these watches meanwhile.
            taken.progress_rows = [encode(watch) for watch in taken.progress.values()]
        return taken

    def give_back(self, taken: Taken) -> None:
        # Nothing noted is dropped: what failed to write is noted again, unless newer. Progress
        # first, while ``dirty`` and ``deleted`` hold only what was noted since the take.
        for k, watch in taken.progress.items():
            if k not in self.dirty and k not in self.deleted:
                self.progress.setdefault(k, watch)
        # A watch deleted since the take stays deleted, and its unwritten delivery goes with it.
        deleted = self.deleted
        for k, row in taken.dirty.items():
            if k not in deleted:
                self.dirty.setdefault(k, row)
        self.deliveries[:0] = [d for d in taken.deliveries if d[0] not in deleted]
        self.deleted |= taken.deleted - self.dirty.keys()
