"""The read-only page of one watched vector store (``GET /stores/{vector_store_id}``), and the
list of store links on the status page, from Jinja2 templates with autoescaping on: the store's
name, its files' error messages and the watch's labels are data, never markup. Nothing secret is
on the watch record, so nothing secret can reach the page.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cache

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ..core.watch import Watch


def _when(unix: float | None) -> str:
    if unix is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("watcher.daemon", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        auto_reload=False,
    )
    env.filters["when"] = _when
    return env


def render_store_page(watch: Watch, *, owner: str | None = None) -> str:
    """The page of one store watch; ``owner``: fleet mode, the replica that polls it."""
    return (
        _environment()
        .get_template("store.html")
        .render(
            watch=watch,
            store=watch.store,
            counts=watch.file_counts,
            status=watch.display_status,
            labels=sorted(watch.labels.items()),
            owner=owner,
        )
    )


def render_store_links(stores: Sequence[Watch]) -> Markup:
    """The status page's section of store watches, each linking to its page (empty if none)."""
    ordered = sorted(stores, key=lambda w: w.vector_store_id)
    return Markup(_environment().get_template("store_links.html").render(stores=ordered))  # noqa: S704
