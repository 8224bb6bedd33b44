"""What the status page (``/``) and a batch's page (``/batches/{vs}/{batch}``) show, and their HTML.

Pure functions of the engine's :class:`~watcher.core.watch.Watch` records, which are immutable:
the event loop takes them, a worker thread runs everything here (see
:mod:`watcher.daemon.pages`). The HTML comes from Jinja2 templates in ``templates/``, which
escape every value by default.

Each row has one word for its state — a ``status`` filter value and a CSS class — and says in
words, not colour alone, what is known of the batch and how old it is.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final
from urllib.parse import quote, urlencode

import jinja2
from starlette.templating import Jinja2Templates

from .. import __version__
from ..api.models import FileCounts
from ..cli.report import eta_text, files_text
from ..core.policy import PollSettings
from ..core.states import Phase, State
from ..core.watch import Watch
from ..credentials import MASK
from .chart import progress_chart
from .store_page import render_store_links

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

DEFAULT_PER_PAGE: Final = 100
MAX_PER_PAGE: Final = 500
MAX_LABEL_FILTERS: Final = 10
#: Never call data stale sooner than this, however short the interval.
MIN_STALE_SECONDS: Final = 30.0
_ERROR_CHARS: Final = 200  # of an error message in a row; a batch's page shows it whole


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

    @classmethod
    def of(
        cls,
        watches: tuple[Watch, ...],
        poll: PollSettings,
        *,
        taken_at: float,
        auth_error: str | None = None,
        last_success_at: float | None = None,
    ) -> Fleet:
        limits: dict[float | None, float] = {}
        states = []
        for w in watches:
            interval = w.options.interval_seconds
            limit = limits.get(interval)
            if limit is None:
                limit = limits[interval] = stale_after(interval, poll)
            states.append(state_of(w, taken_at, limit, auth_error is not None))
        trouble = tuple(has_trouble(w, s) for w, s in zip(watches, states, strict=True))

        def place(i: int) -> tuple[int, float, int]:
            w = watches[i]
            if w.result is None:
                return (0, not trouble[i], i)
            return (1, -(w.finished_at or 0.0), i)

        order = tuple(sorted(range(len(watches)), key=place))
        return cls(watches, tuple(states), trouble, order, taken_at, auth_error, last_success_at)


# -- the query ------------------------------------------------------------------------------


class QueryError(ValueError):
    """A query parameter the page does not take; the message says which and what is allowed."""


@dataclass(frozen=True, slots=True)
class Query:
    """The status page's filters and page, from its query string."""

    status: str = ""  # "" for every watch, a state, or a group
    labels: tuple[tuple[str, str], ...] = ()  # every one must match
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE

    def url(
        self,
        *,
        status: str | None = None,
        labels: tuple[tuple[str, str], ...] | None = None,
        page: int = 1,
    ) -> str:
        """The status page with this query, changed as given (page 1 unless ``page`` is)."""
        params: list[tuple[str, object]] = []
        status = self.status if status is None else status
        if status:
            params.append(("status", status))
        labels = self.labels if labels is None else labels
        params.extend(("label", f"{k}={v}") for k, v in labels)
        if page != 1:
            params.append(("page", page))
        if self.per_page != DEFAULT_PER_PAGE:
            params.append(("per_page", self.per_page))
        return "/?" + urlencode(params) if params else "/"


def parse_query(items: Sequence[tuple[str, str]]) -> Query:
    """Read ``status``, ``label`` (``name=value``, repeatable), ``page`` and ``per_page``;
    unknown parameters are ignored (a browser may add its own)."""
    status, page, per_page = "", 1, DEFAULT_PER_PAGE
    labels: list[tuple[str, str]] = []
    for name, value in items:
        if name == "status":
            if value and value not in (*GROUPS, *ACTIVE_STATES, *ENDED_STATES):
                allowed = ", ".join((*GROUPS, *ACTIVE_STATES, *ENDED_STATES))
                raise QueryError(f"status: {value!r} is not one of {allowed}")
            status = value
        elif name == "label":
            label, sep, text = value.partition("=")
            if not value:
                continue
            if not sep or not label:
                raise QueryError(f"label: {value!r} is not name=value")
            labels.append((label, text))
        elif name in ("page", "per_page"):
            number = _whole(name, value)
            if name == "page":
                page = number
            elif number > MAX_PER_PAGE:
                raise QueryError(f"per_page: {number} is more than {MAX_PER_PAGE}")
            else:
                per_page = number
    if len(labels) > MAX_LABEL_FILTERS:
        raise QueryError(f"label: {len(labels)} filters are more than {MAX_LABEL_FILTERS}")
    return Query(status, tuple(dict.fromkeys(labels)), page, per_page)


def _whole(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 9 or int(value) < 1:
        raise QueryError(f"{name}: {value!r} is not a whole number of 1 or more")
    return int(value)


def _matches(query: Query, w: Watch, state: str, trouble: bool) -> bool:
    if any(w.labels.get(k) != text for k, text in query.labels):
        return False
    wanted = query.status
    if not wanted:
        return True
    if wanted == "active":
        return w.result is None
    if wanted == "ended":
        return w.result is not None
    if wanted == "trouble":
        return trouble
    return state == wanted


# -- rows -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Badge:
    """A word or two beside the status, in a colour of its kind (``css``: a fixed set)."""

    css: str
    text: str


@dataclass(frozen=True, slots=True)
class Row:
    """One batch as the pages show it."""

    watch: Watch
    href: str  # the batch's page
    labels: tuple[tuple[str, str], ...]  # sorted by name
    state: str
    status: str  # what the API said, or what we know instead
    badges: tuple[Badge, ...]
    age: str  # how old what is shown is
    age_title: str  # the same moment as a date
    eta: str  # empty: none to show
    counts: str
    bar: tuple[tuple[str, float], ...]  # (css, percent of the width)
    error: str  # the last error, while polls fail
    note: str
    trouble: bool


def make_row(w: Watch, state: str, now: float) -> Row:
    badges: list[Badge] = []
    c = w.file_counts
    if state == "refused":
        badges.append(Badge("refused", "key refused"))
    elif state == "stale":
        badges.append(Badge("stale", "stale"))
    elif state == "stalled":
        badges.append(Badge("stalled", "stalled: no progress"))
    if c is not None and c.failed:
        badges.append(Badge("failed", _plural(c.failed, "failed file")))
    error = ""
    if w.result is None and w.failures:
        badges.append(Badge("failing", _plural(w.failures, "failed poll")))
        if w.last_error is not None:
            error = _cut(w.last_error, _ERROR_CHARS)
    return Row(
        watch=w,
        href=f"/batches/{quote(w.vector_store_id, safe='')}/{quote(w.batch_id, safe='')}",
        labels=tuple(sorted(w.labels.items())),
        state=state,
        status=status_text(w),
        badges=tuple(badges),
        age=age_text(w, now),
        age_title=_date(w.finished_at or w.last_poll_at or w.registered_at),
        eta=eta_text(w.eta_seconds) if state == "watching" and w.eta_seconds is not None else "",
        counts=counts_text(c),
        bar=bar(c),
        error=error,
        note=w.result.note if w.result is not None else "",
        trouble=has_trouble(w, state),
    )


def status_text(w: Watch) -> str:
    """What is known of the batch's status: the API's word, or that it has not answered yet."""
    if w.result is not None:
        return w.result.status.value
    if w.status is None:
        return "not yet seen"
    if w.phase is Phase.LISTING:
        return f"{w.status}, listing failed files"
    return w.status


def age_text(w: Watch, now: float) -> str:
    """How old what the row shows is."""
    if w.finished_at is not None:
        return f"ended {_ago(now - w.finished_at)}"
    if w.last_poll_at is None:
        return f"no answer yet; registered {_ago(now - w.registered_at)}"
    return f"as of {_ago(now - w.last_poll_at)}"


def counts_text(c: FileCounts | None) -> str:
    """Finished of expected, and every kind of finished that is not zero."""
    if c is None:
        return "counts not known yet"
    return f"{c.finished}/{c.expected} finished: {files_text(c)}"


def bar(c: FileCounts | None) -> tuple[tuple[str, float], ...]:
    if c is None or c.expected == 0:
        return ()
    parts = (("ok", c.completed), ("bad", c.failed), ("off", c.cancelled))
    return tuple((css, round(100 * n / c.expected, 2)) for css, n in parts if n)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ago(seconds: float) -> str:
    return f"{eta_text(max(seconds, 0.0))} ago"


def _date(wall: float | None) -> str:
    if wall is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))


# -- the pages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of the rows that match a query, and the counts of every state."""

    rows: tuple[Row, ...]
    matched: int
    page: int
    pages: int
    by_state: Mapping[str, int]
    trouble: int
    active: int
    ended: int


def listing(fleet: Fleet, query: Query) -> Listing:
    """Filter and cut one page, in the fleet's order. Rows are built only for that page:
    10,000 watches cost a comparison each, not a row each."""
    batches, states, trouble = fleet.batches, fleet.states, fleet.trouble
    if query.status or query.labels:
        chosen = [i for i in fleet.order if _matches(query, batches[i], states[i], trouble[i])]
    else:
        chosen = list(fleet.order)
    pages = max(1, math.ceil(len(chosen) / query.per_page))
    page = min(query.page, pages)
    start = (page - 1) * query.per_page
    now = fleet.taken_at
    rows = tuple(
        make_row(batches[i], states[i], now) for i in chosen[start : start + query.per_page]
    )
    ended = sum(1 for w in batches if w.result is not None)
    return Listing(
        rows=rows,
        matched=len(chosen),
        page=page,
        pages=pages,
        by_state=Counter(states),
        trouble=sum(trouble),
        active=len(batches) - ended,
        ended=ended,
    )


def templates() -> Jinja2Templates:
    """The pages' templates, from the package; every value is escaped unless marked safe (none
    is: the templates never use ``|safe``)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("watcher.daemon", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(version=__version__, ago=_ago, date=_date, duration=eta_text)
    return Jinja2Templates(env=env)


def _api_line(fleet: Fleet) -> str:
    """The header's word on the API while it accepts the key (the banner says the rest)."""
    if fleet.last_success_at is None:
        return "no answer from the API yet"
    return f"ok, last answer {_ago(fleet.taken_at - fleet.last_success_at)}"


def render_status(
    pages: Jinja2Templates,
    fleet: Fleet,
    query: Query,
    secrets: Sequence[str] = (),
    stores: Sequence[Watch] = (),
) -> str:
    """The status page's HTML; ``stores``, the watched vector stores, are linked below."""
    found = listing(fleet, query)
    html = pages.get_template("status.html").render(
        fleet=fleet,
        query=query,
        listing=found,
        api=_api_line(fleet),
        states=(*ACTIVE_STATES, *ENDED_STATES),
        groups=GROUPS,
        store_links=render_store_links(stores),
    )
    return redact(html, secrets)


def render_batch(
    pages: Jinja2Templates,
    fleet: Fleet,
    points: Sequence[tuple[float, int]],
    secrets: Sequence[str] = (),
) -> str:
    """One batch's page: ``fleet`` holds just this batch."""
    [w], [state] = fleet.batches, fleet.states
    counts = w.file_counts
    html = pages.get_template("batch.html").render(
        fleet=fleet,
        row=make_row(w, state, fleet.taken_at),
        v=w,
        api=_api_line(fleet),
        chart=progress_chart(points, counts.expected if counts else 0),
        points=len(points),
        elapsed=_elapsed(w, fleet.taken_at),
    )
    return redact(html, secrets)


def _elapsed(w: Watch, now: float) -> str:
    """How long the batch has been watched: from its first good reply (or its registration)
    to its end, or to now."""
    if w.result is not None:
        return eta_text(w.result.elapsed_seconds)
    return eta_text(max(0.0, now - (w.first_seen_at or w.registered_at)))


def render_problem(pages: Jinja2Templates, title: str, message: str) -> str:
    """A page for a request the pages cannot answer (a bad query, an unknown batch)."""
    return pages.get_template("problem.html").render(title=title, message=message)


def redact(html: str, secrets: Sequence[str]) -> str:
    """``html`` with every known secret masked, as it came and as the templates escape it: a
    last line of defence for text a server sent back."""
    for value in secrets:
        for form in {value, escape(value)}:
            html = html.replace(form, MASK)
    return html
