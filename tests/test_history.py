"""A batch's past as the pages show it: bounded progress points, and their chart."""

from __future__ import annotations

import pytest

from watcher.api.models import FileCounts
from watcher.core.events import BatchProgressed, WatchRemoved
from watcher.daemon.chart import progress_chart
from watcher.daemon.history import BatchHistory

KEY = ("vs_1", "vsfb_1")


def progressed(finished: int, status: str = "in_progress") -> BatchProgressed:
    return BatchProgressed(
        vector_store_id=KEY[0],
        batch_id=KEY[1],
        status=status,
        file_counts=FileCounts(completed=finished, in_progress=1000 - finished, total=1000),
        eta_seconds=None,
    )


def test_points_are_kept_in_order_and_a_status_change_alone_adds_none() -> None:
    """Each change of the finished count is a (time, count) point; a repeat count is not."""
    now = [100.0]
    history = BatchHistory(wall=lambda: now[0])
    for finished in (0, 0, 5, 9):
        history.on_event(progressed(finished))
        now[0] += 1
    history.on_event(progressed(9, status="cancelling"))
    assert history.points(KEY) == ((100.0, 0), (102.0, 5), (103.0, 9))
    assert history.points(("vs_1", "other")) == ()


def test_a_full_history_halves_and_still_spans_the_whole_watch() -> None:
    """Past its bound the history drops every other point: never more than the bound, the first
    point kept, the newest always last."""
    now = [0.0]
    history = BatchHistory(wall=lambda: now[0], max_points=8)
    for finished in range(1, 101):
        now[0] = float(finished)
        history.on_event(progressed(finished))
        assert len(history.points(KEY)) <= 8
    points = history.points(KEY)
    assert points[0] == (1.0, 1)
    assert points[-1] == (100.0, 100)
    assert [t for t, _ in points] == sorted(t for t, _ in points)
    with pytest.raises(ValueError, match="at least 4"):
        BatchHistory(max_points=3)


def test_removing_a_watch_forgets_its_history() -> None:
    """A removed watch's points are gone; other watches keep theirs."""
    history = BatchHistory(wall=lambda: 50.0)
    history.on_event(progressed(1))
    other = BatchProgressed(
        vector_store_id="vs_1",
        batch_id="vsfb_2",
        status="in_progress",
        file_counts=FileCounts(completed=1, total=2),
        eta_seconds=None,
    )
    history.on_event(other)
    assert len(history) == 2
    history.on_event(WatchRemoved(vector_store_id=KEY[0], batch_id=KEY[1]))
    assert history.points(KEY) == ()
    assert history.points(("vs_1", "vsfb_2")) == ((50.0, 1),)
    assert len(history) == 1


def test_the_chart_spans_its_plot() -> None:
    """The line starts at the plot's left and ends at its right; the expected total is drawn;
    counts map upward; no point means no chart, one point a flat line."""
    chart = progress_chart([(10.0, 0), (20.0, 50), (30.0, 100)], expected=100)
    assert chart is not None
    xs = [float(p.split(",")[0]) for p in chart.polyline.split()]
    ys = [float(p.split(",")[1]) for p in chart.polyline.split()]
    assert (xs[0], xs[-1]) == (chart.plot_left, chart.plot_right)
    assert (ys[0], ys[-1]) == (chart.plot_bottom, chart.plot_top)
    assert chart.expected_y == chart.plot_top
    assert ys == sorted(ys, reverse=True)
    assert chart.span_seconds == 20.0
    assert chart.last == (xs[-1], ys[-1])
    assert progress_chart([], expected=10) is None
    single = progress_chart([(5.0, 3)], expected=10)
    assert single is not None
    assert len(single.polyline.split()) == 2
    assert single.y_max == 10
    # A server that counts more files than it said exist: the plot grows to show them.
    assert progress_chart([(0.0, 0), (1.0, 12)], expected=10).y_max == 12  # type: ignore[union-attr]


def test_times_are_kept_to_the_second_and_a_huge_count_is_drawn_at_the_most() -> None:
    """A point holds whole seconds and a 32-bit count: a count a server may send (up to 2**53)
    is kept at 2**31 - 1 rather than refused."""
    now = [1_800_000_000.4]
    history = BatchHistory(wall=lambda: now[0])
    history.on_event(progressed(1))
    now[0] += 10.7
    history.on_event(progressed(2**53))
    assert history.points(KEY) == ((1_800_000_000.0, 1), (1_800_000_011.0, 2**31 - 1))
