"""How the pages are served without starving the event loop that polls and answers probes.

On the loop a page request only takes the engine's watches — immutable records, so a tuple of
them is a snapshot — at most once per ``ttl`` however many ask. A worker thread works out each
one's state (once per snapshot), filters, sorts, pages and renders; one render runs at a time,
and a page rendered for a URL is served again to everyone who asks for that URL within ``ttl``.
Sixteen clients reloading the pages as fast as they can cost the loop a snapshot a second and a
few cache look-ups, not sixteen renders of 10,000 rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Final

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..config import validate_id
from ..core.engine import Engine
from ..core.policy import PollSettings
from ..core.watch import Key, Watch
from ..errors import StoreUnavailable
from ..fleet.roster import Listed, Ownership
from ..logs import secret_values
from .fleet_view import FleetView, Listing
from .history import BatchHistory
from .status_page import render_batch, render_problem, render_status, templates
from .status_query import QueryError, parse_query
from .status_state import Fleet

#: How long a snapshot and a rendered page are served again. The page reloads every 5 s.
TTL_SECONDS: Final = 1.0
MAX_CACHED_PAGES: Final = 64

#: The pages load nothing from elsewhere and run no script; inline styles draw the bars.
HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(slots=True)
class _Taken:
    """The watches as they were at ``at`` (monotonic); their states are worked out once, in a
    worker thread (renders run one at a time, so never two at once)."""

    at: float
    watches: tuple[Watch, ...]  # the batches (a store's page is its own)
    stores: tuple[Watch, ...]
    poll: PollSettings
    wall: float
    auth_error: str | None
    last_success_at: float | None
    owners: Mapping[Key, Ownership] | None = None  # fleet mode: who owns each watch
    here: str = ""  # fleet mode: this replica's name
    _fleet: Fleet | None = None

    def fleet(self) -> Fleet:
        if self._fleet is None:
            self._fleet = Fleet.of(
                self.watches,
                self.poll,
                taken_at=self.wall,
                auth_error=self.auth_error,
                last_success_at=self.last_success_at,
                owners=self.owners,
                here=self.here,
            )
        return self._fleet


class Pages:
    """The read-only HTML pages: ``/`` and ``/batches/{vector_store_id}/{batch_id}``."""

    def __init__(
        self,
        engine: Engine,
        history: BatchHistory,
        *,
        fleet: FleetView | None = None,
        ttl: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._history = history
        self._fleet = fleet
        self._ttl = ttl
        self._clock = clock
        self._wall = wall
        self._templates = templates()
        self._lock = anyio.Lock()
        self._taken: _Taken | None = None
        self._rendered: dict[Hashable, tuple[float, str]] = {}
        self.renders = 0  # pages rendered, not served from the cache (for tests)

    async def status(self, request: Request) -> Response:
        try:
            query = parse_query(request.query_params.multi_items())
        except QueryError as exc:
            return self._problem(400, "Bad query", str(exc))

        listing = await self._fleet_listing()

        def prepare() -> Callable[[], str]:
            taken, secrets = self._snapshot(listing), secret_values()
            return lambda: render_status(
                self._templates, taken.fleet(), query, secrets, stores=taken.stores
            )

        return self._page(await self._cached(("status", query), prepare))

    async def batch(self, request: Request) -> Response:
        vs = request.path_params["vector_store_id"]
        batch_id = request.path_params["batch_id"]
        problems = validate_id(vs, "vector_store_id") + validate_id(batch_id, "batch_id")
        if problems:
            return self._problem(400, "Bad batch id", "; ".join(problems))
        elsewhere = await self._fleet_lookup((vs, batch_id))
        if self._engine.get(vs, batch_id) is None and elsewhere is None:
            return self._problem(404, "Not watched", f"not watching {vs}/{batch_id}")

        def prepare() -> Callable[[], str]:
            watch = self._engine.get(vs, batch_id)
            owners: dict[Key, Ownership] | None = None
            if watch is not None and self._fleet is not None:
                owners = {watch.key: Ownership(self._fleet.name, "owned")}
            elif watch is None and elsewhere is not None:
                watch, owners = elsewhere.watch, {elsewhere.watch.key: elsewhere.ownership}
            if watch is None:  # removed while we waited for the lock
                message = f"not watching {vs}/{batch_id}"
                return lambda: render_problem(self._templates, "Not watched", message)
            taken = self._take((watch,), owners)
            points, secrets = self._history.points(watch.key), secret_values()

            return lambda: render_batch(self._templates, taken.fleet(), points, secrets)

        return self._page(await self._cached(("batch", vs, batch_id), prepare))

    # -- on the loop ------------------------------------------------------------------------

    async def _fleet_listing(self) -> Listing | None:
        """Fleet mode: every watch of the fleet (``None`` while the database does not answer:
        the page shows this replica's own then)."""
        if self._fleet is None:
            return None
        try:
            return await self._fleet.listing()
        except StoreUnavailable:
            return None

    async def _fleet_lookup(self, key: Key) -> Listed | None:
        if self._fleet is None or self._engine.get(*key) is not None:
            return None
        try:
            return await self._fleet.lookup(key)
        except StoreUnavailable:
            return None

    def _snapshot(self, listing: Listing | None = None) -> _Taken:
        """Every watch, taken at most once per ``ttl``; the views are made in the worker."""
        now = self._clock()
        if self._taken is not None and now - self._taken.at < self._ttl:
            return self._taken
        if listing is not None:
            self._taken = self._take(listing.watches, listing.owners)
        elif self._fleet is not None:
            mine = tuple(self._engine.watches())
            owned = Ownership(self._fleet.name, "owned")
            self._taken = self._take(mine, dict.fromkeys((w.key for w in mine), owned))
        else:
            self._taken = self._take(tuple(self._engine.watches()))
        return self._taken

    def _take(
        self, watches: tuple[Watch, ...], owners: Mapping[Key, Ownership] | None = None
    ) -> _Taken:
        auth = self._engine.auth_error
        return _Taken(
            at=self._clock(),
            watches=tuple(w for w in watches if not w.is_store),
            stores=tuple(w for w in watches if w.is_store),
            poll=self._engine.settings.poll,
            wall=self._wall(),
            auth_error=None if auth is None else auth.message,
            last_success_at=self._engine.last_success_at,
            owners=owners,
            here=self._fleet.name if self._fleet is not None else "",
        )

    async def _cached(self, key: Hashable, prepare: Callable[[], Callable[[], str]]) -> str:
        """The page for ``key``: rendered within ``ttl``, or rendered now in a worker thread
        (``prepare`` runs here, on the loop, and returns the render that runs there)."""
        async with self._lock:
            hit = self._rendered.get(key)
            if hit is not None and self._clock() - hit[0] < self._ttl:
                return hit[1]
            render = prepare()
            html = await anyio.to_thread.run_sync(render)
            self.renders += 1
            now = self._clock()
            for old in [k for k, (at, _) in self._rendered.items() if now - at >= self._ttl]:
                del self._rendered[old]
            while len(self._rendered) >= MAX_CACHED_PAGES:
                del self._rendered[next(iter(self._rendered))]
            self._rendered[key] = (now, html)
            return html

    def _page(self, html: str, status: int = 200) -> Response:
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def _problem(self, status: int, title: str, message: str) -> Response:
        # Small and not cached: rendered here, on the loop.
        return self._page(render_problem(self._templates, title, message), status)
