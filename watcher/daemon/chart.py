"""A batch's progress over time as the geometry of a small SVG line chart (no script, no fonts
fetched): files finished against seconds since the first point."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 480
HEIGHT = 160
#: Room left of and below the plot for the axis labels.
LEFT, BOTTOM, TOP, RIGHT = 48, 22, 8, 8


@dataclass(frozen=True, slots=True)
class Chart:
    """What the template draws: the line's points, the line of the expected total, the labels."""

    width: int
    height: int
    polyline: str  # "x,y x,y ..." in SVG user units
    expected_y: float  # where the expected total is drawn
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    y_max: int  # the count at the top of the plot
    span_seconds: float  # the time the x axis covers
    last: tuple[float, float]  # the newest point, marked with a dot


def progress_chart(
    points: Sequence[tuple[float, int]],
    expected: int,
    *,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Chart | None:
    """The chart of ``points`` (time, files finished), oldest first; ``None`` with no point.

    One point is drawn as a flat line from it to itself; a count that falls (the server said
    less than before) is drawn as it came, never smoothed away.
    """
    if not points:
        return None
    left, right = float(LEFT), float(width - RIGHT)
    top, bottom = float(TOP), float(height - BOTTOM)
    start = points[0][0]
    span = max(points[-1][0] - start, 0.0)
    y_max = max(expected, *(count for _, count in points), 1)

    def x(t: float) -> float:
        return left if span == 0 else left + (t - start) / span * (right - left)

    def y(count: int) -> float:
        return bottom - count / y_max * (bottom - top)

    coords = [(round(x(t), 1), round(y(c), 1)) for t, c in points]
    if len(coords) == 1:
        coords.append((right, coords[0][1]))
    return Chart(
        width=width,
        height=height,
        polyline=" ".join(f"{px},{py}" for px, py in coords),
        expected_y=round(y(expected), 1),
        plot_left=left,
        plot_right=right,
        plot_top=top,
        plot_bottom=bottom,
        y_max=y_max,
        span_seconds=span,
        last=coords[-1] if len(points) > 1 else coords[0],
    )
