"""The simulated world: its batches, its clock, its key, its faults and what clients did.

Each batch stores only its spec and a few moments (when it was added, when a client asked to
cancel it, when a reply first showed it terminal); its progress and files are computed from the
clock when asked, so 10,000 batches of any size cost a few megabytes.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..api.models import TERMINAL_STATUSES
from ..credentials import Secret
from .faults import ArmedFault, Fault, FaultBook
from .files import failed_indices, file_id
from .ratelimit import RateLimit, RateLimiter
from .scenario import (
    CANCELLING,
    BatchSpec,
    Progress,
    expand_template,
    file_error,
    progress_at,
    terminal_after,
)
from .stats import SimStats
from .stores import StoreBatch, StoreSpec, store_json


class UnknownBatch(LookupError):
    """No such batch (or it vanished, or it belongs to another vector store)."""


class UnknownStore(LookupError):
    """No such vector store: no spec names it and no visible batch belongs to it."""


class BatchNotCancellable(ValueError):
    """The batch is already terminal."""


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


class Simulator:
    """A fake of the vector-store file-batch API, to be served by :class:`~.app.SimulatorApp`.

    ``clock`` drives batch progress, cancellation and the rate-limit window (tests pass a fake);
    ``wall_clock`` gives ``created_at`` and the Unix times in :meth:`truth`. With
    ``clock_from_first_poll``, a batch's clock starts at the first API request that asks for it
    (its first poll) instead of when it is added, so a batch nobody watched yet has not ended.
    """

    def __init__(
        self,
        batches: Iterable[BatchSpec] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        api_key: str | None = None,
        required_query: Mapping[str, str | None] | None = None,
        poll_after_ms: int | None = None,
        cancel_seconds: float = 0.5,
        rate_limit: RateLimit | None = None,
        seed: int = 0,
        clock_from_first_poll: bool = False,
    ) -> None:
        self.clock = clock
        self.clock_from_first_poll = clock_from_first_poll
        self.wall_clock = wall_clock
        #: Query parameters every API request must carry (a value of None accepts any value).
        self.required_query: dict[str, str | None] = dict(required_query or {})
        #: Default ``openai-poll-after-ms`` for batch replies; None sends no header.
        self.poll_after_ms = poll_after_ms
        #: How long a cancelled batch stays ``cancelling``.
        self.cancel_seconds = cancel_seconds
        self.stats = SimStats(wall_clock)
        self.faults = FaultBook(random.Random(seed))
        self._lock = threading.Lock()
        self._batches: dict[str, SimBatch] = {}
        #: Stores added with a spec, with their ``created_at``; batches may name others.
        self._stores: dict[str, tuple[StoreSpec, int]] = {}
        self._api_key: Secret | None = None
        self._rate_limiter: RateLimiter | None = None
        self.set_api_key(api_key)
        self.set_rate_limit(rate_limit)
        self.add_batches(batches)

    # -- configuration --------------------------------------------------------------------

    @property
    def api_key(self) -> Secret | None:
        return self._api_key

    def set_api_key(self, key: str | None) -> None:
        """Require this key from now on (None: no auth). Takes effect on the next request."""
        self._api_key = Secret(key) if key else None

    @property
    def rate_limiter(self) -> RateLimiter | None:
        return self._rate_limiter

    def set_rate_limit(self, limit: RateLimit | None) -> None:
        """Limit API requests globally (None: no limit, and no rate-limit headers)."""
        self._rate_limiter = RateLimiter(limit) if limit is not None else None

    def inject(self, fault: Fault, batch_id: str | None = None) -> ArmedFault:
        """Arm a fault for one batch's requests, or for every API request."""
        return self.faults.arm(fault, batch_id)

    def clear_faults(self, batch_id: str | None = None) -> int:
        return self.faults.clear(batch_id)

    # -- batches --------------------------------------------------------------------------

    def add_batch(self, spec: BatchSpec) -> str:
        """Add a batch; it starts now (plus its ``start_delay_seconds``)."""
        now = self.clock()
        created_at = spec.created_at if spec.created_at is not None else int(self.wall_clock())
        with self._lock:
            if spec.batch_id in self._batches:
                raise ValueError(f"batch {spec.batch_id!r} already exists")
            self._batches[spec.batch_id] = SimBatch(
                spec, now, created_at, started=not self.clock_from_first_poll
            )
        for fault in spec.faults:
            self.faults.arm(fault, spec.batch_id)
        return spec.batch_id

    def add_batches(self, specs: Iterable[BatchSpec]) -> tuple[str, ...]:
        return tuple(self.add_batch(spec) for spec in specs)

    def add_template(
        self,
        count: int,
        template: BatchSpec,
        prefix: str = "vsfb_load_",
        *,
        vector_store_id: str | None = None,
        start_jitter_seconds: float = 0.0,
        duration_jitter: float = 0.0,
        seed: int = 0,
    ) -> tuple[str, ...]:
        """Add ``count`` batches made from ``template``; see :func:`.scenario.expand_template`."""
        specs = expand_template(
            template,
            count,
            prefix=prefix,
            vector_store_id=vector_store_id,
            start_jitter_seconds=start_jitter_seconds,
            duration_jitter=duration_jitter,
            seed=seed,
        )
        return self.add_batches(specs)

    def batch_ids(self) -> list[str]:
        with self._lock:
            return list(self._batches)

    def find(self, batch_id: str) -> SimBatch | None:
        """The batch, vanished or not, or None."""
        return self._batches.get(batch_id)

    def batch(self, batch_id: str) -> SimBatch:
        """The batch, vanished or not. Raises :class:`UnknownBatch`."""
        try:
            return self._batches[batch_id]
        except KeyError:
            raise UnknownBatch(batch_id) from None

    def visible(self, vector_store_id: str, batch_id: str) -> SimBatch:
        """The batch as the API sees it, its clock started if it was waiting for a request.
        Raises :class:`UnknownBatch`."""
        found = self._batches.get(batch_id)
        if found is None or found.vanished or found.spec.vector_store_id != vector_store_id:
            raise UnknownBatch(batch_id)
        if not found.started:
            with self._lock:
                if not found.started:
                    found.added_at, found.started = self.clock(), True
        return found

    def progress(self, batch_id: str) -> Progress:
        return self.batch(batch_id).progress(self.clock(), self.cancel_seconds)

    def terminal_at(self, vector_store_id: str, batch_id: str) -> float:
        """The moment (on ``clock``) the batch becomes terminal, exactly."""
        found = self.batch(batch_id)
        if found.spec.vector_store_id != vector_store_id:
            raise UnknownBatch(batch_id)
        return found.terminal_at(self.cancel_seconds, self.clock())

    def cancel(self, vector_store_id: str, batch_id: str) -> Progress:
        """Ask to cancel, as the API's cancel endpoint does; returns the batch after it."""
        found = self.visible(vector_store_id, batch_id)
        now = self.clock()
        with self._lock:
            current = found.progress(now, self.cancel_seconds)
            if current.status in TERMINAL_STATUSES:
                raise BatchNotCancellable(current.status)
            if current.status != CANCELLING:
                found.cancel_requested = now - found.added_at
        return found.progress(now, self.cancel_seconds)

    def vanish(self, batch_id: str) -> None:
        """From now on the API answers 404 for this batch."""
        self.batch(batch_id).vanished = True

    def saw_terminal(self, found: SimBatch) -> None:
        """A reply just showed the batch terminal to a client."""
        if found.seen_terminal_at is None:
            found.seen_terminal_at = self.clock()

    # -- vector stores ----------------------------------------------------------------------

    def add_store(self, spec: StoreSpec) -> str:
        """Describe a store (its name, its expiry); its files are its batches'."""
        created_at = spec.created_at if spec.created_at is not None else int(self.wall_clock())
        with self._lock:
            if spec.vector_store_id in self._stores:
                raise ValueError(f"store {spec.vector_store_id!r} already exists")
            self._stores[spec.vector_store_id] = (spec, created_at)
        return spec.vector_store_id

    def expire_store(self, vector_store_id: str) -> None:
        """From now on the store says ``expired``."""
        spec, created_at = self._store_spec(vector_store_id)
        with self._lock:
            self._stores[vector_store_id] = (
                StoreSpec(
                    spec.vector_store_id,
                    name=spec.name,
                    created_at=created_at,
                    expires_after_days=spec.expires_after_days,
                    expired=True,
                ),
                created_at,
            )

    def store_ids(self) -> list[str]:
        """Every store the API lists: those described, then those only batches name, in the
        order they first appeared."""
        with self._lock:
            ids = dict.fromkeys(self._stores)
            for found in self._batches.values():
                if not found.vanished:
                    ids.setdefault(found.spec.vector_store_id)
        return list(ids)

    def store_batches(self, vector_store_id: str) -> list[StoreBatch]:
        """The store's visible batches as they are now, in the order they were added."""
        now = self.clock()
        with self._lock:
            found = [
                b
                for b in self._batches.values()
                if b.spec.vector_store_id == vector_store_id and not b.vanished
            ]
        return [
            StoreBatch(b.spec, b.progress(now, self.cancel_seconds), b.created_at) for b in found
        ]

    def store(self, vector_store_id: str) -> dict[str, Any]:
        """The store as ``GET /vector_stores/{id}`` shows it. Raises :class:`UnknownStore`."""
        spec, created_at = self._store_spec(vector_store_id)
        batches = self.store_batches(vector_store_id)
        return store_json(spec, batches, created_at=created_at, wall=self.wall_clock())

    def _store_spec(self, vector_store_id: str) -> tuple[StoreSpec, int]:
        known = self._stores.get(vector_store_id)
        if known is not None:
            return known
        batches = [
            b
            for b in self._batches.values()
            if b.spec.vector_store_id == vector_store_id and not b.vanished
        ]
        if not batches:
            raise UnknownStore(vector_store_id)
        return StoreSpec(vector_store_id), min(b.created_at for b in batches)

    # -- the truth, for tests and benchmarks ---------------------------------------------

    def truth(self, batch_id: str, *, failed_files: bool = True) -> dict[str, Any]:
        """What really is, whatever the API has been told to say."""
        found = self.batch(batch_id)
        spec = found.spec
        now = self.clock()
        progress = found.progress(now, self.cancel_seconds)
        terminal_at = found.terminal_at(self.cancel_seconds, now) if found.started else None
        out: dict[str, Any] = {
            "id": spec.batch_id,
            "vector_store_id": spec.vector_store_id,
            "status": progress.status,
            "file_counts": progress.file_counts.as_dict(),
            "created_at": found.created_at,
            "started": found.started,
            "terminal_at": terminal_at,
            "terminal_at_unix": None if terminal_at is None else self._unix(terminal_at, now),
            "seen_terminal_at": found.seen_terminal_at,
            "seen_terminal_at_unix": (
                self._unix(found.seen_terminal_at, now)
                if found.seen_terminal_at is not None
                else None
            ),
            "cancel_requested": found.cancel_requested is not None,
            "vanished": found.vanished,
        }
        if failed_files:
            out["failed_files"] = [
                {"id": file_id(spec.batch_id, i), **file_error(spec, i).as_dict()}
                for i in failed_indices(spec, progress)
            ]
        return out

    def _unix(self, moment: float, now: float) -> float:
        return self.wall_clock() - (now - moment)
