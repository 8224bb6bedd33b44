"""The lease loop: one replica's heartbeat, claims, hand-overs and budget grants, every tick.

Each tick is one transaction under the fleet's budget lock: renew the lease (the heartbeat),
see the fleet, move the budget grants one step (:class:`~watcher.fleet.share.Grant`), claim up
to the fair share of the watches still watched and of the finished ones, and pick what is held
beyond it. After the commit the replica (a :class:`Holder`) is told what it may spend, what it
now owns, and what to give up; given-up watches are written one last time, dropped here, then
released for the others to claim at their next tick.

When no heartbeat succeeds for a lease (less the settling time), the replica's grants lapse to
zero: it stops polling, since others may be claiming its watches. Once the database answers
again, the tokens are reconciled with the rows, and what was taken is dropped. On the way out
(SIGTERM), everything is written, then handed over at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import anyio
import anyio.abc
import structlog

from ..api.budget import SHARE_WINDOW_SECONDS
from ..core.watch import Key, Watch
from ..store.postgres import AWAY, PostgresStore
from . import roster
from .leases import LEAVING_CHANNEL, Claimed, Fleet, Leases
from .share import Grant, rate_share, split_whole, to_claim, to_release

log = structlog.get_logger("watcher.fleet.keeper")


class Holder(Protocol):
    """What the lease loop asks of the replica it keeps (the daemon puts the engine behind)."""

    def set_grants(
        self, requests_per_minute: float, concurrency: int, *, for_seconds: float = math.inf
    ) -> None:
        """Spend at most this much from now on (zero: poll nothing), for at most
        ``for_seconds`` (the lease's end), after which nothing until set again."""

    def in_flight(self) -> int:
        """Requests under way now."""

    async def adopt(self, claimed: Sequence[Claimed]) -> None:
        """Start watching what was just claimed."""

    def drop(self, keys: Collection[Key]) -> None:
        """Stop watching (and exporting) these here at once, writing nothing more of them and
        deleting none of them from the store."""


@dataclass(frozen=True, slots=True)
class KeeperSettings:
    max_requests_per_minute: float
    max_concurrency: int
    lease_seconds: float = 15.0
    tick_seconds: float = 1.0
    #: How often the tokens are checked against the rows (and at once after a lapse).
    reconcile_seconds: float = 15.0
    #: How long a shrunk rate grant waits before it is recorded lower (see share.py).
    settle_seconds: float = SHARE_WINDOW_SECONDS
    #: Give back only when holding this fraction (at least one watch) over the fair share, or
    #: another holds that much under it; then down to the share (see share.to_release).
    release_slack: float = 0.02
    #: The most watches claimed or given back in one tick, to keep a transaction short.
    max_moves_per_tick: int = 2000


class LeaseKeeper:
    """Run :meth:`run` in the daemon's task group; it leaves the fleet when cancelled."""

    def __init__(
        self,
        store: PostgresStore,
        leases: Leases,
        holder: Holder,
        settings: KeeperSettings,
        *,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.store = store
        self.leases = leases
        self.holder = holder
        self.settings = settings
        self._now = clock
        self.rate = Grant()
        self.concurrency = Grant()
        self.valid_until = -math.inf
        self.fleet: Fleet | None = None
        self.ready = False  # the last tick reached the database
        self._first = True
        self._lost: set[Key] = set()
        self._next_reconcile = -math.inf
        self._claiming = anyio.Lock()
        self._woken = anyio.Event()  # set when another replica leaves
        self._registering = _Registration()
        self.leases.on_lost = self._on_lost
        self.store.fencing = leases

    @property
    def replicas(self) -> int:
        return len(self.fleet.live) if self.fleet is not None else 0

    def _on_lost(self, keys: set[Key]) -> None:
        """A fenced write did not land: drop those watches now, not at the next reconcile,
        which still runs soon to see what else changed."""
        self.store.forget(keys)
        self.holder.drop(keys)
        self._lost.update(keys)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self.tick()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watchdog)
                tg.start_soon(self._wake_when_one_leaves)
                task_status.started()
                while True:
                    with anyio.move_on_after(self.settings.tick_seconds):
                        await self._woken.wait()
                    self._woken = anyio.Event()
                    await self.tick()
        finally:
            with anyio.CancelScope(shield=True):
                await self.leave()

    async def _wake_when_one_leaves(self) -> None:
        """Tick at once when another replica leaves: its watches are unowned now, and a tick
        claims them, so a hand-over takes a round trip rather than up to a tick."""
        while True:
            try:
                async for _ in self.store.notifications(LEAVING_CHANNEL):
                    self._woken.set()
            except AWAY:
                pass  # the ticks go on without it; listen again once the database answers
            await anyio.sleep(self.settings.tick_seconds)

    async def _watchdog(self) -> None:
        """Stop spending the moment the lease runs out, whatever a heartbeat is waiting for."""
        while True:
            left = self.valid_until - self._now()
            await anyio.sleep(min(1.0, max(0.02, left + 0.001)))
            self._check_lease(self._now())

    def _check_lease(self, now: float) -> None:
        if now <= self.valid_until:
            return
        rate, concurrency = self.rate.lapse(now), self.concurrency.lapse(now)
        if (rate, concurrency) != (self.rate, self.concurrency):
            log.warning("lease_lapsed", replica=self.leases.name)
            self.holder.set_grants(0.0, 0)
            self._next_reconcile = -math.inf
        self.rate, self.concurrency = rate, concurrency

    async def tick(self) -> None:
        """One heartbeat; never raises for a database that is away. It waits for the database
        no longer than the lease has left (a tick's worth at least)."""
        sent = self._now()
        self._check_lease(sent)
        wait = self.valid_until - sent if self.valid_until > sent else self.settings.tick_seconds
        with anyio.move_on_after(max(wait, self.settings.tick_seconds)) as waited:
            try:
                claimed, surplus = await self._heartbeat(sent)
            except AWAY as exc:
                self._unavailable(self.store.scrub(exc))
                return
        if waited.cancelled_caught:
            self._unavailable("the database did not answer in time")
            return
        self.holder.set_grants(
            self.rate.local,
            int(self.concurrency.local),
            for_seconds=max(0.0, self.valid_until - self._now()),
        )
        if claimed:
            await self.holder.adopt(claimed)
        try:
            if surplus:
                await self.hand_over(surplus)
            if self._lost or sent >= self._next_reconcile:
                await self._reconcile(sent)
        except AWAY as exc:
            self._unavailable(self.store.scrub(exc))
            return
        self.ready = True

    def _unavailable(self, error: str) -> None:
        if self.ready:
            log.warning("fleet_unavailable", error=error)
        self.ready = False

    async def _heartbeat(self, sent: float) -> tuple[list[Claimed], list[Key]]:
        """One transaction; what it decides (grants, claims, the lease) takes effect here only
        once it is committed."""
        s = self.settings
        leases = self.leases
        async with self.store.connection() as conn, conn.transaction():
            fleet = await leases.heartbeat(conn, self.rate.recorded, self.concurrency.recorded)
            if self._first:
                # A new process under this name holds none of the tokens of the last one.
                await leases.disown_all(conn)
                fleet = _disowned(fleet)
            elif fleet.owned_active + fleet.owned_finished != len(leases.tokens):
                # A watch of ours was deleted by another replica (or taken): see which now.
                self._next_reconcile = -math.inf
            live, me = fleet.live, leases.name
            rate = self.rate.step(
                target=rate_share(s.max_requests_per_minute, live, me),
                capacity=s.max_requests_per_minute,
                others=fleet.others_requests_per_minute,
                now=sent,
                settle=s.settle_seconds,
            )
            concurrency = self.concurrency.step(
                target=split_whole(s.max_concurrency, live, me),
                capacity=s.max_concurrency,
                others=fleet.others_concurrency,
                now=sent,
                in_use=self.holder.in_flight(),
            )
            await leases.record_grants(conn, rate.recorded, concurrency.recorded)
            claimed: list[Claimed] = []
            surplus: list[Key] = []
            for active, total, owned, fewest in (
                (True, fleet.active, fleet.owned_active, fleet.fewest_active),
                (False, fleet.finished, fleet.owned_finished, fleet.fewest_finished),
            ):
                want = min(to_claim(total, len(live), owned), s.max_moves_per_tick)
                claimed += await leases.claim(conn, active=active, limit=want)
                extra = to_release(total, len(live), owned, fewest=fewest, slack=s.release_slack)
                if extra:
                    limit = min(extra, s.max_moves_per_tick)
                    surplus += await leases.pick(conn, active=active, limit=limit)
        # Committed: the lease runs from before the heartbeat was sent.
        self.valid_until = sent + leases.lease_seconds - s.settle_seconds
        self.rate, self.concurrency = rate, concurrency
        self.fleet = fleet
        self._first = False
        self._hold(claimed)
        return claimed, surplus

    def _hold(self, claimed: Sequence[Claimed]) -> None:
        """Take the claims' tokens; drop what this replica still held of a watch it claimed
        back, so that the holder adopts the row as it is now, not our stale copy of it."""
        if regained := self.leases.hold(claimed):
            log.info("watches_claimed_back", count=len(regained))
            self.store.forget(regained)  # noted under the old lease: never written under the new
            self.holder.drop(regained)

    async def hand_over(self, keys: Collection[Key]) -> int:
        """Write these watches one last time, stop watching them, and release them."""
        await self.store.flush(progress=True)
        self.store.forget(keys)
        self.holder.drop(keys)
        async with self.store.connection() as conn:
            released = await self.leases.release(conn, keys)
        log.info("watches_handed_over", count=released)
        return released

    async def claim_now(self, keys: Collection[Key]) -> set[Key]:
        """Claim watches just registered here, unless a live replica owns them; return those
        now ours (the caller drops the rest)."""
        async with self._claiming:
            async with self.store.connection() as conn, conn.transaction():
                claimed = await self.leases.claim_keys(conn, keys)
            self._hold(claimed)
        return {c.watch.key for c in claimed}

    async def register(self, watches: Sequence[Watch]) -> tuple[set[Key], list[Claimed]]:
        """Write watches registered here where no row is yet, and claim those no live replica
        owns (nor we already): (the keys written, what was claimed). Registrations that come
        while one is being written go together, in one transaction, once it is done."""
        batch = self._registering
        batch.watches.extend(watches)
        if not batch.started:
            batch.started = True
            # Shielded: the callers that joined this batch wait for its outcome.
            with anyio.CancelScope(shield=True):
                try:
                    async with self._claiming:
                        self._registering = _Registration()  # later callers: the next one
                        batch.outcome = await self._register(batch.watches)
                except BaseException as exc:
                    batch.error = exc
                finally:
                    batch.done.set()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        assert batch.outcome is not None
        created, claimed = batch.outcome
        keys = {w.key for w in watches}
        new = (created & keys) - batch.answered  # two asking for one watch: one is told "new"
        batch.answered |= new
        return new, [c for c in claimed if c.watch.key in keys]

    async def _register(self, watches: Sequence[Watch]) -> tuple[set[Key], list[Claimed]]:
        unique = list({w.key: w for w in watches}.values())
        async with self.store.connection() as conn, conn.transaction():
            created = await roster.insert_new(conn, unique)
            fresh = [w.key for w in unique if w.key not in self.leases.tokens]
            claimed = await self.leases.claim_keys(conn, fresh)
        self._hold(claimed)
        return created, claimed

    async def _reconcile(self, now: float) -> None:
        # Not while a claim's tokens are being taken: its rows would look like strays.
        async with self._claiming, self.store.connection() as conn:
            lost, strays = await self.leases.reconcile(conn)
        lost |= self._lost
        self._lost.clear()
        self._next_reconcile = now + self.settings.reconcile_seconds
        if strays:
            log.info("stray_watches_released", count=len(strays))
        if lost:
            log.warning("leases_lost", count=len(lost))
            self.store.forget(lost)  # nothing noted of them is written now
            self.holder.drop(lost)

    async def leave(self) -> None:
        """Stop spending, write what is noted, and hand every watch over at once."""
        self.holder.set_grants(0.0, 0)
        try:
            await self.store.flush(progress=True)
            async with self.store.connection() as conn:
                released = await self.leases.leave(conn, self.settings.settle_seconds)
        except AWAY as exc:
            # The others take our watches when our lease runs out instead.
            log.warning("fleet_leave_failed", error=self.store.scrub(exc))
            return
        log.info("fleet_left", replica=self.leases.name, released=released)


@dataclass(slots=True)
class _Registration:
    """Watches registered together, and the outcome each caller waits for."""

    watches: list[Watch] = field(default_factory=list)
    started: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: tuple[set[Key], list[Claimed]] | None = None
    error: BaseException | None = None
    answered: set[Key] = field(default_factory=set)


def _disowned(fleet: Fleet) -> Fleet:
    return replace(fleet, owned_active=0, owned_finished=0)
