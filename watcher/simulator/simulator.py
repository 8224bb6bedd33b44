"""The simulated world: its batches, its clock, its key, its faults and what clients did.

Each batch (:mod:`.batch`) stores only its spec and a few moments; its progress and files are
computed from the clock when asked, so 10,000 batches of any size cost a few megabytes. What
really is, for tests and benchmarks, is :mod:`.truth`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from ..api.models import TERMINAL_STATUSES
from ..credentials import Secret
from .batch import (
    MAX_BATCH_FILES,
    BatchNotCancellable,
    BatchRefused,
    SimBatch,
    UnknownBatch,
    UnknownStore,
)
from .faults import ArmedFault, Fault, FaultBook
from .files import GENERATED_FILE
from .ratelimit import RateLimit, RateLimiter
from .scenario import CANCELLING, BatchSpec, Progress, expand_template
from .stats import SimStats
from .stores import StoreBatch, StoreSpec, store_json
from .truth import batch_truth


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
        created_batch_seconds: float = 2.0,
        created_batch_failures: float = 0.0,
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
        if not 0 <= created_batch_failures <= 1 or not created_batch_seconds >= 0:
            raise ValueError(
                "created_batch_failures must be within 0..1 and created_batch_seconds >= 0"
            )
        #: How a batch made by ``POST .../file_batches`` plays: its duration, and the share of its
        #: files that fail (0 to 1).
        self.created_batch_seconds = created_batch_seconds
        self.created_batch_failures = created_batch_failures
        self.stats = SimStats(wall_clock)
        self.faults = FaultBook(random.Random(seed))
        self._lock = threading.Lock()
        self._batches: dict[str, SimBatch] = {}
        #: Stores added with a spec, with their ``created_at``; batches may name others.
        self._stores: dict[str, tuple[StoreSpec, int]] = {}
        #: Files of created batches: the latest batch each was sent in.
        self._placed: dict[str, str] = {}
        #: (vector store, file) pairs detached by ``DELETE``.
        self._detached: set[tuple[str, str]] = set()
        #: Attributes and chunking strategy a created batch sent with each file.
        self._file_meta: dict[tuple[str, str], tuple[Any, Any]] = {}
        #: (vector store, Idempotency-Key) -> the batch that key created.
        self._idempotent: dict[tuple[str, str], str] = {}
        self._created = 0
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
                replace(spec, created_at=created_at, expired=True),
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

    # -- files, and batches made by the API --------------------------------------------------

    def locate_file(self, fid: str) -> tuple[SimBatch, int] | None:
        """The batch a file was last sent in, and its index there; None for an unknown id."""
        placed = self._placed.get(fid)
        if placed is not None:
            found = self._batches[placed]
            index = found.file_index(fid)
            return None if index is None else (found, index)
        match = GENERATED_FILE.fullmatch(fid)
        if match is None:
            return None
        generated = self._batches.get(match["batch"])
        if generated is None or generated.file_ids:
            return None
        index = generated.file_index(fid)
        return None if index is None else (generated, index)

    def store_file(self, vector_store_id: str, fid: str) -> tuple[SimBatch, int]:
        """The file as its store holds it. Raises :class:`UnknownBatch` if it is not attached."""
        located = self.locate_file(fid)
        if (
            located is None
            or located[0].spec.vector_store_id != vector_store_id
            or (vector_store_id, fid) in self._detached
        ):
            raise UnknownBatch(fid)
        return located

    def file_meta(self, vector_store_id: str, fid: str) -> tuple[Any, Any] | None:
        """The attributes and chunking strategy a created batch sent with the file."""
        return self._file_meta.get((vector_store_id, fid))

    def detach(self, vector_store_id: str, fid: str) -> None:
        """The file leaves the store (the file itself stays). Raises :class:`UnknownBatch`."""
        self.store_file(vector_store_id, fid)
        with self._lock:
            self._detached.add((vector_store_id, fid))

    def create_batch(
        self,
        vector_store_id: str,
        files: list[tuple[str, Any, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> SimBatch:
        """A new batch of existing files, ``(file_id, attributes, chunking_strategy)`` each, as
        ``POST .../file_batches`` makes it. The same ``idempotency_key`` (for the same store)
        returns the batch it made before, whatever else the request says. A file still attached
        to the store is refused (:class:`BatchRefused`): detach it first."""
        with self._lock:
            if idempotency_key is not None:
                earlier = self._idempotent.get((vector_store_id, idempotency_key))
                if earlier is not None:
                    return self._batches[earlier]
            if not files or len(files) > MAX_BATCH_FILES:
                raise BatchRefused(
                    f"A file batch holds 1 to {MAX_BATCH_FILES} files; got {len(files)}."
                )
            ids = [f[0] for f in files]
            if len(set(ids)) != len(ids):
                raise BatchRefused("A file batch may not hold the same file twice.")
            for fid in ids:
                if self.locate_file(fid) is None:
                    raise BatchRefused(f"No file found with id '{fid}'.")
            attached = [fid for fid in ids if self._attached(vector_store_id, fid)]
            if attached:
                more = f" (and {len(attached) - 1} more)" if len(attached) > 1 else ""
                raise BatchRefused(
                    f"File '{attached[0]}'{more} is already attached to vector store "
                    f"'{vector_store_id}'; detach it before adding it again.",
                    attached=True,
                )
            self._created += 1
            batch_id = f"vsfb_created{self._created:06d}"
            total = len(files)
            spec = BatchSpec(
                vector_store_id,
                batch_id,
                total_files=total,
                duration_seconds=self.created_batch_seconds,
                final_status="completed",
                failed_files=min(total, round(total * self.created_batch_failures)),
            )
            found = SimBatch(spec, self.clock(), int(self.wall_clock()), file_ids=tuple(ids))
            self._batches[batch_id] = found
            for fid, attributes, chunking in files:
                self._placed[fid] = batch_id
                self._detached.discard((vector_store_id, fid))
                self._file_meta[(vector_store_id, fid)] = (attributes, chunking)
            if idempotency_key is not None:
                self._idempotent[(vector_store_id, idempotency_key)] = batch_id
            return found

    def _attached(self, vector_store_id: str, fid: str) -> bool:
        located = self.locate_file(fid)
        return (
            located is not None
            and located[0].spec.vector_store_id == vector_store_id
            and (vector_store_id, fid) not in self._detached
        )

    # -- the truth, for tests and benchmarks ---------------------------------------------

    def truth(self, batch_id: str, *, failed_files: bool = True) -> dict[str, Any]:
        """What really is, whatever the API has been told to say."""
        return batch_truth(
            self.batch(batch_id),
            clock=self.clock,
            wall_clock=self.wall_clock,
            cancel_seconds=self.cancel_seconds,
            failed_files=failed_files,
        )
