"""The requests a watch's turn makes, one method per action, each feeding its outcome back to
the lifecycle as the next :class:`~watcher.core.lifecycle.Step`.

:class:`Requests` is the I/O part of :class:`~watcher.core.engine.Engine`, which inherits it;
it stands on the watch list (:mod:`.watch_list`), and the engine adds the scheduling, the workers
and the refusals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from ..api.client import APIClient, Reply, file_page_limit
from ..api.models import IN_PROGRESS
from ..errors import AlreadyAttached, APIError, TooManyWatches
from . import lifecycle, store_lifecycle
from .failed_files import list_failed_files
from .file_names import FileNames
from .lifecycle import (
    CreateRetry,
    ListFailedFiles,
    ListStuckFiles,
    Step,
)
from .results import FileName
from .retry import (
    create_retry_batch,
    failed_files,
    idempotency_key,
    kept_failed_files,
    read_files,
    split,
    unsent,
)
from .schedule import Entry
from .watch import Watch
from .watch_list import WatchList

T = TypeVar("T")


class Requests(WatchList):
    """What the methods below need of the engine, besides its watch list."""

    client: APIClient
    names: FileNames
    polls: int
    _rng: Callable[[], float]

    def _succeeded(self, probe: Watch) -> None:
        """A request for ``probe`` got a good reply (the engine's refusals)."""
        raise NotImplementedError

    async def _retrieve(self, entry: Entry) -> Step:
        watch = entry.watch
        reply = self.client.retrieve_batch_reply(watch.vector_store_id, watch.batch_id)
        return await self._poll(entry, reply, lifecycle.failed, lifecycle.replied)

    async def _retrieve_store(self, entry: Entry) -> Step:
        reply = self.client.retrieve_store_reply(entry.watch.vector_store_id)
        return await self._poll(entry, reply, store_lifecycle.failed, store_lifecycle.replied)

    async def _poll(
        self,
        entry: Entry,
        request: Awaitable[Reply[T]],
        failed: Callable[..., Step],
        replied: Callable[..., Step],
    ) -> Step:
        """One poll: ``request`` sent, its outcome fed to the watch's rules (a batch's or a
        store's ``failed`` and ``replied``)."""
        watch = entry.watch
        self.polls += 1
        try:
            reply = await request
        except APIError as exc:
            return failed(
                watch,
                exc,
                now=self._clock(),
                wall=self._wall(),
                settings=self.settings,
                random=self._rng,
            )
        self._succeeded(watch)
        entry.polled_at = self._clock()
        return replied(
            watch,
            reply.value,
            poll_after=reply.meta.poll_after,
            now=self._clock(),
            wall=self._wall(),
            settings=self.settings,
            random=self._rng,
        )

    async def _list(self, watch: Watch, action: ListFailedFiles) -> Step:
        store = watch.is_store
        listed = store_lifecycle.listed if store else lifecycle.listed
        listing_failed = store_lifecycle.listing_failed if store else lifecycle.listing_failed
        try:
            listing = await list_failed_files(
                self.client,
                watch.vector_store_id,
                watch.batch_id,
                expected=action.expected,
                keep=self.settings.max_failed_files,
                # No more pages than the batch's files need (and a margin): a server that
                # invents ids forever is stopped there.
                max_pages=file_page_limit(
                    watch.file_counts.expected if watch.file_counts is not None else None,
                    cap=self.settings.max_file_pages,
                ),
            )
        except APIError as exc:
            return listing_failed(
                watch, exc, wall=self._wall(), settings=self.settings, random=self._rng
            )
        # A list read while the key was refused was the probe, and it proved the key.
        self._succeeded(watch)
        names = await self.names.look_up(f.id for f in listing.kept)
        kept = tuple(replace(f, name=names[f.id]) for f in listing.kept)
        return listed(watch, replace(listing, kept=kept), wall=self._wall())

    async def _stuck(self, watch: Watch, action: ListStuckFiles) -> Step:
        error: APIError | None = None
        named: list[tuple[str, FileName]] = []
        try:
            page = await self.client.batch_files_page(
                watch.vector_store_id, watch.batch_id, status=IN_PROGRESS, limit=action.limit
            )
        except APIError as exc:
            error = exc
        else:
            # Some servers ignore the filter: only a file still in progress is stuck.
            ids = [f.id for f in page if f.status == IN_PROGRESS][: action.limit]
            names = await self.names.look_up(ids)
            named = [(fid, names[fid]) for fid in ids]
        return lifecycle.stuck_listed(
            watch,
            action.then,
            named,
            error=error,
            now=self._clock(),
            wall=self._wall(),
            settings=self.settings,
        )

    async def _create_retry(self, watch: Watch, action: CreateRetry) -> Step:
        """Send the failed files again. The attempt is on disk before its first request; each
        request's Idempotency-Key follows from (store, batch, attempt, part), so a request sent
        again (after an error, or a restart) gets the batch it made, never a second one."""
        if self._store is not None:
            await self._store.save_now(watch)
        vs, batch = watch.key
        made: list[str] = []
        try:
            files = kept_failed_files(action.result, action.codes)
            if files is None:  # more failed files than the listing kept: read them all
                files = await failed_files(
                    self.client,
                    vs,
                    batch,
                    codes=action.codes,
                    max_pages=self.settings.max_file_pages,
                )
            for part, chunk in enumerate(split(files)):
                sending = [f async for f in read_files(self.client, vs, [f.id for f in chunk])]
                # Detaching is safe unless a batch of this attempt may exist already.
                detach = not action.sent_before or unsent(sending)
                key = idempotency_key(vs, batch, str(action.attempt), part)
                created = await create_retry_batch(self.client, vs, sending, key=key, detach=detach)
                made.append(created.id)
        except APIError as exc:
            unknown = isinstance(exc, AlreadyAttached) and action.sent_before
            return lifecycle.retry_failed(
                watch,
                action,
                exc,
                unknown=unknown,
                wall=self._wall(),
                settings=self.settings,
                random=self._rng,
            )
        by_code = Counter(f.last_error.code if f.last_error else "unknown" for f in files)
        unwatched: list[str] = []
        for new_id in made:
            # Saved with the original's end, in the same transaction (Engine._finish).
            try:
                self.add(
                    vs,
                    new_id,
                    labels=watch.labels,
                    options=watch.options,
                    retry_of=batch,
                    retry_attempt=action.attempt,
                )
            except TooManyWatches:
                unwatched.append(new_id)
        note = f"not watched (state.max_watches): {', '.join(unwatched)}" if unwatched else ""
        return lifecycle.retried(watch, action, made, by_code, wall=self._wall(), note=note)

    async def _cancel(self, watch: Watch) -> Step:
        error: APIError | None = None
        try:
            await self.client.cancel_batch(watch.vector_store_id, watch.batch_id)
        except APIError as exc:
            error = exc
        return lifecycle.cancelled(watch, error=error, wall=self._wall(), settings=self.settings)
