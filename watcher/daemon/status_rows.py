"""One batch as the pages show it: its badges, its counts, its bar, and how old it is — in
words, not colour alone."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from ..api.models import FileCounts
from ..core.states import Phase
from ..core.watch import Watch
from ..core.wording import eta_text, files_text
from ..fleet.roster import Ownership
from .status_state import has_trouble

_ERROR_CHARS: Final = 200  # of an error message in a row; a batch's page shows it whole


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
    owner: str = ""  # fleet mode: the replica that polls it, or "" while none does
    lease: str = ""  # fleet mode: owned, unowned or expired


def make_row(w: Watch, state: str, now: float, ownership: Ownership | None = None) -> Row:
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
        age_title=date_text(w.finished_at or w.last_poll_at or w.registered_at),
        eta=eta_text(w.eta_seconds) if state == "watching" and w.eta_seconds is not None else "",
        counts=counts_text(c),
        bar=bar(c),
        error=error,
        note=w.result.note if w.result is not None else "",
        trouble=has_trouble(w, state),
        owner=(ownership.owner or "") if ownership is not None else "",
        lease=ownership.lease if ownership is not None else "",
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
        return f"ended {ago_text(now - w.finished_at)}"
    if w.last_poll_at is None:
        return f"no answer yet; registered {ago_text(now - w.registered_at)}"
    return f"as of {ago_text(now - w.last_poll_at)}"


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


def ago_text(seconds: float) -> str:
    return f"{eta_text(max(seconds, 0.0))} ago"


def date_text(wall: float | None) -> str:
    if wall is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))
