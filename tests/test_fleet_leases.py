"""Leases against a real PostgreSQL: replicas share the watches and the budget, hand over on
leaving, take over from the dead, and a replica paused past its lease writes nothing."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import anyio
import pytest
from factories import finished as _finish
from factories import moved as _moved
from factories import stored_watch as _watch
from postgres_fixtures import PG_URL, eventually, pg_connect, target, via
from tcp_proxy import TcpProxy

from watcher.core.watch import Key
from watcher.fleet import roster
from watcher.fleet.keeper import KeeperSettings, LeaseKeeper
from watcher.fleet.leases import Claimed, Leases, NameTaken
from watcher.store.postgres import LeaseLost, PostgresStore

CAPACITY_RPM = 600.0
CAPACITY_CONCURRENCY = 8


class _Holder:
    """A replica without an engine: what it watches and what it may spend."""

    def __init__(self) -> None:
        self.watching: dict[Key, int] = {}
        self.grants: tuple[float, int] = (0.0, 0)
        self.grant_history: list[tuple[float, int]] = []
        self.flight = 0

    def set_grants(
        self, requests_per_minute: float, concurrency: int, *, for_seconds: float = math.inf
    ) -> None:
        self.grants = (requests_per_minute, concurrency)
        self.for_seconds = for_seconds
        self.grant_history.append(self.grants)

    def in_flight(self) -> int:
        return self.flight

    async def adopt(self, claimed: Sequence[Claimed]) -> None:
        for c in claimed:
            self.watching[c.watch.key] = c.fence

    def drop(self, keys: Collection[Key]) -> None:
        for key in keys:
            self.watching.pop(key, None)


class _Clock:
    """The keepers' monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Replica:
    def __init__(self, keeper: LeaseKeeper, holder: _Holder, store: PostgresStore) -> None:
        self.keeper, self.holder, self.store = keeper, holder, store

    async def tick(self) -> None:
        await self.keeper.tick()


@asynccontextmanager
async def _replica(
    schema: str,
    name: str,
    clock: Callable[[], float],
    lease_seconds: float = 15.0,
    url: str = PG_URL,
) -> AsyncIterator[_Replica]:
    store = PostgresStore(url, schema=schema, replica=name, outbox=True, connect_timeout=1)
    await store.open(load=False)
    holder = _Holder()
    leases = Leases(name, lease_seconds, schema=schema)
    settings = KeeperSettings(
        max_requests_per_minute=CAPACITY_RPM,
        max_concurrency=CAPACITY_CONCURRENCY,
        lease_seconds=lease_seconds,
        reconcile_seconds=lease_seconds,
    )
    keeper = LeaseKeeper(store, leases, holder, settings, clock=clock)
    try:
        yield _Replica(keeper, holder, store)
    finally:
        await store.aclose()


async def _seed(schema: str, active: int, finished: int = 0) -> None:
    store = PostgresStore(PG_URL, schema=schema)
    await store.open()
    for n in range(active):
        store.save(_watch(f"vsfb_a{n:04d}"))
    for n in range(finished):
        store.save(_finish(_watch(f"vsfb_f{n:04d}")))
    await store.aclose()


def _owners(schema: str) -> dict[str | None, int]:
    with pg_connect(schema) as conn:
        rows = conn.execute("SELECT owner, count(*) FROM watches GROUP BY owner").fetchall()
    return {str(r[0]) if r[0] is not None else None: int(r[1]) for r in rows}


def _listening(schema: str, name: str) -> bool:
    """Whether replica ``name`` has a connection whose last statement was its LISTEN."""
    with pg_connect(schema) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND query LIKE 'LISTEN %%'",
            (f"batch-watcher {name}",),
        ).fetchone()
    return row is not None and int(row[0]) > 0


def _check_budget(schema: str, replicas: Sequence[_Replica]) -> None:
    """The live replicas' recorded grants, and what the replicas may spend, are within the
    fleet's budget."""
    with pg_connect(schema) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(requests_per_minute), 0), coalesce(sum(concurrency), 0) "
            "FROM replicas WHERE expires_at > now()"
        ).fetchone()
    assert row is not None
    assert float(str(row[0])) <= CAPACITY_RPM + 1e-6
    assert int(str(row[1])) <= CAPACITY_CONCURRENCY
    assert sum(r.holder.grants[0] for r in replicas) <= CAPACITY_RPM + 1e-6
    assert sum(r.holder.grants[1] for r in replicas) <= CAPACITY_CONCURRENCY


async def _rounds(schema: str, clock: _Clock, replicas: Sequence[_Replica], n: int) -> None:
    for _ in range(n):
        for r in replicas:
            await r.tick()
            _check_budget(schema, replicas)
        clock.now += 1.1  # past the settling time of a shrunk grant


async def test_three_replicas_share_the_watches_and_the_budget(pg_schema: str) -> None:
    """Three replicas starting one after the other end with a third each of the watched and of
    the finished batches, and a third of the budget each, never more than all of it."""
    await _seed(pg_schema, active=30, finished=6)
    clock = _Clock()
    async with (
        _replica(pg_schema, "r1", clock) as a,
        _replica(pg_schema, "r2", clock) as b,
        _replica(pg_schema, "r3", clock) as c,
    ):
        await _rounds(pg_schema, clock, [a], 2)
        assert len(a.holder.watching) == 36
        assert a.holder.grants == (CAPACITY_RPM, CAPACITY_CONCURRENCY)
        await _rounds(pg_schema, clock, [a, b], 3)
        await _rounds(pg_schema, clock, [a, b, c], 4)
        assert _owners(pg_schema) == {"r1": 12, "r2": 12, "r3": 12}
        for r in (a, b, c):
            finished = [k for k in r.holder.watching if k[1].startswith("vsfb_f")]
            assert len(finished) == 2
        # 600 a minute is 10 a second: 4, 3 and 3 a second, whole, so no second sees more.
        assert sorted(r.holder.grants[0] for r in (a, b, c)) == [180, 180, 240]
        assert sorted(r.holder.grants[1] for r in (a, b, c)) == [2, 3, 3]
        held = [set(r.holder.watching) for r in (a, b, c)]
        assert len(held[0] | held[1] | held[2]) == 36


async def test_a_replica_that_leaves_hands_over_at_once(pg_schema: str) -> None:
    """A replica leaving (SIGTERM) releases its watches at once, so the next tick of another
    claims them; its budget goes to the others once its grant has settled."""
    await _seed(pg_schema, active=20)
    clock = _Clock()
    async with _replica(pg_schema, "r1", clock) as a, _replica(pg_schema, "r2", clock) as b:
        await _rounds(pg_schema, clock, [a, b], 4)
        assert _owners(pg_schema) == {"r1": 10, "r2": 10}
        await a.keeper.leave()
        assert a.holder.grants == (0.0, 0)
        assert _owners(pg_schema) == {"r2": 10, None: 10}
        started = time.monotonic()
        await b.tick()
        assert _owners(pg_schema) == {"r2": 20}
        assert len(b.holder.watching) == 20
        assert time.monotonic() - started < 2.0

        async def grown() -> bool:
            clock.now += 1.1
            await b.tick()
            return b.holder.grants == (CAPACITY_RPM, CAPACITY_CONCURRENCY)

        for _ in range(50):
            if await grown():
                break
            await anyio.sleep(0.1)
        assert b.holder.grants == (CAPACITY_RPM, CAPACITY_CONCURRENCY)


async def test_a_replica_that_leaves_wakes_the_others_to_claim_at_once(pg_schema: str) -> None:
    """A leaving replica notifies the others: one running with a tick of a minute claims the
    released watches at once, not at its next tick."""
    await _seed(pg_schema, active=20)
    clock = _Clock()
    async with _replica(pg_schema, "r1", clock) as a, _replica(pg_schema, "r2", clock) as b:
        await _rounds(pg_schema, clock, [a, b], 4)
        assert _owners(pg_schema) == {"r1": 10, "r2": 10}
        b.keeper.settings = replace(b.keeper.settings, tick_seconds=60.0)
        async with anyio.create_task_group() as tg:
            await tg.start(b.keeper.run)
            await eventually(lambda: _listening(pg_schema, "r2"))
            await a.keeper.leave()
            await eventually(lambda: _owners(pg_schema) == {"r2": 20})
            tg.cancel_scope.cancel()


async def test_a_dead_replicas_watches_move_when_its_lease_runs_out(pg_schema: str) -> None:
    """A replica that stops heartbeating (killed) keeps its watches until its lease runs out,
    then the others claim them all, counting takeovers."""
    await _seed(pg_schema, active=12)
    clock = _Clock()
    lease = 1.0
    async with (
        _replica(pg_schema, "r1", clock, lease) as a,
        _replica(pg_schema, "r2", clock, lease) as b,
    ):
        await _rounds(pg_schema, clock, [a, b], 4)
        assert _owners(pg_schema) == {"r1": 6, "r2": 6}
        died = time.monotonic()
        await b.tick()
        assert _owners(pg_schema) == {"r1": 6, "r2": 6}, "taken before the lease ran out"

        async def all_moved() -> bool:
            await b.tick()
            return _owners(pg_schema) == {"r2": 12}

        while not await all_moved():
            assert time.monotonic() - died < 2 * lease + 1, "not taken over within two leases"
            await anyio.sleep(0.05)
        assert b.keeper.leases.takeovers == 6
        assert len(b.holder.watching) == 12


async def test_a_replica_paused_past_its_lease_cannot_overwrite_the_new_owner(
    pg_schema: str,
) -> None:
    """A replica paused past its lease loses its watches to another; when it wakes, its writes
    do not land (the new owner's state stays), it stops spending before anything else, and it
    drops the watches it lost."""
    await _seed(pg_schema, active=2)
    clock = _Clock()
    lease = 1.0
    async with (
        _replica(pg_schema, "r1", clock, lease) as a,
        _replica(pg_schema, "r2", clock, lease) as b,
    ):
        await a.tick()
        assert len(a.holder.watching) == 2
        key = ("vs_1", "vsfb_a0000")
        # r1 is paused: no heartbeat. r2 starts, and claims the watches once r1's lease is out.
        await eventually_claimed(b, pg_schema, {"r2": 2})
        new = _moved(_watch("vsfb_a0000"), 9)
        b.store.save(new)
        await b.store.flush()

        # r1 wakes up, with what it noted before the pause.
        clock.now += 2 * lease
        stale = _moved(_watch("vsfb_a0000"), 1)
        a.store.save(stale)
        await a.store.flush()
        with pg_connect(pg_schema) as conn:
            progress = conn.execute(
                "SELECT progress FROM watches WHERE batch_id = 'vsfb_a0000'"
            ).fetchone()
        assert progress is not None
        assert '"completed": 9' in str(progress[0])
        a.holder.grant_history.clear()
        await a.tick()
        assert a.holder.grant_history[0] == (0.0, 0), "spent before it knew it was still owner"
        assert key not in a.holder.watching
        assert a.holder.watching == {}
        assert _owners(pg_schema) == {"r2": 2}


async def eventually_claimed(r: _Replica, schema: str, owners: dict[str | None, int]) -> None:
    async def claimed() -> bool:
        await r.tick()
        return _owners(schema) == owners

    deadline = time.monotonic() + 10
    while not await claimed():
        assert time.monotonic() < deadline
        await anyio.sleep(0.05)


async def test_a_second_process_under_a_live_name_is_refused(pg_schema: str) -> None:
    """A replica whose name a live replica of another process holds is refused, naming the
    variable that sets it."""
    clock = _Clock()
    async with _replica(pg_schema, "same", clock) as a, _replica(pg_schema, "same", clock) as b:
        await a.tick()
        with pytest.raises(NameTaken, match="BATCH_WATCHER_REPLICA_ID"):
            await b.tick()


async def test_a_restarted_replica_claims_its_old_watches_under_new_tokens(
    pg_schema: str,
) -> None:
    """A new process under the name of an expired one gives back what that one owned and claims
    it again with new tokens, so the old process's writes could not land."""
    await _seed(pg_schema, active=3)
    clock = _Clock()
    async with _replica(pg_schema, "r1", clock, lease_seconds=0.5) as old:
        await old.tick()
        tokens = dict(old.keeper.leases.tokens)
    await anyio.sleep(0.6)
    async with _replica(pg_schema, "r1", clock) as new:
        await new.tick()
        await new.tick()
        assert set(new.keeper.leases.tokens) == set(tokens)
        assert all(new.keeper.leases.tokens[k] > tokens[k] for k in tokens)


async def test_a_watch_registered_here_is_claimed_here_unless_owned(pg_schema: str) -> None:
    """``claim_now`` takes a newly registered watch that no live replica owns, and leaves one
    that another live replica owns."""
    await _seed(pg_schema, active=1)
    clock = _Clock()
    async with _replica(pg_schema, "r1", clock) as a, _replica(pg_schema, "r2", clock) as b:
        await a.tick()
        b.store.save(_watch("vsfb_new"))
        await b.store.flush()
        await b.keeper.tick()  # seen, but r2 asks for it by name below
        claimed = await b.keeper.claim_now({("vs_1", "vsfb_new"), ("vs_1", "vsfb_a0000")})
        assert claimed <= {("vs_1", "vsfb_new")}
        with pg_connect(pg_schema) as conn:
            row = conn.execute("SELECT owner FROM watches WHERE batch_id = 'vsfb_a0000'").fetchone()
        assert row == ("r1",)


async def test_strays_are_given_back(pg_schema: str) -> None:
    """A row that names this replica without its holding the token (a claim whose answer was
    lost) is given back by the next reconciliation."""
    await _seed(pg_schema, active=2)
    clock = _Clock()
    async with _replica(pg_schema, "r1", clock) as a:
        await a.tick()
        key = ("vs_1", "vsfb_a0001")
        a.keeper.leases.tokens.pop(key)
        async with a.store.connection() as conn:
            lost, strays = await a.keeper.leases.reconcile(conn)
        assert (lost, strays) == (set(), {key})
        with pg_connect(pg_schema) as conn:
            row = conn.execute("SELECT owner FROM watches WHERE batch_id = 'vsfb_a0001'").fetchone()
        assert row == (None,)


async def test_a_database_away_past_the_lease_stops_spending_then_resumes(
    pg_schema: str,
) -> None:
    """While the database does not answer, a replica keeps its watches and its grants for the
    rest of its lease, says it is not ready, then stops spending; once the database is back
    and no one took its watches, it spends and watches them again."""
    await _seed(pg_schema, active=4)
    clock = _Clock()
    proxy = TcpProxy(*target())
    try:
        async with _replica(
            pg_schema, "r1", clock, lease_seconds=5, url=via("127.0.0.1", proxy.port)
        ) as a:
            await a.tick()
            assert (len(a.holder.watching), a.keeper.ready) == (4, True)
            granted = a.holder.grants
            proxy.cut()
            clock.now += 1
            await a.tick()
            assert not a.keeper.ready
            assert a.holder.grants == granted, "stopped spending within its lease"
            clock.now += 5
            await a.tick()
            assert a.holder.grants == (0.0, 0)
            assert len(a.holder.watching) == 4  # not known lost: kept, not polled
            proxy.restore()
            for _ in range(50):
                clock.now += 1.1
                await a.tick()
                if a.keeper.ready and a.holder.grants == granted:
                    break
                await anyio.sleep(0.1)
            assert a.keeper.ready
            assert a.holder.grants == granted
            assert len(a.holder.watching) == 4
            assert _owners(pg_schema) == {"r1": 4}
    finally:
        proxy.close()


async def test_a_fenced_write_refused_drops_the_watch_at_once(pg_schema: str) -> None:
    """A watch whose ending cannot be written (another replica took it) is dropped there and
    then, before the next tick, and nothing of it is written: neither its result nor a
    delivery."""
    await _seed(pg_schema, active=2)
    clock = _Clock()
    async with _replica(pg_schema, "r1", clock) as a:
        await a.tick()
        key = ("vs_1", "vsfb_a0000")
        assert key in a.holder.watching
        with pg_connect(pg_schema) as conn:
            conn.execute(
                "UPDATE watches SET owner = 'r9', fence = fence + 1 WHERE batch_id = %s", (key[1],)
            )
        with pytest.raises(LeaseLost):
            await a.store.save_finished(_finish(_watch("vsfb_a0000")))
        assert key not in a.holder.watching
        assert ("vs_1", "vsfb_a0001") in a.holder.watching
        assert key not in a.keeper.leases.tokens
        with pg_connect(pg_schema) as conn:
            row = conn.execute(
                "SELECT owner, result FROM watches WHERE batch_id = %s", (key[1],)
            ).fetchone()
            outbox = conn.execute("SELECT count(*) FROM outbox").fetchone()
        assert row == ("r9", None)
        assert outbox == (0,)


async def test_a_watch_deleted_elsewhere_is_forgotten_at_the_owners_next_heartbeat(
    pg_schema: str,
) -> None:
    """A watch deleted through another replica is dropped by its owner at its next heartbeat
    (long before its next reconciliation is due), and what the owner had noted of it is not
    written back."""
    await _seed(pg_schema, active=3)
    clock = _Clock()
    async with _replica(pg_schema, "r1", clock) as a, _replica(pg_schema, "r2", clock) as b:
        await a.tick()
        assert len(a.holder.watching) == 3
        key = ("vs_1", "vsfb_a0001")
        a.store.note_progress(_moved(_watch("vsfb_a0001"), 5))
        async with b.store.connection() as conn:
            assert await roster.delete(conn, key) == (True, "r1")
            assert await roster.delete(conn, key) == (False, None)
        clock.now += 1.1  # one tick later; a reconciliation is due only after 15 s
        await a.tick()
        assert key not in a.holder.watching
        assert len(a.holder.watching) == 2
        await a.store.flush(progress=True)
        assert _owners(pg_schema) == {"r1": 2}


async def test_every_watch_is_listed_with_its_owner_and_lease(pg_schema: str) -> None:
    """The fleet's list names each watch's owner, and its lease: owned while the owner's
    heartbeat holds, expired once it ran out, unowned while none claimed it; the heartbeat
    counts the watches no live replica owns."""
    await _seed(pg_schema, active=3)
    clock = _Clock()
    async with _replica(pg_schema, "r1", clock) as a:
        await a.tick()
        with pg_connect(pg_schema) as conn:
            conn.execute("UPDATE watches SET owner = NULL WHERE batch_id = 'vsfb_a0001'")
            conn.execute("UPDATE watches SET owner = 'gone' WHERE batch_id = 'vsfb_a0002'")
        async with a.store.connection() as conn:
            listed = await roster.read_all(conn)
            one = await roster.read_one(conn, ("vs_1", "vsfb_a0002"))
            missing = await roster.read_one(conn, ("vs_1", "vsfb_none"))
            unowned = await roster.count_unowned(conn)
        leases = {w.watch.batch_id: (w.ownership.owner, w.ownership.lease) for w in listed}
        assert leases == {
            "vsfb_a0000": ("r1", "owned"),
            "vsfb_a0001": (None, "unowned"),
            "vsfb_a0002": ("gone", "expired"),
        }
        assert one is not None
        assert one.ownership.lease == "expired"
        assert missing is None
        assert unowned == 2
        a.keeper.settings = replace(a.keeper.settings, max_moves_per_tick=0)
        clock.now += 1.1
        await a.tick()
        assert a.keeper.fleet is not None
        assert a.keeper.fleet.unowned == 2


async def test_registrations_at_once_are_written_together_and_each_answered(
    pg_schema: str,
) -> None:
    """Watches registered at the same moment are written and claimed (in as few transactions
    as the writes allow); each caller learns of its own, a watch asked for twice is new to one
    caller only, and one that exists already is new to none."""
    await _seed(pg_schema, active=1)
    clock = _Clock()
    async with _replica(pg_schema, "r1", clock) as a:
        await a.tick()
        answers: dict[int, tuple[set[Key], list[Claimed]]] = {}
        names = ["vsfb_a0000", "vsfb_n1", "vsfb_n2", "vsfb_n2", "vsfb_n3"]

        async def register(n: int) -> None:
            answers[n] = await a.keeper.register([_watch(names[n])])

        writes = a.store.writes
        async with anyio.create_task_group() as tg:
            for n in range(len(names)):
                tg.start_soon(register, n)
        assert a.store.writes == writes  # registering is no flush of the store
        new = [{k[1] for k in answers[n][0]} for n in range(len(names))]
        assert new[0] == set()  # there already
        assert new[1] == {"vsfb_n1"}
        assert sorted(map(len, (new[2], new[3]))) == [0, 1]
        assert new[4] == {"vsfb_n3"}
        claimed = {c.watch.batch_id for n in range(len(names)) for c in answers[n][1]}
        assert claimed == {"vsfb_n1", "vsfb_n2", "vsfb_n3"}  # vsfb_a0000: ours already
        assert _owners(pg_schema) == {"r1": 4}
