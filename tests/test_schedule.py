"""The due-time heap and the order in which waiting watches are served, with plain numbers."""

from __future__ import annotations

from dataclasses import replace

from factories import FakeClock

from watcher.core.schedule import RANK_EVERY_SECONDS, DueTimes, Entry, Ready
from watcher.core.states import Phase
from watcher.core.watch import Watch


def entry(batch_id: str) -> Entry:
    return Entry(Watch.new("vs", batch_id, registered_at=0.0))


def test_due_times_come_in_order_and_a_rescheduled_entry_once() -> None:
    """Entries come out when due, earliest first; rescheduling drops the older time; removed
    and finished entries never come out."""
    clock = FakeClock(0.0)
    due = DueTimes(clock)
    a, b, c = (Entry(Watch.new("vs", f"b{n}", registered_at=0.0)) for n in range(3))
    assert due.put(a, 5.0)
    assert due.put(b, 1.0)
    assert not due.put(c, 3.0)
    due.put(a, 2.0)  # moved earlier: the item at 5 is stale
    c.removed = True
    assert due.until_next(0.0, most=10.0) == 1.0
    assert due.pop(0.5) is None
    assert [due.pop(10.0), due.pop(10.0), due.pop(10.0)] == [b, a, None]
    done = Entry(replace(Watch.new("vs", "done", registered_at=0.0), phase=Phase.FINISHED))
    due.put(done, 0.0)
    assert due.pop(10.0) is None
    assert due.until_next(10.0, most=1.0) == 1.0


def polled(e: Entry, at: float, remaining: float | None, seq: int) -> Entry:
    e.polled_at, e.remaining, e.seq = at, remaining, seq
    return e


def test_the_watch_most_likely_to_have_ended_goes_first() -> None:
    """Among waiting watches, one never polled goes first, then the one whose estimated end
    is most overdue, and a far-off end last."""
    ready = Ready(lambda e: 5.0)
    far = polled(entry("far"), at=0.0, remaining=600.0, seq=1)
    near = polled(entry("near"), at=0.0, remaining=10.0, seq=2)
    unknown = polled(entry("unknown"), at=55.0, remaining=None, seq=3)
    new = entry("new")
    new.seq = 4
    for e in (far, near, unknown, new):
        ready.add(e)
    assert [ready.take(60.0) for _ in range(5)] == [new, near, unknown, far, None]


def test_the_order_is_kept_for_a_second_and_stale_entries_are_skipped() -> None:
    """Watches that arrive after the ranking wait for the next one (a second later), unless
    none is left; a watch rescheduled or removed meanwhile is never served."""
    ready = Ready(lambda e: 5.0)
    a = polled(entry("a"), at=0.0, remaining=100.0, seq=1)
    b = polled(entry("b"), at=0.0, remaining=50.0, seq=2)
    ready.add(a)
    ready.add(b)
    assert ready.take(10.0) is b
    late = polled(entry("late"), at=0.0, remaining=1.0, seq=3)
    ready.add(late)
    assert ready.take(10.5) is a  # ranked at 10.0; "late" waits for the next ranking
    assert ready.take(10.5) is late  # nothing ranked is left
    gone = polled(entry("gone"), at=0.0, remaining=1.0, seq=4)
    moved = polled(entry("moved"), at=0.0, remaining=1.0, seq=5)
    kept = polled(entry("kept"), at=0.0, remaining=900.0, seq=6)
    for e in (gone, moved, kept):
        ready.add(e)
    gone.removed = True
    moved.seq = 7  # rescheduled: its place here is stale
    assert ready.take(10.5 + RANK_EVERY_SECONDS) is kept
    assert len(ready) == 0


def test_a_watch_due_again_while_it_waits_is_served_once() -> None:
    """A watch rescheduled and due again before its turn came waits once, under its newest
    schedule; once served (or dropped as stale) it can wait again."""
    ready = Ready(lambda e: 5.0)
    a = polled(entry("a"), at=0.0, remaining=10.0, seq=1)
    b = polled(entry("b"), at=0.0, remaining=900.0, seq=2)
    ready.add(a)
    ready.add(b)
    a.seq = 3  # rescheduled, and due again before its turn
    ready.add(a)
    assert len(ready) == 2
    assert [ready.take(10.0), ready.take(10.0), ready.take(10.0)] == [a, b, None]
    a.seq = 4
    ready.add(a)
    b.seq = 5
    ready.add(b)
    b.seq = 6  # rescheduled to later: its wait here is stale
    assert [ready.take(20.0), ready.take(20.0)] == [a, None]
    b.seq = 7
    ready.add(b)
    assert ready.take(30.0) is b
