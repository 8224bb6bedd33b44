"""The watch engine: runs every watch's lifecycle, and does its I/O.

One anyio task group owns a scheduler and a fixed pool of workers. The scheduler keeps one heap of
due times for all watches — a watch costs a heap entry and a record, not a task — and hands due
watches to the workers. A worker asks the lifecycle (:mod:`watcher.core.lifecycle`) what to do,
does it (a request through the shared client and budget, a write to the store), and feeds the
outcome back, until the lifecycle says to wait. Every rule about one watch is the lifecycle's;
the engine only schedules, sends, records and announces. Its bases hold the rest: the watch list
and the store it writes to (:mod:`.watch_list`), and one method per request (:mod:`.requests`).

One clock gives both due times and waits: the engine's (and its budget's) ``clock`` must be the
clock the event loop waits on. The default, ``time.monotonic``, is asyncio's (and cheaper to ask
than ``anyio.current_time``, which looks up the loop on each call); on trio's ``MockClock`` the
tests pass ``anyio.current_time``, and the engine runs hours in milliseconds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.abc
import httpx
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..api.budget import RequestBudget
from ..api.client import APIClient, ClientSettings, Exchange
from ..errors import AuthError, StoreUnavailable
from . import lifecycle, store_lifecycle
from .events import AuthFailed, AuthRecovered, Sink
from .file_names import FileNames
from .lifecycle import (
    Cancel,
    CreateRetry,
    Finish,
    Hold,
    ListFailedFiles,
    ListStuckFiles,
    Record,
    Retrieve,
    RetrieveStore,
    Step,
    Wait,
)
from .refusals import Refusals
from .requests import Requests
from .schedule import DueTimes, Entry, Ready
from .settings import EngineSettings
from .states import Phase
from .watch import Key, Watch
from .watch_list import WatchStore

log = structlog.get_logger("watcher.core.engine")


class Engine(Requests):
    """Watches batches. Run :meth:`run` in a task group; add and remove watches at any time."""

    def __init__(
        self,
        client: APIClient,
        budget: RequestBudget,
        settings: EngineSettings,
        *,
        sinks: Sequence[Sink] = (),
        store: WatchStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        #: Failed and stuck files' names, looked up once per file through the same client.
        self.names = FileNames(client)
        self.budget = budget
        self.settings = settings
        self._sinks = tuple(sinks)
        self._store = store
        self._clock = clock
        self._wall = wall
        self._rng = rng
        self._entries: dict[Key, Entry] = {}
        self._due = DueTimes(clock)
        self._wake = anyio.Event()
        self._active = 0
        self._idle = anyio.Event()
        self._idle.set()
        self.refusals = Refusals()
        self.last_success_at: float | None = None  # wall clock of the last good API reply
        self.last_tick = 0.0  # the scheduler's heartbeat, on the engine's clock
        self.polls = 0
        self.started = False

    @classmethod
    def create(
        cls,
        client_settings: ClientSettings,
        settings: EngineSettings,
        *,
        observer: Callable[[Exchange], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sinks: Sequence[Sink] = (),
        store: WatchStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        wall: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> Engine:
        """An engine with its own client and budget, made from the settings."""
        budget = RequestBudget(
            settings.max_requests_per_minute,
            settings.max_concurrency,
            max_pause=settings.poll.max_interval,
            clock=clock,
            sleep=sleep,
        )
        client = APIClient(client_settings, observer=observer, budget=budget, transport=transport)
        return cls(
            client, budget, settings, sinks=sinks, store=store, clock=clock, wall=wall, rng=rng
        )

    # -- refused credentials -----------------------------------------------------------------

    @property
    def auth_error(self) -> AuthError | None:
        """The API's refusal of the key itself, while it lasts."""
        return self.refusals.key_error

    def _hold(self, entry: Entry, error: AuthError) -> None:
        watch = entry.watch
        retry = self.settings.auth_retry_seconds
        if self.refusals.refuse(watch.vector_store_id, error, self._clock() + retry):
            self._emit(
                AuthFailed(
                    vector_store_id=watch.vector_store_id,
                    batch_id=watch.batch_id,
                    message=error.message,
                    http_status=error.status,
                    request_id=error.request_id,
                )
            )
        self._schedule(entry, retry)

    def _succeeded(self, probe: Watch) -> None:
        """A request for ``probe`` got a good reply: the credentials work for it (again)."""
        self.last_success_at = self._wall()
        now = self._clock()
        for scope in self.refusals.accept(probe.vector_store_id):
            self._emit(
                AuthRecovered(vector_store_id=probe.vector_store_id, batch_id=probe.batch_id)
            )
            # Everyone held back may poll again now; the budget spaces them.
            for entry in self._entries.values():
                watch = entry.watch
                in_scope = scope is None or watch.vector_store_id == scope
                if in_scope and watch.phase is not Phase.FINISHED and entry.due > now:
                    self._schedule(entry, 0.0)

    # -- running ---------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Poll until cancelled. The HTTP client is closed on the way out."""
        send, receive = anyio.create_memory_object_stream[tuple[Entry, int]](0)
        try:
            async with anyio.create_task_group() as tg, send, receive:
                for _ in range(self.settings.max_concurrency):
                    tg.start_soon(self._worker, receive.clone())
                self.started = True
                self.last_tick = self._clock()
                task_status.started()
                await self._scheduler(send)
        finally:
            self.started = False
            with anyio.CancelScope(shield=True):
                await self.client.aclose()

    async def _scheduler(self, send: MemoryObjectSendStream[tuple[Entry, int]]) -> None:
        ready = Ready(lambda entry: lifecycle.poll_settings(entry.watch, self.settings).interval)
        while True:
            now = self._clock()
            self.last_tick = now
            while (due := self._due.pop(now)) is not None:
                ready.add(due)
            entry = ready.take(now)
            if entry is not None:
                retry = self.settings.auth_retry_seconds
                held = self.refusals.wait(entry.watch.vector_store_id, now, retry)
                if held > 0:
                    self._schedule(entry, held + 0.001)
                    continue
                await self._hand_over(send, entry, entry.seq)
                continue
            self._wake = anyio.Event()
            with anyio.move_on_after(self._due.until_next(now, 1.0)):
                await self._wake.wait()

    async def _hand_over(
        self, send: MemoryObjectSendStream[tuple[Entry, int]], entry: Entry, seq: int
    ) -> None:
        """Give the watch to the next free worker. While every worker is busy (say, all held by a
        server's long Retry-After) the heartbeat goes on: waiting for the API is not being stuck.
        A hand-over cut short may still have reached a worker, and may then arrive twice;
        workers drop an entry whose ``seq`` is stale or whose watch is already busy."""
        try:
            send.send_nowait((entry, seq))  # a worker is waiting for it
            return
        except anyio.WouldBlock:
            pass
        while True:
            with anyio.move_on_after(1.0):
                await send.send((entry, seq))
                return
            self.last_tick = self._clock()

    def _schedule(self, entry: Entry, delay: float) -> None:
        if self._due.put(entry, delay):
            self._wake.set()

    async def _worker(self, receive: MemoryObjectReceiveStream[tuple[Entry, int]]) -> None:
        async with receive:
            while True:
                try:
                    try:
                        # When polls wait for the budget, the scheduler is already waiting
                        # with the next watch: take it without a trip through the event loop.
                        entry, seq = receive.receive_nowait()
                    except anyio.WouldBlock:
                        entry, seq = await receive.receive()
                except anyio.EndOfStream:
                    return
                if entry.seq != seq or entry.busy:
                    continue
                entry.busy = True
                try:
                    await self._turn(entry)
                except Exception as exc:  # a bug must cost one poll, never the watch or the daemon
                    if not isinstance(exc, StoreUnavailable):  # which said why, and is no bug
                        log.exception(
                            "internal_error",
                            vector_store_id=entry.watch.vector_store_id,
                            batch_id=entry.watch.batch_id,
                        )
                    if not entry.removed and entry.watch.phase is not Phase.FINISHED:
                        entry.watch, wait = lifecycle.crashed(
                            entry.watch, settings=self.settings, random=self._rng
                        )
                        self._schedule(entry, wait.delay)
                finally:
                    entry.busy = False

    # -- one turn of one watch ---------------------------------------------------------------

    async def _turn(self, entry: Entry) -> None:
        """Do what the lifecycle asks, feeding each outcome back, until it says to wait."""
        due = store_lifecycle.due if entry.watch.is_store else lifecycle.due
        step = due(entry.watch, wall=self._wall(), settings=self.settings)
        while True:
            if entry.removed:
                return
            action = step.action
            if isinstance(action, Finish):
                await self._finish(entry, step)
                return
            self._apply(entry, step)
            if isinstance(action, Wait):
                if action.pause_all is not None:
                    self.budget.pause(action.pause_all)
                entry.remaining = action.remaining
                self._schedule(entry, action.delay)
                return
            if isinstance(action, Hold):
                self._hold(entry, action.error)
                return
            if isinstance(action, Retrieve):
                step = await self._retrieve(entry)
            elif isinstance(action, RetrieveStore):
                step = await self._retrieve_store(entry)
            elif isinstance(action, ListFailedFiles):
                step = await self._list(entry.watch, action)
            elif isinstance(action, ListStuckFiles):
                step = await self._stuck(entry.watch, action)
            elif isinstance(action, CreateRetry):
                step = await self._create_retry(entry.watch, action)
            elif isinstance(action, Cancel):
                step = await self._cancel(entry.watch)

    def _apply(self, entry: Entry, step: Step) -> None:
        entry.watch = step.watch
        if self._store is not None and step.record is not Record.NOTHING:
            if step.record is Record.SAVE:
                self._store.save(step.watch)
            else:
                self._store.note_progress(step.watch)
        for event in step.events:
            self._emit(event)

    async def _finish(self, entry: Entry, step: Step) -> None:
        """On disk before anyone hears of it: a restart must never announce an end twice. Not
        on disk, not announced: the ending is tried again later, in full."""
        if self._store is not None:
            await self._store.save_finished(step.watch)
        if entry.removed:
            return
        entry.watch = step.watch
        self._set_active(-1)
        for event in step.events:
            self._emit(event)
