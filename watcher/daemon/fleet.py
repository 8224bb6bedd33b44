"""Fleet mode in the daemon: the lease keeper with the engine behind it.

The engine holds only the watches this replica owns, so it polls and exports only those. The
keeper's :class:`~watcher.fleet.keeper.Holder` calls come here: what was claimed is added to the
engine as restored watches, what was handed over or lost is removed from it without being
deleted from the database, and the budget grants set the engine's request budget. A watch
registered here through the control API is written, then claimed by name; if another live
replica owns it, it is dropped here again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterable, Sequence

import anyio
import anyio.abc
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..config import Config
from ..core import lifecycle
from ..core.engine import Engine
from ..core.events import Event, WatchStarted
from ..core.states import State
from ..core.watch import Key, Watch
from ..errors import TooManyWatches
from ..fleet.keeper import KeeperSettings, LeaseKeeper
from ..fleet.leases import Claimed, Leases
from ..store.postgres import AWAY, PostgresStore
from .declared import DeclaredWatch

log = structlog.get_logger("watcher.daemon.fleet")


class FleetReplica:
    """One replica: give the engine :meth:`on_event` as a sink and :meth:`attach` it, run
    :meth:`start` before serving, then :meth:`run` in the task group."""

    def __init__(self, config: Config, store: PostgresStore, name: str) -> None:
        self._engine: Engine | None = None
        self.store = store
        self.name = name
        self.leases = Leases(name, config.state.lease_seconds, schema=store.schema or "public")
        self.keeper = LeaseKeeper(
            store,
            self.leases,
            self,
            KeeperSettings(
                max_requests_per_minute=config.api.max_requests_per_minute,
                max_concurrency=config.api.max_concurrency,
                lease_seconds=config.state.lease_seconds,
                reconcile_seconds=config.state.lease_seconds,
            ),
        )
        self._registered: set[Key] = set()
        self._wake = anyio.Event()

    def attach(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("no engine attached to the fleet replica")
        return self._engine

    # -- starting ------------------------------------------------------------------------------

    async def start(self, declared: Sequence[DeclaredWatch]) -> None:
        """Migrate the schema and write the declared watches (unless already there): the
        fleet claims them like any other."""
        # Nothing is polled before the first heartbeat grants a share of the budget.
        self.engine.budget.set_limits(0.0, 0)
        await self.store.open(load=False)
        for spec in declared:
            watch = Watch.new(
                spec.vector_store_id,
                spec.batch_id,
                labels=spec.labels,
                # as the engine gives a watch added to it
                options=self.engine.options_for(spec.batch_id, spec.options),
                registered_at=time.time(),
            )
            self.store.save(watch)
        await self.store.flush()
        log.info("fleet_joined", replica=self.name, configured=len(declared))

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.keeper.run)
            tg.start_soon(self._claim_registered)
            task_status.started()

    @property
    def ready(self) -> bool:
        return self.keeper.ready

    # -- Holder ----------------------------------------------------------------------------

    def set_grants(
        self, requests_per_minute: float, concurrency: int, *, for_seconds: float = math.inf
    ) -> None:
        self.engine.budget.set_limits(requests_per_minute, concurrency, for_seconds=for_seconds)

    def in_flight(self) -> int:
        return self.engine.budget.in_flight

    async def adopt(self, claimed: Sequence[Claimed]) -> None:
        refused: list[Key] = []
        for c in claimed:
            watch = c.watch
            if self.engine.get(*watch.key) is not None:
                continue  # registered here, and claimed before we asked for it by name
            if watch.result is not None and watch.result.status is State.REJECTED:
                # As after a restart: a rejection is usually a configuration problem.
                watch = lifecycle.reopen(watch)
            try:
                self.engine.add(watch.vector_store_id, watch.batch_id, restored=watch)
            except TooManyWatches:
                refused.append(watch.key)
        if refused:
            log.warning("claimed_beyond_max_watches", count=len(refused))
            await self.keeper.hand_over(refused)

    def drop(self, keys: Collection[Key]) -> None:
        self.store.forget(keys)  # the keeper has, too; a drop of our own makes sure
        for key in keys:
            self.engine.forget(key)

    # -- watches registered here -------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Engine sink: a watch registered here (not resumed) is to be claimed by name."""
        if isinstance(event, WatchStarted) and not event.resumed:
            self._registered.add((event.vector_store_id, event.batch_id))
            self._wake.set()

    async def _claim_registered(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            keys, self._registered = self._registered, set()
            try:
                await self.store.flush()  # their rows exist before they are claimed
                mine = await self.keeper.claim_now(keys)
            except AWAY:
                self._registered |= keys
                await anyio.sleep(1.0)
                self._wake.set()
                continue
            others = {k for k in keys if k not in mine and self.engine.get(*k) is not None}
            if others:
                self.drop(others)

    # -- metrics -----------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        """The fleet's gauges, from what the last heartbeat saw (no I/O here)."""
        fleet = self.keeper.fleet
        replicas = GaugeMetricFamily(
            "batch_watcher_replicas", "Live replicas of the fleet, as this one last saw them."
        )
        replicas.add_metric([], len(fleet.live) if fleet else 0)
        owned = GaugeMetricFamily(
            "batch_watcher_owned_watches", "Watches this replica owns (and polls and exports)."
        )
        owned.add_metric([], len(self.leases.tokens))
        unowned = GaugeMetricFamily(
            "batch_watcher_fleet_watches",
            "Watches in the whole fleet, by state, as this replica last saw them.",
            labels=["state"],
        )
        unowned.add_metric(["watching"], fleet.active if fleet else 0)
        unowned.add_metric(["finished"], fleet.finished if fleet else 0)
        takeovers = CounterMetricFamily(
            "batch_watcher_lease_takeovers",
            "Watches this replica claimed from a replica whose lease had run out.",
        )
        takeovers.add_metric([], self.leases.takeovers)
        grant = GaugeMetricFamily(
            "batch_watcher_budget_grant",
            "This replica's part of the fleet's request budget.",
            labels=["resource"],
        )
        grant.add_metric(["requests_per_minute"], self.keeper.rate.local)
        grant.add_metric(["concurrency"], self.keeper.concurrency.local)
        ready = GaugeMetricFamily(
            "batch_watcher_fleet_ready", "1 while this replica's heartbeats reach the database."
        )
        ready.add_metric([], 1 if self.keeper.ready else 0)
        nobody = GaugeMetricFamily(
            "batch_watcher_unowned_watches",
            "Watches no live replica owns (not claimed yet, or their owner's lease ran out), "
            "as this replica last saw the database.",
        )
        nobody.add_metric([], fleet.unowned if fleet else 0)
        return [replicas, owned, unowned, takeovers, grant, ready, nobody]
