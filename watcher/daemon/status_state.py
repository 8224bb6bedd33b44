"""Which state each watch is in on the status page, worked out once per snapshot.

Each row has one word for its state — a ``status`` filter value and a CSS class. Pure functions of
the engine's :class:`~watcher.core.watch.Watch` records, which are immutable: the event loop takes
them, a worker thread runs everything here (see :mod:`watcher.daemon.pages`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ..core.policy import PollSettings
from ..core.states import State
from ..core.watch import Key, Watch
from ..fleet.roster import Ownership

#: A watch still polled is in one of these; the first that applies wins.
ACTIVE_STATES: Final = ("refused", "stale", "stalled", "not_seen", "watching")
#: A watch that ended is in the state it ended in.
ENDED_STATES: Final = tuple(s.value for s in State if s.is_ending)
#: ``status`` filter values besides the states themselves.
GROUPS: Final = ("active", "ended", "trouble")
#: Every state but watching, not seen, completed and cancelled needs a look.
_TROUBLE_STATES: Final = frozenset(ACTIVE_STATES + ENDED_STATES) - {
    "watching",
    "not_seen",
    State.COMPLETED.value,
    State.CANCELLED.value,
}

#: Never call data stale sooner than this, however short the interval.
MIN_STALE_SECONDS: Final = 30.0
#: Fleet mode: how much older another replica's watch may look (the database holds its progress
#: as of that replica's last checkpoint, ``progress_seconds`` apart by default).
REMOTE_LAG_SECONDS: Final = 30.0


def stale_after(interval: float | None, poll: PollSettings) -> float:
    """Three times the longest wait between two good polls of a healthy watch (its interval,
    slowed down while there is no progress), and never under :data:`MIN_STALE_SECONDS`."""
    base = poll.interval if interval is None else interval
    longest = min(base * poll.slow_down_max_factor, poll.max_interval) if poll.slow_down else base
    return max(MIN_STALE_SECONDS, 3 * max(longest, base))


def state_of(w: Watch, now: float, stale_limit: float, refused: bool) -> str:
    """The row's one word: how the watch ended, or the first of the active states that
    applies (``stale_limit``: the watch's :func:`stale_after`)."""
    if w.result is not None:
        return w.result.status.value
    if refused:
        return "refused"
    if now - (w.last_poll_at or w.registered_at) > stale_limit:
        return "stale"
    if w.stalled:
        return "stalled"
    if w.status is None:
        return "not_seen"
    return "watching"


def has_trouble(w: Watch, state: str) -> bool:
    """Whether the row needs a look: a bad state, failing polls, or failed files."""
    if state in _TROUBLE_STATES or (w.result is None and w.failures > 0):
        return True
    return w.file_counts is not None and w.file_counts.failed > 0


@dataclass(frozen=True, slots=True)
class Fleet:
    """The watches as they were at one moment (immutable records) and each one's state, worked
    out once for every query on the same snapshot."""

    batches: tuple[Watch, ...]
    states: tuple[str, ...]
    trouble: tuple[bool, ...]
    #: Indexes of ``batches`` in the order the page lists them: active watches in trouble
    #: first, then the other active ones as they were added, then ended ones, the last first.
    order: tuple[int, ...]
    taken_at: float  # wall clock
    auth_error: str | None  # why the API refuses the key, while it does
    last_success_at: float | None
    #: Fleet mode: each watch's owner and lease; ``here``: the replica that shows the page.
    owners: Mapping[Key, Ownership] | None = None
    here: str = ""

    @classmethod
    def of(
        cls,
        watches: tuple[Watch, ...],
        poll: PollSettings,
        *,
        taken_at: float,
        auth_error: str | None = None,
        last_success_at: float | None = None,
        owners: Mapping[Key, Ownership] | None = None,
        here: str = "",
    ) -> Fleet:
        limits: dict[float | None, float] = {}
        states = []
        for w in watches:
            interval = w.options.interval_seconds
            limit = limits.get(interval)
            if limit is None:
                limit = limits[interval] = stale_after(interval, poll)
            if owners is not None and (o := owners.get(w.key)) and o.owner != here:
                # Another replica's watch, as the database has it: its progress as of that
                # replica's last checkpoint.
                limit += REMOTE_LAG_SECONDS
            states.append(state_of(w, taken_at, limit, auth_error is not None))
        trouble = tuple(has_trouble(w, s) for w, s in zip(watches, states, strict=True))

        def place(i: int) -> tuple[int, float, int]:
            w = watches[i]
            if w.result is None:
                return (0, not trouble[i], i)
            return (1, -(w.finished_at or 0.0), i)

        order = tuple(sorted(range(len(watches)), key=place))
        return cls(
            watches,
            tuple(states),
            trouble,
            order,
            taken_at,
            auth_error,
            last_success_at,
            owners,
            here,
        )
