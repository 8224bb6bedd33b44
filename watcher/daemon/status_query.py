"""The status page's query (filters and page) and the page of rows it picks."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from ..core.watch import Watch
from .status_rows import Row, make_row
from .status_state import ACTIVE_STATES, ENDED_STATES, GROUPS, Fleet

DEFAULT_PER_PAGE: Final = 100
MAX_PER_PAGE: Final = 500
MAX_LABEL_FILTERS: Final = 10


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
    now, owners = fleet.taken_at, fleet.owners
    rows = tuple(
        make_row(batches[i], states[i], now, owners.get(batches[i].key) if owners else None)
        for i in chosen[start : start + query.per_page]
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
