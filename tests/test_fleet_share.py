"""The fleet's shares, with numbers: watches per replica, and a budget split that never lets the
fleet's sum exceed the configured one, while replicas join, leave, die or pause."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.fleet.share import (
    Grant,
    fair_share,
    rate_share,
    split,
    split_whole,
    to_claim,
    to_release,
)


def test_fair_share_rounds_up_so_that_every_watch_has_room() -> None:
    """Each replica aims at ceil(total / live): the shares cover every watch."""
    assert fair_share(10, 3) == 4
    assert fair_share(9, 3) == 3
    assert fair_share(0, 2) == 0
    assert fair_share(1, 5) == 1
    with pytest.raises(ValueError, match="at least one"):
        fair_share(3, 0)


def test_claims_fill_up_to_the_share_and_releases_give_back_the_rest() -> None:
    """A replica claims what it lacks of its share and gives back what it holds beyond it."""
    assert to_claim(total=3000, live=3, owned=0) == 1000
    assert to_claim(total=3000, live=3, owned=1200) == 0
    assert to_release(total=3000, live=3, owned=1200) == 200
    # A third replica joins two that hold everything: each of the two gives back a third.
    assert to_release(total=3000, live=3, owned=1500) == 500
    assert to_release(total=3000, live=3, owned=1000) == 0


def test_small_differences_move_nothing_but_a_starving_replica_gets_its_share() -> None:
    """With a slack, one or two over the share stay put, unless another replica holds that
    much under it; then everything over the share is given back."""
    assert to_release(3000, 3, 1010, fewest=995, slack=0.02) == 0
    assert to_release(3000, 3, 1030, fewest=1000, slack=0.02) == 30
    assert to_release(3000, 3, 1010, fewest=900, slack=0.02) == 10
    assert to_release(30, 3, 11, fewest=8, slack=0.02) == 1
    assert to_release(30, 3, 11, fewest=9, slack=0.02) == 0


@given(total=st.integers(0, 100_000), live=st.integers(1, 50))
def test_shares_cover_every_watch(total: int, live: int) -> None:
    """The live replicas' shares add up to at least the number of watches."""
    assert fair_share(total, live) * live >= total
    assert fair_share(total, live) * live < total + live


@given(capacity=st.integers(1, 1024), n=st.integers(1, 40))
def test_whole_parts_add_up_to_the_capacity(capacity: int, n: int) -> None:
    """Concurrency splits into whole parts that differ by at most one and add up exactly."""
    members = [f"replica-{i}" for i in range(n)]
    parts = [split_whole(capacity, members, m) for m in members]
    assert sum(parts) == capacity
    assert max(parts) - min(parts) <= 1
    assert split_whole(capacity, members, "stranger") == 0


def test_requests_per_minute_split_evenly() -> None:
    """Requests per minute split into equal parts; a replica not in the list gets none."""
    assert split(600, ["a", "b", "c"], "b") == 200
    assert split(600, ["a", "b"], "c") == 0


@given(per_minute=st.integers(1, 100_000), n=st.integers(1, 40))
def test_rate_parts_keep_the_fleets_second(per_minute: int, n: int) -> None:
    """Rate parts never add up to more than the minute's budget; while the second has a request
    for every replica, the most each can send in a second (ceil(part / 60)) adds up to no more
    than the fleet's second."""
    members = [f"replica-{i}" for i in range(n)]
    parts = [rate_share(per_minute, members, m) for m in members]
    assert sum(parts) <= per_minute + 1e-6
    if per_minute // 60 >= n:
        assert sum(math.ceil(p / 60 - 1e-9) for p in parts) <= per_minute // 60
        assert min(parts) >= 60
    assert rate_share(per_minute, members, "stranger") == 0


def test_rate_parts_with_numbers() -> None:
    """600 a minute over three: 4, 3 and 3 a second; 100 a minute over three: a third each."""
    members = ["a", "b", "c"]
    assert [rate_share(600, members, m) for m in members] == [240, 180, 180]
    assert rate_share(100, members, "a") == pytest.approx(100 / 3)


def test_a_grant_grows_only_into_what_the_others_leave() -> None:
    """A joining replica's grant grows by what the others' recorded grants leave, no more, and
    is recorded as it grows."""
    g = Grant().step(target=200, capacity=600, others=600, now=0)
    assert (g.local, g.recorded) == (0, 0)
    g = g.step(target=200, capacity=600, others=500, now=1)
    assert (g.local, g.recorded) == (100, 100)
    g = g.step(target=200, capacity=600, others=400, now=2)
    assert (g.local, g.recorded) == (200, 200)


def test_a_shrink_is_used_at_once_and_recorded_once_settled() -> None:
    """A shrinking grant is used lower at once, but recorded lower only after the settling
    time (and, for concurrency, once no more is in use than the new grant)."""
    g = Grant(local=300, recorded=300).step(
        target=200, capacity=600, others=300, now=10.0, settle=1.01
    )
    assert (g.local, g.recorded) == (200, 300)
    g = g.step(target=200, capacity=600, others=300, now=10.5, settle=1.01)
    assert g.recorded == 300
    g = g.step(target=200, capacity=600, others=300, now=11.1, settle=1.01, in_use=250)
    assert g.recorded == 300  # still 250 requests in flight
    g = g.step(target=200, capacity=600, others=300, now=11.2, settle=1.01, in_use=150)
    assert (g.local, g.recorded, g.shrunk_at) == (200, 200, None)


def test_a_lapsed_lease_uses_nothing_and_takes_nothing_back() -> None:
    """When a replica's lease runs out it uses nothing; it records zero once settled, takes
    none of its old grant back, and grows only into what the others leave."""
    g = Grant(local=300, recorded=300).lapse(now=5.0)
    assert (g.local, g.recorded) == (0, 300)
    assert g.lapse(now=5.5) == g
    g = g.step(target=300, capacity=600, others=300, now=5.5, settle=1.0)
    assert (g.local, g.recorded) == (0, 300)  # not settled: nothing taken back
    g = g.step(target=300, capacity=600, others=600, now=6.1, settle=1.0)
    assert (g.local, g.recorded, g.lapsed) == (0, 0, False)  # the other took it all
    g = g.step(target=300, capacity=600, others=300, now=7.1, settle=1.0)
    assert (g.local, g.recorded) == (300, 300)


# -- the fleet, simulated --------------------------------------------------------------------

LEASE = 5.0
SETTLE = 1.01
TICK = 1.0
DT = 0.05


@dataclass
class _Replica:
    name: str
    phase: float  # its ticks come at phase, phase + TICK, ...
    grant: Grant = field(default_factory=Grant)
    valid_until: float = -math.inf
    state: str = "running"  # running, paused, dead, leaving, gone
    left_at: float = 0.0
    usage: list[tuple[float, float]] = field(default_factory=list)

    def using(self, now: float) -> float:
        # Worst case: whatever it may use until its own lease runs out, even paused.
        if self.state in ("dead", "gone") and now > self.valid_until:
            return 0.0
        return self.grant.local if now <= self.valid_until else 0.0


@dataclass
class _Database:
    recorded: dict[str, float] = field(default_factory=dict)
    expires: dict[str, float] = field(default_factory=dict)

    def live(self, now: float) -> list[str]:
        return sorted(n for n, at in self.expires.items() if at > now)


def _tick(r: _Replica, db: _Database, capacity: float, now: float) -> None:
    if now > r.valid_until:
        r.grant = r.grant.lapse(now)
    db.expires[r.name] = now + LEASE  # the heartbeat, in the same transaction
    r.valid_until = now + LEASE - SETTLE  # timed from before it was sent
    live = db.live(now)
    others = sum(db.recorded.get(n, 0.0) for n in live if n != r.name)
    target = 0.0 if r.state == "leaving" else split(capacity, live, r.name)
    r.grant = r.grant.step(target=target, capacity=capacity, others=others, now=now, settle=SETTLE)
    db.recorded[r.name] = r.grant.recorded
    if r.state == "leaving" and r.grant.recorded == 0:
        del db.recorded[r.name], db.expires[r.name]
        r.state = "gone"


_EVENT = st.tuples(
    st.floats(0, 40, allow_nan=False),
    st.sampled_from(["join", "leave", "die", "pause", "resume"]),
    st.integers(0, 5),
)


def _simulate(events: list[tuple[float, str, int]], capacity: float, phases: list[float]) -> None:
    """Run the fleet through ``events``, checking the budget at every step (see below)."""
    db = _Database()
    replicas: dict[int, _Replica] = {0: _Replica("r0", phases[0])}
    pending = sorted(events)
    history: list[dict[str, float]] = []
    now = 0.0
    end = 40.0 + 3 * LEASE
    while now < end:
        while pending and pending[0][0] <= now:
            _, kind, index = pending.pop(0)
            r = replicas.get(index)
            if kind == "join" and r is None:
                replicas[index] = _Replica(f"r{index}", phases[index])
            elif r is not None and kind == "leave" and r.state == "running":
                r.state, r.grant = "leaving", r.grant.lapse(now)
            elif r is not None and kind == "die" and r.state in ("running", "paused"):
                r.state = "dead"
            elif r is not None and kind == "pause" and r.state == "running":
                r.state = "paused"
            elif r is not None and kind == "resume" and r.state == "paused":
                r.state = "running"
        for r in replicas.values():
            if r.state in ("running", "leaving") and (now - r.phase) % TICK < DT:
                _tick(r, db, capacity, now)
        history.append({r.name: r.using(now) for r in replicas.values()})
        window = history[-math.ceil(SETTLE / DT) :]  # the moments less than SETTLE ago
        names = {n for h in window for n in h}
        peak = sum(max(h.get(n, 0.0) for h in window) for n in names)
        assert peak <= capacity * (1 + 1e-9), f"{peak} > {capacity} at t={now:.2f}"
        now = round(now + DT, 6)
    running = [r for r in replicas.values() if r.state == "running"]
    for r in running:
        assert r.grant.local == pytest.approx(capacity / len(running))


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(_EVENT, max_size=14),
    capacity=st.sampled_from([60.0, 600.0, 10_000.0]),
    phases=st.lists(st.floats(0, TICK, exclude_max=True, allow_nan=False), min_size=6, max_size=6),
)
def test_the_fleet_never_uses_more_than_the_budget(
    events: list[tuple[float, str, int]], capacity: float, phases: list[float]
) -> None:
    """Replicas joining, leaving, dying and pausing at random moments: in every window of the
    settling time, the sum of what each replica may use never exceeds the budget, and after a
    quiet spell the live replicas hold equal parts of all of it."""
    _simulate(events, capacity, phases)


def test_a_replica_paused_past_its_lease_does_not_take_back_its_old_grant() -> None:
    """A replica paused past its lease, whose part the other took meanwhile, comes back with
    nothing and grows only into what the other gives up."""
    events = [(0.0, "join", 1), (5.0, "pause", 1), (15.0, "resume", 1)]
    _simulate(events, 600.0, [0.0, 0.5, 0.0, 0.0, 0.0, 0.0])
