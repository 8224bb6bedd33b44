"""What each replica of a fleet may take: its share of the watches and of the one budget.

Plain functions of numbers, no I/O. The lease loop (:mod:`watcher.fleet.leases`) feeds them what
the database says and writes back what they decide.

Watches: each replica aims at ``ceil(total / live)``; it claims up to that many and gives back
what it holds beyond it, so that a replica that joins gets work and one that leaves or dies has
its watches spread over the others.

Budget: ``max_requests_per_minute`` and ``max_concurrency`` are the fleet's. Each replica's
*grant* is recorded in the database, and the replica uses at most its grant. The sum of the
recorded grants of live replicas never exceeds the capacity, and no replica ever uses more
than it has recorded, because:

- a grant **grows** only in a transaction that holds the fleet's budget lock and sees the others'
  recorded grants, by at most what they leave, and is recorded before it is used;
- a grant **shrinks** at once where it is used, and is recorded lower only once what it allowed
  is spent: for requests per minute, a settling time (a second's share, spent over
  ``SHARE_WINDOW_SECONDS``, must leave the window in which a server counts it); for
  concurrency, once no more requests are in flight than the new grant;
- a replica stops using its grant when its own lease, timed from before its last heartbeat was
  sent, runs out, a settling time before the database sees its row expire and stops counting it;
  and since the others may then take its part, it takes none of it back: its grant starts again
  from zero and grows like a newcomer's.

So even while a replica joins (it starts at zero and grows as the others shrink), leaves (its
grant goes to zero, then its row), or dies (its row expires), the fleet's sum stays within the
budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace


def fair_share(total: int, live: int) -> int:
    """How many watches each of ``live`` replicas aims to hold out of ``total``."""
    if live < 1:
        raise ValueError("a fleet has at least one live replica: the one asking")
    return math.ceil(total / live)


def to_claim(total: int, live: int, owned: int) -> int:
    """How many more watches to claim (up to the fair share)."""
    return max(0, fair_share(total, live) - owned)


def to_release(
    total: int, live: int, owned: int, *, fewest: int | None = None, slack: float = 0.0
) -> int:
    """How many watches to give back: all held beyond the fair share, once that is more than
    a ``slack`` fraction of it (at least one) or another live replica holds that much less
    than the share (``fewest``: the fewest any other holds). So batches ending here and there
    move nothing, and a replica that joins gets its whole share."""
    share = fair_share(total, live)
    if owned <= share:
        return 0
    margin = max(1, math.ceil(share * slack)) if slack > 0 else 0
    starving = fewest is not None and fewest < share - margin
    return owned - share if owned > share + margin or starving else 0


def split(capacity: float, members: Sequence[str], me: str) -> float:
    """``me``'s part of a divisible ``capacity`` (requests per minute) among ``members``."""
    if me not in members:
        return 0.0
    return capacity / len(members)


def split_whole(capacity: int, members: Sequence[str], me: str) -> int:
    """``me``'s part of ``capacity`` whole units (concurrency) among ``members``: equal parts,
    the remainder one each to the first members by name. Parts add up to ``capacity``."""
    if me not in members:
        return 0
    ordered = sorted(set(members))
    base, extra = divmod(capacity, len(ordered))
    return base + (1 if ordered.index(me) < extra else 0)


def rate_share(per_minute: float, members: Sequence[str], me: str) -> float:
    """``me``'s requests per minute. Each replica's budget lets at most ``ceil(rate / 60)``
    requests out in any second, so the fleet's second holds only if the parts are whole
    requests per second: while the fleet's second has a request for each member, it is split
    in whole requests (their sum is at most the fleet's); below that, the minute is split evenly
    and a second may see one request per replica."""
    per_second = math.floor(per_minute / 60)
    if me in members and per_second >= len(set(members)):
        return 60.0 * split_whole(per_second, members, me)
    return split(per_minute, members, me)


@dataclass(frozen=True, slots=True)
class Grant:
    """One replica's grant of one resource.

    ``local`` is what it may use now; ``recorded`` what the database holds for it (never less
    than ``local``); ``shrunk_at`` when ``local`` last went below ``recorded``, if it still is.
    ``lapsed``: our lease ran out, so the others may have taken what is recorded: none of it is
    taken back, it is recorded as zero once settled, and the grant grows again from there.
    """

    local: float = 0.0
    recorded: float = 0.0
    shrunk_at: float | None = None
    lapsed: bool = False

    def step(
        self,
        *,
        target: float,
        capacity: float,
        others: float,
        now: float,
        settle: float = 0.0,
        in_use: float = 0.0,
    ) -> Grant:
        """The grant after one tick of the lease loop.

        ``others``: the sum of the other live replicas' recorded grants, as read under the
        fleet's budget lock in the transaction that will record the result; ``in_use``: how
        much of ``local`` is being used now (requests in flight); ``settle``: how long a shrink
        waits before it is recorded.
        """
        grant = self
        if grant.lapsed:
            assert grant.shrunk_at is not None
            if now - grant.shrunk_at < settle or in_use > 0:
                return grant
            grant = Grant()  # recorded as zero now; it grows below, into what the others leave
        if target < grant.local:
            grant = replace(grant, local=target, shrunk_at=now)
        elif target > grant.local and grant.recorded > grant.local:
            # Part of what is recorded is ours still: take back up to it at once.
            grant = replace(grant, local=min(target, grant.recorded))
        if grant.recorded > grant.local:
            settled = grant.shrunk_at is None or now - grant.shrunk_at >= settle
            if settled and in_use <= grant.local:
                grant = replace(grant, recorded=grant.local, shrunk_at=None)
            return grant
        if target > grant.local:
            room = capacity - others
            grown = max(grant.local, min(target, room))
            grant = Grant(local=grown, recorded=grown)
        return grant

    def lapse(self, now: float) -> Grant:
        """Our lease ran out: use nothing, and take nothing back of what is recorded."""
        if self.lapsed or (self.local == 0.0 and self.recorded == 0.0):
            return self
        return Grant(local=0.0, recorded=self.recorded, shrunk_at=now, lapsed=True)
