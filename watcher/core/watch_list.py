"""The engine's watch list: which watches it holds, adding and removing them, and the store
they are written to. :class:`WatchList` is the base of :class:`~watcher.core.engine.Engine`,
which schedules and polls what the list holds (through :class:`~watcher.core.requests.Requests`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Final, Protocol

import anyio
import structlog

from ..errors import TooManyWatches
from . import lifecycle
from .events import Event, WatchForgotten, WatchRemoved, WatchStarted
from .schedule import Entry
from .settings import EngineSettings
from .states import Phase
from .watch import STORE, Key, Watch, WatchOptions

log = structlog.get_logger("watcher.core.engine")

_DEFAULT_OPTIONS: Final = WatchOptions()


@functools.lru_cache(maxsize=4)
def _common_options(deadline_seconds: float | None) -> WatchOptions:
    return WatchOptions(deadline_seconds=deadline_seconds)


class WatchStore(Protocol):
    """Where watches outlive the process; see :mod:`watcher.store`."""

    def save(self, watch: Watch) -> None:
        """Note the watch's latest state; written within a second or so."""

    def note_progress(self, watch: Watch) -> None:
        """The watch's counts or status moved; written at the next progress checkpoint, may be
        lost in a crash."""

    async def save_finished(self, watch: Watch) -> None:
        """Write the ended watch durably; returns once it is on disk."""

    def delete(self, key: Key) -> None:
        """Forget the watch."""

    async def save_now(self, watch: Watch) -> None:
        """Write the watch (and everything saved before it) durably; returns once on disk."""


class WatchList:
    """The watches the engine holds, each as an :class:`~.schedule.Entry`."""

    settings: EngineSettings
    _store: WatchStore | None
    _sinks: tuple[Callable[[Event], None], ...]
    _clock: Callable[[], float]
    _wall: Callable[[], float]
    _entries: dict[Key, Entry]
    _active: int
    _idle: anyio.Event

    def _schedule(self, entry: Entry, delay: float) -> None:
        """Make the entry due in ``delay`` seconds (the engine's scheduler)."""
        raise NotImplementedError

    # -- the list --------------------------------------------------------------------

    def add(
        self,
        vector_store_id: str,
        batch_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        options: WatchOptions | None = None,
        restored: Watch | None = None,
        until_idle: bool = False,
        retry_of: str | None = None,
        retry_attempt: int = 0,
    ) -> tuple[Watch, bool]:
        """Watch a batch, or with ``batch_id`` :data:`~.watch.STORE` a whole vector store (until
        no file of it is in progress, with ``until_idle``; else for as long as it lives).
        ``retry_of``: the batch whose failed files this one sends again, as retry
        ``retry_attempt`` of its chain. Returns the watch and whether it is new (False: already
        watched)."""
        vector_store_id = sys.intern(vector_store_id)  # one string per store, in the key too
        key = (vector_store_id, batch_id)
        existing = self._entries.get(key)
        if existing is not None:
            return existing.watch, False
        finished = restored is not None and restored.phase is Phase.FINISHED
        if not finished and self._active >= self.settings.max_watches:
            # Finished watches wait for retention and cost no polling: they do not count.
            raise TooManyWatches(
                f"already watching {self._active} unfinished batches, the most allowed "
                f"(state.max_watches = {self.settings.max_watches})"
            )
        watch = restored or replace(
            Watch.new(
                vector_store_id,
                batch_id,
                registered_at=self._wall(),
                labels=labels,
                options=self.options_for(batch_id, options, until_idle=until_idle),
            ),
            retry_of=retry_of,
            retry_attempt=retry_attempt,
        )
        if until_idle and restored is None:
            watch = replace(watch, until_idle=True)
        entry = Entry(watch)
        self._entries[key] = entry
        if not finished:
            self._set_active(+1)
            step = lifecycle.start(watch, now=self._clock())
            entry.watch = step.watch
            self._schedule(entry, 0.0)
        if restored is None and self._store is not None:
            self._store.save(entry.watch)
        self._emit(
            WatchStarted(
                vector_store_id=vector_store_id,
                batch_id=batch_id,
                labels=watch.labels,
                resumed=restored is not None,
            )
        )
        return entry.watch, True

    def options_for(
        self, batch_id: str, options: WatchOptions | None, *, until_idle: bool = False
    ) -> WatchOptions:
        """A new watch's options: the engine's default deadline unless it has its own, but
        for a store watched for as long as it lives, which has no deadline but its own."""
        if batch_id == STORE and not until_idle:
            return self._shared(options or _DEFAULT_OPTIONS)
        return self._with_default_deadline(options)

    def _with_default_deadline(self, options: WatchOptions | None) -> WatchOptions:
        options = options or _DEFAULT_OPTIONS
        if options.deadline_seconds is None and self.settings.deadline_seconds:
            options = replace(options, deadline_seconds=self.settings.deadline_seconds)
        return self._shared(options)

    def _shared(self, options: WatchOptions) -> WatchOptions:
        """The options most watches have (none of their own, perhaps with the default deadline)
        as one object for all of them, not one a watch (some 70 bytes each at 10,000)."""
        common = _common_options(self.settings.deadline_seconds or None)
        if options == common:
            return common
        return _DEFAULT_OPTIONS if options == _DEFAULT_OPTIONS else options

    def remove(self, vector_store_id: str, batch_id: str) -> bool:
        """Stop watching the batch and delete it from the store."""
        return self._drop((vector_store_id, batch_id), forget=False)

    def forget(self, key: Key) -> bool:
        """Stop scheduling and exporting the watch here, without touching the store: it lives
        on elsewhere (fleet mode: another replica owns it now, or it was deleted there). A turn
        under way writes and announces nothing more of it."""
        return self._drop(key, forget=True)

    def _drop(self, key: Key, *, forget: bool) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        entry.removed = True
        if entry.watch.phase is not Phase.FINISHED:
            self._set_active(-1)
        if self._store is not None and not forget:
            self._store.delete(key)
        event = WatchForgotten if forget else WatchRemoved
        self._emit(event(vector_store_id=key[0], batch_id=key[1]))
        return True

    def get(self, vector_store_id: str, batch_id: str) -> Watch | None:
        entry = self._entries.get((vector_store_id, batch_id))
        return None if entry is None else entry.watch

    def watches(self) -> Iterable[Watch]:
        return (entry.watch for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def unfinished(self) -> int:
        """Watches not yet ended: what ``state.max_watches`` bounds."""
        return self._active

    def prune_finished(self, finished_before: float) -> list[Watch]:
        """Forget watches that ended before ``finished_before`` (wall clock)."""
        old = [
            e.watch
            for e in self._entries.values()
            if e.watch.finished_at is not None and e.watch.finished_at < finished_before
        ]
        for watch in old:
            self.remove(watch.vector_store_id, watch.batch_id)
        return old

    async def wait_idle(self) -> None:
        """Return once no watch is left unfinished."""
        await self._idle.wait()

    def _set_active(self, delta: int) -> None:
        self._active += delta
        if self._active == 0:
            self._idle.set()
        elif self._idle.is_set():
            self._idle = anyio.Event()

    def _emit(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                log.exception("sink_failed", sink_event=type(event).__name__)
