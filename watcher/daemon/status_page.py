"""The HTML of the status page (``/``) and of a batch's page (``/batches/{vs}/{batch}``).

The HTML comes from Jinja2 templates in ``templates/``, which escape every value by default; what
they show comes from :mod:`watcher.daemon.status_state` (each watch's state),
:mod:`watcher.daemon.status_query` (the filters and the page of rows) and
:mod:`watcher.daemon.status_rows` (what a row says). A worker thread runs everything here (see
:mod:`watcher.daemon.pages`).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import jinja2
from starlette.templating import Jinja2Templates

from .. import __version__
from ..core.watch import Watch
from ..core.wording import eta_text
from ..credentials import MASK
from .chart import progress_chart
from .status_query import Query, listing
from .status_rows import ago_text, date_text, make_row
from .status_state import ACTIVE_STATES, ENDED_STATES, GROUPS, Fleet
from .store_page import render_store_links


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
    env.globals.update(version=__version__, ago=ago_text, date=date_text, duration=eta_text)
    return Jinja2Templates(env=env)


def _api_line(fleet: Fleet) -> str:
    """The header's word on the API while it accepts the key (the banner says the rest)."""
    if fleet.last_success_at is None:
        return "no answer from the API yet"
    return f"ok, last answer {ago_text(fleet.taken_at - fleet.last_success_at)}"


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
        row=make_row(w, state, fleet.taken_at, fleet.owners.get(w.key) if fleet.owners else None),
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
