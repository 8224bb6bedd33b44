"""The watch engine: polls every watched batch until it ends, then reports its failed files.

One anyio task group owns a scheduler and a fixed pool of workers. The scheduler keeps one heap of
due times for all watches — a watch costs a heap entry and a
:class:`~watcher.core.watch.Watch`, not a task — and hands due watches to the workers; every
request passes the shared :class:`~watcher.api.budget.RequestBudget`. When to poll next is
:func:`watcher.core.policy.next_poll`'s decision.
"""

from __future__ import annotations

import heapq
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..api.budget import RequestBudget
from ..api.client import APIClient, ClientSettings, Exchange, Reply
from ..api.models import FAILED, IN_PROGRESS, KNOWN_STATUSES, FileBatch
from ..config.model import DEFAULTS
from ..errors import (
    APIError,
    AuthError,
    NotFound,
    PaginationError,
    RateLimited,
    WatcherError,
)
from .events import (
    AuthFailed,
    AuthRecovered,
    BatchCancelRequested,
    BatchFinished,
    BatchProgressed,
    BatchResult,
    BatchResumed,
    BatchStalled,
    Event,
    FailedFile,
    FileFailedEvent,
    PollFailed,
    Sink,
    StatusUnknown,
    WatchRemoved,
    WatchStarted,
)
from .policy import Outcome, PollSettings, Progress, backoff, eta_seconds, next_poll
from .watch import Key, Phase, Watch, WatchOptions

log = structlog.get_logger("watcher.core.engine")

TIMED_OUT = "timed_out"
NOT_FOUND = "not_found"
#: The API kept rejecting the request (a plain 4xx, e.g. a missing ``api-version``).
REJECTED = "rejected"


class TooManyWatches(WatcherError):
    """The engine already holds its maximum number of watches."""


class WatchStore(Protocol):
    """Where watches outlive the process (the daemon's SQLite store)."""

    def save(self, watch: Watch) -> None:
        """Note the watch's latest state; may be written a little later."""

    def note_progress(self, watch: Watch) -> None:
        """The watch's counts or status moved; written at the next progress checkpoint, may be
        lost in a crash."""

    async def save_finished(self, watch: Watch) -> None:
        """Write the ended watch durably; returns once it is on disk."""

    def delete(self, key: Key) -> None:
        """Forget the watch."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Defaults for what the configuration sets are the configuration's (``DEFAULTS``)."""

    poll: PollSettings = field(default_factory=PollSettings)
    max_requests_per_minute: float = DEFAULTS.api.max_requests_per_minute
    max_concurrency: int = DEFAULTS.api.max_concurrency
    stall_after_seconds: float | None = DEFAULTS.poll.stall_after
    deadline_seconds: float | None = DEFAULTS.poll.deadline
    cancel_on_timeout: bool = DEFAULTS.poll.cancel_on_timeout
    max_watches: int = DEFAULTS.state.max_watches
    max_failed_files: int = DEFAULTS.state.max_failed_files
    max_list_attempts: int = 8  # failed attempts at listing a batch's files before giving up
    auth_retry_seconds: float = 30.0
    not_found_confirmations: int = 2
    rejections_to_end: int = 3  # consecutive plain-4xx replies that end a watch as rejected
    max_file_pages: int = 10_000


class Engine:
    """Watches batches. Run :meth:`run` in a task group; add and remove watches at any time."""

    def __init__(
        self,
        client_settings: ClientSettings,
        settings: EngineSettings | None = None,
        *,
        sinks: Sequence[Sink] = (),
        observers: Sequence[Callable[[Exchange], None]] = (),
        store: WatchStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: Callable[[], float] = random.random,
        transport: object | None = None,
    ) -> None:
        self.settings = settings or EngineSettings()
        self.budget = RequestBudget(
            self.settings.max_requests_per_minute,
            self.settings.max_concurrency,
            max_pause=self.settings.poll.max_interval,
            clock=clock,
            sleep=sleep,
        )
        self._observers = tuple(observers)
        self.client = APIClient(
            client_settings,
            observer=self._on_exchange,
            budget=self.budget,
            transport=transport,  # type: ignore[arg-type]
        )
        self._sinks: list[Sink] = list(sinks)
        self._store = store
        self._clock = clock
        self._wall = wall
        self._rng = rng
        self._watches: dict[Key, Watch] = {}
        self._heap: list[tuple[float, int, Watch]] = []
        self._seq = 0
        self._wake = anyio.Event()
        self._active = 0
        self._idle = anyio.Event()
        self._idle.set()
        self.auth_error: AuthError | None = None
        self._next_auth_probe = 0.0
        self.last_success_at: float | None = None  # wall clock of the last good API reply
        self.last_tick: float = clock()  # monotonic: the scheduler's heartbeat
        self.polls = 0
        self.started = False

    # -- the watch list --------------------------------------------------------------------

    def add(
        self,
        vector_store_id: str,
        batch_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        options: WatchOptions | None = None,
        restored: Watch | None = None,
    ) -> tuple[Watch, bool]:
        """Watch a batch. Returns the watch and whether it is new (False: already watched)."""
        key = (vector_store_id, batch_id)
        existing = self._watches.get(key)
        if existing is not None:
            return existing, False
        if len(self._watches) >= self.settings.max_watches:
            raise TooManyWatches(
                f"already watching {len(self._watches)} batches, the most allowed "
                f"(state.max_watches = {self.settings.max_watches})"
            )
        watch = restored or Watch(
            vector_store_id,
            batch_id,
            labels=labels,
            options=self._with_default_deadline(options),
            registered_at=self._wall(),
        )
        self._watches[key] = watch
        if watch.phase is not Phase.FINISHED:
            self._set_active(+1)
            watch.last_change = self._clock()
            self._schedule(watch, 0.0)
        if restored is None and self._store is not None:
            self._store.save(watch)
        self._emit(
            WatchStarted(
                vector_store_id=vector_store_id,
                batch_id=batch_id,
                labels=watch.labels,
                resumed=restored is not None,
            )
        )
        return watch, True

    def _with_default_deadline(self, options: WatchOptions | None) -> WatchOptions:
        options = options or WatchOptions()
        if options.deadline_seconds is None and self.settings.deadline_seconds:
            return WatchOptions(
                interval_seconds=options.interval_seconds,
                deadline_seconds=self.settings.deadline_seconds,
                cancel_on_timeout=options.cancel_on_timeout,
                stall_after_seconds=options.stall_after_seconds,
            )
        return options

    def remove(self, vector_store_id: str, batch_id: str) -> bool:
        watch = self._watches.pop((vector_store_id, batch_id), None)
        if watch is None:
            return False
        watch.removed = True
        if watch.phase is not Phase.FINISHED:
            self._set_active(-1)
        if self._store is not None:
            self._store.delete(watch.key)
        self._emit(WatchRemoved(vector_store_id=vector_store_id, batch_id=batch_id))
        return True

    def get(self, vector_store_id: str, batch_id: str) -> Watch | None:
        return self._watches.get((vector_store_id, batch_id))

    def watches(self) -> Iterable[Watch]:
        return self._watches.values()

    def __len__(self) -> int:
        return len(self._watches)

    def prune_finished(self, finished_before: float) -> list[Watch]:
        """Forget watches that ended before ``finished_before`` (wall clock)."""
        old = [
            w
            for w in self._watches.values()
            if w.finished_at is not None and w.finished_at < finished_before
        ]
        for watch in old:
            self.remove(watch.vector_store_id, watch.batch_id)
        return old

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    async def wait_idle(self) -> None:
        """Return once no watch is left unfinished."""
        await self._idle.wait()

    def _set_active(self, delta: int) -> None:
        self._active += delta
        if self._active == 0:
            self._idle.set()
        elif self._idle.is_set():
            self._idle = anyio.Event()

    # -- running ---------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Poll until cancelled. The HTTP client is closed on the way out."""
        send, receive = anyio.create_memory_object_stream[tuple[Watch, int]](0)
        try:
            async with anyio.create_task_group() as tg, send, receive:
                for _ in range(self.settings.max_concurrency):
                    tg.start_soon(self._worker, receive.clone())
                self.started = True
                task_status.started()
                await self._scheduler(send)
        finally:
            self.started = False
            with anyio.CancelScope(shield=True):
                await self.client.aclose()

    async def _scheduler(self, send: MemoryObjectSendStream[tuple[Watch, int]]) -> None:
        heap = self._heap
        while True:
            now = self._clock()
            self.last_tick = now
            if heap and heap[0][0] <= now:
                _, seq, watch = heapq.heappop(heap)
                if watch.seq != seq or watch.removed or watch.phase is Phase.FINISHED:
                    continue
                if self.auth_error is not None:
                    if now < self._next_auth_probe:
                        self._schedule(watch, self._next_auth_probe - now + 0.001)
                        continue
                    # One watch at a time asks whether the credentials work again.
                    self._next_auth_probe = now + self.settings.auth_retry_seconds
                await self._hand_over(send, watch, seq)
                continue
            timeout = min(heap[0][0] - now, 1.0) if heap else 1.0
            self._wake = anyio.Event()
            with anyio.move_on_after(timeout):
                await self._wake.wait()

    async def _hand_over(
        self, send: MemoryObjectSendStream[tuple[Watch, int]], watch: Watch, seq: int
    ) -> None:
        """Give the watch to the next free worker. While every worker is busy (say, all held by a
        server's long Retry-After) the heartbeat goes on: waiting for the API is not being stuck.
        A hand-over cut short may still have reached a worker, and may then arrive twice;
        workers drop an entry whose ``seq`` is stale or whose watch is already busy."""
        try:
            send.send_nowait((watch, seq))  # a worker is waiting for it
            return
        except anyio.WouldBlock:
            pass
        while True:
            with anyio.move_on_after(1.0):
                await send.send((watch, seq))
                return
            self.last_tick = self._clock()

    def _schedule(self, watch: Watch, delay: float) -> None:
        self._seq += 1
        watch.seq = self._seq
        watch.due = self._clock() + delay
        heapq.heappush(self._heap, (watch.due, self._seq, watch))
        if self._heap[0][2] is watch:
            self._wake.set()

    async def _worker(self, receive: MemoryObjectReceiveStream[tuple[Watch, int]]) -> None:
        async with receive:
            while True:
                try:
                    try:
                        # When polls wait for the budget, the scheduler is already waiting
                        # with the next watch: take it without a trip through the event loop.
                        watch, seq = receive.receive_nowait()
                    except anyio.WouldBlock:
                        watch, seq = await receive.receive()
                except anyio.EndOfStream:
                    return
                if watch.seq != seq or watch.busy:
                    continue
                watch.busy = True
                try:
                    await self._step(watch)
                except Exception:  # a bug must cost one poll, never the watch or the daemon
                    log.exception(
                        "internal_error",
                        vector_store_id=watch.vector_store_id,
                        batch_id=watch.batch_id,
                    )
                    watch.failures += 1
                    if not watch.removed and watch.phase is not Phase.FINISHED:
                        self._schedule(watch, backoff(self._poll_settings(watch), 3, self._rng))
                finally:
                    watch.busy = False

    # -- one step of one watch ---------------------------------------------------------------

    async def _step(self, watch: Watch) -> None:
        if watch.phase is Phase.LISTING:
            await self._finish(
                watch, watch.pending_status or watch.status or FAILED, note=watch.pending_note
            )
            return
        if watch.deadline_at is not None and self._wall() >= watch.deadline_at:
            await self._time_out(watch)
            return
        self.polls += 1
        try:
            reply = await self.client.retrieve_batch_reply(watch.vector_store_id, watch.batch_id)
        except NotFound as exc:
            watch.not_found_seen += 1
            if watch.not_found_seen >= self.settings.not_found_confirmations:
                watch.status = NOT_FOUND
                await self._finish(watch, NOT_FOUND, note=str(exc), list_files=False)
                return
            self._retry(watch, exc, Outcome.NOT_FOUND)
            return
        except AuthError as exc:
            self._auth_failed(watch, exc)
            return
        except APIError as exc:
            if type(exc) is APIError:  # a plain 4xx: the API rejects the request itself
                watch.rejections += 1
                if watch.rejections >= self.settings.rejections_to_end:
                    await self._finish(watch, REJECTED, note=str(exc), list_files=False)
                    return
            self._retry(watch, exc, _outcome(exc))
            return
        if watch.removed:
            return
        await self._observed(watch, reply)

    async def _observed(self, watch: Watch, reply: Reply[FileBatch]) -> None:
        batch = reply.value
        now, wall = self._clock(), self._wall()
        self._auth_ok(watch)
        watch.failures = 0
        watch.not_found_seen = 0
        watch.rejections = 0
        watch.last_poll_at = wall
        first_reply = watch.first_seen_at is None
        if first_reply:
            watch.first_seen_at = wall
            watch.last_change = now
        watch.created_at = batch.created_at
        counts = batch.file_counts
        changed = counts != watch.file_counts or batch.status != watch.status
        if changed:
            point = Progress(now, counts.finished)
            if watch.progress_first is None or (
                watch.file_counts is not None and counts.finished < watch.file_counts.finished
            ):
                watch.progress_first = point
            watch.progress_last = point
            watch.eta_seconds = eta_seconds(watch.progress_first, point, counts.expected)
            watch.last_change = now
            watch.file_counts = counts
            watch.status = batch.status
            if watch.stalled:
                watch.stalled = False
                self._emit(BatchResumed(**_ids(watch), file_counts=counts))
            self._emit(
                BatchProgressed(
                    **_ids(watch),
                    status=batch.status,
                    file_counts=counts,
                    eta_seconds=watch.eta_seconds,
                )
            )
            if self._store is not None:
                # Counts and status lost in a crash come back with the next poll; the first
                # reply's ``first_seen_at`` would not (a result's elapsed time starts there).
                if first_reply:
                    self._store.save(watch)
                else:
                    self._store.note_progress(watch)
        if batch.status not in KNOWN_STATUSES and watch.unknown_status_seen != batch.status:
            watch.unknown_status_seen = batch.status
            self._emit(StatusUnknown(**_ids(watch), status=batch.status))
        if batch.is_terminal:
            watch.phase = Phase.LISTING
            await self._finish(watch, batch.status)
            return
        stall_after = self._stall_after(watch)
        quiet = now - watch.last_change
        if (
            stall_after
            and not watch.stalled
            and batch.status == IN_PROGRESS
            and quiet >= stall_after
        ):
            watch.stalled = True
            self._emit(BatchStalled(**_ids(watch), file_counts=counts, stalled_seconds=quiet))
        decision = next_poll(
            self._poll_settings(watch),
            outcome=Outcome.OK,
            poll_after=reply.meta.poll_after,
            since_progress=quiet,
            until_deadline=self._until_deadline(watch),
            random=self._rng,
        )
        self._schedule(watch, decision.delay)

    def _retry(self, watch: Watch, exc: APIError, outcome: Outcome) -> None:
        watch.failures += 1
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        decision = next_poll(
            self._poll_settings(watch),
            outcome=outcome,
            failures=watch.failures,
            retry_after=retry_after,
            # Listing comes after the end is decided; a deadline that has passed would make
            # every retry of the list immediate, with no backoff at all.
            until_deadline=None if watch.phase is Phase.LISTING else self._until_deadline(watch),
            random=self._rng,
        )
        if isinstance(exc, RateLimited):
            # A 429 speaks for the key, not for one batch: everyone waits.
            self.budget.pause(retry_after if retry_after is not None else decision.delay)
        self._emit(
            PollFailed(
                **_ids(watch),
                error=type(exc).__name__,
                message=str(exc.message),
                http_status=exc.status,
                request_id=exc.request_id,
                retry_in=decision.delay,
            )
        )
        self._schedule(watch, decision.delay)

    # -- credentials -------------------------------------------------------------------------

    def _auth_failed(self, watch: Watch, exc: AuthError) -> None:
        first = self.auth_error is None
        self.auth_error = exc
        self._next_auth_probe = self._clock() + self.settings.auth_retry_seconds
        if first:
            self._emit(
                AuthFailed(
                    **_ids(watch),
                    message=exc.message,
                    http_status=exc.status,
                    request_id=exc.request_id,
                )
            )
        self._schedule(watch, self.settings.auth_retry_seconds)

    def _auth_ok(self, probe: Watch) -> None:
        """The credentials work (again): ``probe``'s poll just succeeded."""
        if self.auth_error is None:
            return
        self.auth_error = None
        self._emit(AuthRecovered(**_ids(probe)))
        # Everyone held back by the probe may poll again now; the budget spaces them.
        for watch in self._watches.values():
            if watch.phase is not Phase.FINISHED and watch.due > self._clock():
                self._schedule(watch, 0.0)

    # -- the end of a watch ------------------------------------------------------------------

    async def _time_out(self, watch: Watch) -> None:
        cancel = watch.options.cancel_on_timeout
        if cancel is None:
            cancel = self.settings.cancel_on_timeout
        note = "the deadline passed before the batch finished"
        if cancel:
            try:
                await self.client.cancel_batch(watch.vector_store_id, watch.batch_id)
            except APIError as exc:
                self._emit(BatchCancelRequested(**_ids(watch), ok=False, message=str(exc)))
                note += "; cancelling it failed"
            else:
                self._emit(BatchCancelRequested(**_ids(watch), ok=True))
                note += "; it was cancelled"
        watch.phase = Phase.LISTING
        await self._finish(watch, TIMED_OUT, note=note)

    async def _finish(
        self, watch: Watch, status: str, *, note: str = "", list_files: bool = True
    ) -> None:
        """List the failed files (all pages), then record and announce how the watch ended."""
        watch.phase = Phase.LISTING
        watch.pending_status, watch.pending_note = status, note
        counts = watch.file_counts
        kept: list[FailedFile] = []
        by_code: Counter[str] = Counter()
        listed = 0
        complete = True
        want_list = list_files and ((counts is not None and counts.failed > 0) or status == FAILED)
        if want_list:
            seen: set[str] = set()
            try:
                async for item in self.client.iter_batch_files(
                    watch.vector_store_id,
                    watch.batch_id,
                    status=FAILED,
                    max_pages=self.settings.max_file_pages,
                ):
                    if item.id in seen:
                        continue
                    seen.add(item.id)
                    listed += 1
                    by_code[item.last_error.code if item.last_error else "unknown"] += 1
                    if len(kept) < self.settings.max_failed_files:
                        kept.append(FailedFile(item.id, item.last_error))
            except AuthError as exc:
                self._auth_failed(watch, exc)
                return
            except (PaginationError, NotFound) as exc:
                complete = False
                note = _join(note, f"the failed-file list is incomplete: {exc}")
            except APIError as exc:
                if watch.failures + 1 < self.settings.max_list_attempts:
                    self._retry(watch, exc, _outcome(exc))
                    return
                complete = False
                note = _join(note, f"the failed-file list could not be read: {exc}")
            else:
                # A list read while the key was refused was the probe, and it proved the key.
                self._auth_ok(watch)
        wall = self._wall()
        first = watch.first_seen_at if watch.first_seen_at is not None else watch.registered_at
        result = BatchResult(
            vector_store_id=watch.vector_store_id,
            batch_id=watch.batch_id,
            status=status,
            file_counts=counts,
            failed_files=tuple(kept),
            failed_by_code=_bounded_codes(by_code),
            failed_files_listed=listed,
            failed_files_truncated=listed > len(kept),
            failed_files_complete=complete,
            elapsed_seconds=max(0.0, wall - first),
            finished_at=wall,
            labels=watch.labels,
            note=note,
        )
        if watch.removed:
            return
        watch.result = result
        watch.finished_at = wall
        watch.phase = Phase.FINISHED
        if self._store is not None:
            # On disk before anyone hears of it: a restart must never announce it twice.
            try:
                await self._store.save_finished(watch)
            except BaseException:
                # Not on disk, so not announced: the ending is tried again later, in full.
                watch.result, watch.finished_at, watch.phase = None, None, Phase.LISTING
                raise
        watch.stalled = False
        watch.eta_seconds = None
        self._set_active(-1)
        for failed in kept:
            self._emit(FileFailedEvent(**_ids(watch), file=failed))
        self._emit(BatchFinished(**_ids(watch), result=result))

    # -- small things ------------------------------------------------------------------------

    def _poll_settings(self, watch: Watch) -> PollSettings:
        interval = watch.options.interval_seconds
        if interval is None or interval == self.settings.poll.interval:
            return self.settings.poll
        s = self.settings.poll
        return PollSettings(
            interval=interval,
            min_interval=min(s.min_interval, interval),
            max_interval=max(s.max_interval, interval),
            slow_down=s.slow_down,
            slow_down_after=s.slow_down_after,
            slow_down_max_factor=s.slow_down_max_factor,
        )

    def _stall_after(self, watch: Watch) -> float | None:
        value = watch.options.stall_after_seconds
        return self.settings.stall_after_seconds if value is None else value

    def _until_deadline(self, watch: Watch) -> float | None:
        if watch.deadline_at is None:
            return None
        return watch.deadline_at - self._wall()

    def _on_exchange(self, exchange: Exchange) -> None:
        meta = exchange.meta
        if meta is not None:
            self.budget.observe(meta.rate_limit)
            if 200 <= meta.status < 300:
                self.last_success_at = self._wall()
        for observer in self._observers:
            try:
                observer(exchange)
            except Exception:
                log.exception("observer_failed")

    def _emit(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                log.exception("sink_failed", sink_event=type(event).__name__)


#: Distinct error codes kept per batch; the rest are counted under "other". The API has a
#: handful; a server that invents one per file must not invent as many metric series.
MAX_ERROR_CODES = 20


def _bounded_codes(by_code: Counter[str]) -> dict[str, int]:
    if len(by_code) <= MAX_ERROR_CODES:
        return dict(by_code)
    kept = dict(by_code.most_common(MAX_ERROR_CODES - 1))
    kept["other"] = kept.get("other", 0) + sum(by_code.values()) - sum(kept.values())
    return kept


def _outcome(exc: APIError) -> Outcome:
    return Outcome.RATE_LIMITED if isinstance(exc, RateLimited) else Outcome.TRANSIENT


def _ids(watch: Watch) -> dict[str, str]:
    return {"vector_store_id": watch.vector_store_id, "batch_id": watch.batch_id}


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b
