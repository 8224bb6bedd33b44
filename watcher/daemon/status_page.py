"""The small HTML status page at ``/``: every watched batch at a glance.

Everything from the API or from users is escaped; the page loads nothing from elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import quote

from .. import __version__
from ..cli.report import eta_text
from ..core.watch import Watch
from .store_page import render_store_links

if TYPE_CHECKING:
    from ..core.engine import Engine

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd;vertical-align:top}
th{background:#f4f4f4}
.bar{background:#eee;width:14em;height:.9em;border-radius:3px;overflow:hidden;display:flex}
.ok{background:#3a3}.bad{background:#c33}.off{background:#999}
.s-completed{color:#282}.s-failed,.s-not_found,.s-timed_out{color:#b22}.s-cancelled{color:#777}
.muted{color:#777}code{font-size:12px}
"""


def _bar(watch: Watch) -> str:
    c = watch.file_counts
    if c is None or c.expected == 0:
        return '<div class="bar"></div>'
    parts = []
    for css, n in (("ok", c.completed), ("bad", c.failed), ("off", c.cancelled)):
        if n:
            parts.append(f'<div class="{css}" style="width:{100 * n / c.expected:.2f}%"></div>')
    return f'<div class="bar" title="{c.finished}/{c.expected}">{"".join(parts)}</div>'


def _row(watch: Watch) -> str:
    vs, batch = watch.vector_store_id, watch.batch_id
    c = watch.file_counts
    counts = "—" if c is None else f"{c.finished}/{c.expected} ({c.failed} failed)"
    status = watch.display_status + (" (stalled)" if watch.stalled else "")
    by_code = ""
    if watch.result is not None and watch.result.failed_by_code:
        by_code = "<br>".join(
            f"<code>{escape(code)}</code>: {n}"
            for code, n in sorted(watch.result.failed_by_code.items())
        )
    eta = eta_text(watch.eta_seconds) if watch.result is None else ""
    labels = ", ".join(f"{escape(k)}={escape(v)}" for k, v in sorted(watch.labels.items()))
    href = f"/v1/watches/{quote(vs, safe='')}/{quote(batch, safe='')}"
    return (
        "<tr>"
        f'<td><a href="{escape(href)}"><code>{escape(vs)}/{escape(batch)}</code></a>'
        f'<div class="muted">{labels}</div></td>'
        f'<td class="s-{escape(watch.display_status)}">{escape(status)}</td>'
        f"<td>{_bar(watch)}<div>{escape(counts)}</div></td>"
        f"<td>{escape(eta)}</td>"
        f"<td>{by_code}</td>"
        "</tr>"
    )


def render_status_page(
    watches: Sequence[Watch], engine: Engine, stores: Sequence[Watch] = ()
) -> str:
    active = [w for w in watches if w.result is None]
    ended = sorted(
        (w for w in watches if w.result is not None), key=lambda w: -(w.finished_at or 0)
    )
    rows = "".join(_row(w) for w in [*active, *ended])
    api = "credentials refused" if engine.auth_error is not None else "ok"
    if engine.last_success_at is not None:
        api += f", last answer {time.time() - engine.last_success_at:.0f}s ago"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<title>batch-watcher</title><style>{_STYLE}</style></head>
<body>
<h1>batch-watcher <span class="muted">{escape(__version__)}</span></h1>
<p>{len(active)} watching, {len(ended)} ended · API: {escape(api)} ·
<a href="/metrics">metrics</a> · <a href="/v1/watches">watches (JSON)</a> ·
<a href="/healthz">healthz</a> · <a href="/readyz">readyz</a></p>
<table><thead><tr><th>batch</th><th>status</th><th>progress</th><th>ETA</th>
<th>failed files by code</th></tr></thead>
<tbody>{rows or '<tr><td colspan="5" class="muted">no watches</td></tr>'}</tbody></table>
{render_store_links(stores)}
</body></html>
"""
