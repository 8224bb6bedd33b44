"""What the status page and a batch's page show: states, rows, filters, paging, escaping."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from watcher.api.models import FileCounts, LastError
from watcher.core.policy import PollSettings
from watcher.core.results import BatchResult, FailedFile
from watcher.core.states import Phase, State
from watcher.core.watch import Watch
from watcher.credentials import MASK
from watcher.daemon.status_page import redact, render_batch, render_status, templates
from watcher.daemon.status_query import DEFAULT_PER_PAGE, Query, QueryError, listing, parse_query
from watcher.daemon.status_rows import Row, make_row
from watcher.daemon.status_state import MIN_STALE_SECONDS, Fleet, stale_after

NOW = 1_800_000_000.0
PAGES = templates()


def view(batch_id: str = "vsfb_1", **changes: Any) -> Watch:
    """A batch seen 2 s ago, in progress, 10 of 100 files finished (default polling: stale
    after 60 s)."""
    base = dataclasses.replace(
        Watch.new("vs_1", batch_id, registered_at=NOW - 60),
        status="in_progress",
        file_counts=FileCounts(in_progress=90, completed=10, total=100),
        eta_seconds=90.0,
        first_seen_at=NOW - 59,
        last_poll_at=NOW - 2,
    )
    return dataclasses.replace(base, **changes)


def ended(batch_id: str, status: str, counts: FileCounts, at: float, **extra: Any) -> Watch:
    result = BatchResult(
        vector_store_id="vs_1",
        batch_id=batch_id,
        status=State(status),
        file_counts=counts,
        failed_files=extra.pop("failed_files", ()),
        failed_by_code=extra.pop("failed_by_code", {}),
        failed_files_listed=counts.failed,
        failed_files_truncated=False,
        failed_files_complete=True,
        elapsed_seconds=12.0,
        finished_at=at,
        note=extra.pop("note", ""),
    )
    return view(
        batch_id,
        status=status,
        file_counts=counts,
        result=result,
        finished_at=at,
        phase=Phase.FINISHED,
        eta_seconds=None,
        **extra,
    )


def fleet(*batches: Watch, auth_error: str | None = None) -> Fleet:
    return Fleet.of(
        batches, PollSettings(), taken_at=NOW, auth_error=auth_error, last_success_at=NOW - 1
    )


def row_for(w: Watch, f: Fleet) -> Row:
    """The row of ``w`` as the page would build it."""
    return make_row(w, f.states[f.batches.index(w)], NOW)


def rows_of(html: str) -> list[str]:
    """The ``data-batch`` of each row of the table, in order."""
    return re.findall(r'<tr class="row-[^"]*" data-state="[^"]*" data-batch="([^"]*)"', html)


# -- states and rows --------------------------------------------------------------------------


def test_a_batch_never_seen_says_so_with_its_failed_polls_and_last_error() -> None:
    """A batch with no good reply yet is "not yet seen" — not in_progress — with its consecutive
    failures and the last error, and no ETA."""
    error = "retrieve: server error 503 http_status=503 request_id=req_1"
    v = view(
        status=None,
        file_counts=None,
        first_seen_at=None,
        last_poll_at=None,
        eta_seconds=None,
        failures=4,
        last_error=error,
        last_error_at=NOW - 1,
        registered_at=NOW - 20,
    )
    f = fleet(v)
    row = row_for(v, f)
    assert row.state == "not_seen"
    assert row.status == "not yet seen"
    assert row.counts == "counts not known yet"
    assert row.age == "no answer yet; registered 20s ago"
    assert [b.text for b in row.badges] == ["4 failed polls"]
    assert row.error == error
    assert row.eta == ""
    assert row.trouble


def test_what_is_older_than_its_stale_limit_is_stale() -> None:
    """A batch whose last good reply is older than its limit is stale, seen or never seen."""
    seen = view(last_poll_at=NOW - 61)
    never = view(status=None, last_poll_at=None, registered_at=NOW - 61)
    fresh = view(last_poll_at=NOW - 59)
    f = fleet(seen, never, fresh)
    assert list(f.states) == ["stale", "stale", "watching"]
    row = row_for(seen, f)
    assert [b.css for b in row.badges] == ["stale"]
    assert row.age == "as of 1m01s ago"
    assert row.eta == ""


def test_a_stalled_batch_shows_no_eta() -> None:
    """A stalled batch says so, in words and class, and shows no ETA though one was computed."""
    v = view(stalled=True, eta_seconds=30.0)
    f = fleet(v)
    row = row_for(v, f)
    assert row.state == "stalled"
    assert [b.text for b in row.badges] == ["stalled: no progress"]
    assert row.eta == ""
    assert make_row(view(), "watching", NOW).eta == "1m30s"


def test_a_refused_key_marks_every_active_row_and_leaves_ended_ones() -> None:
    """While the key is refused, active rows say "key refused" with the age of their last
    counts; a batch that had ended keeps its end."""
    active = view(last_poll_at=NOW - 30)
    done = ended("vsfb_2", "completed", FileCounts(completed=5, total=5), NOW - 100)
    f = fleet(active, done, auth_error="Incorrect API key provided")
    assert list(f.states) == ["refused", "completed"]
    row = row_for(active, f)
    assert row.status == "in_progress"
    assert [b.text for b in row.badges] == ["key refused"]
    assert row.age == "as of 30s ago"
    html = render_status(PAGES, f, Query())
    assert '<p class="banner refused" role="alert" id="api">' in html
    assert "The API refuses the key: Incorrect API key provided" in html


def test_a_cancelled_batch_shows_its_cancelled_files() -> None:
    """A cancelled batch's counts name the cancelled files, which "80/80 (0 failed)" hid."""
    v = ended("vsfb_c", "cancelled", FileCounts(completed=30, cancelled=50, total=80), NOW - 5)
    row = row_for(v, fleet(v))
    assert row.state == "cancelled"
    assert row.counts == "80/80 finished: 30 completed, 0 failed, 50 cancelled"
    assert row.bar == (("ok", 37.5), ("off", 62.5))
    assert not row.trouble


def test_ended_rows_keep_how_they_ended() -> None:
    """A row's state is how the watch ended; a completed batch with failed files is in trouble
    and says how many; an expired batch is in trouble."""
    clean = ended("a", "completed", FileCounts(completed=3, total=3), NOW)
    dirty = ended("b", "completed", FileCounts(completed=2, failed=1, total=3), NOW)
    gone = ended("c", "expired", FileCounts(total=3), NOW)
    f = fleet(clean, dirty, gone)
    assert list(f.states) == ["completed", "completed", "expired"]
    assert [row_for(v, f).trouble for v in (clean, dirty, gone)] == [
        False,
        True,
        True,
    ]
    assert [b.text for b in row_for(dirty, f).badges] == ["1 failed file"]


def test_stale_after_follows_the_longest_healthy_wait() -> None:
    """Stale means three times the slowest healthy poll (interval × slow-down, capped), and
    never sooner than the floor."""
    poll = PollSettings(interval=5.0, max_interval=300.0, slow_down_max_factor=4.0)
    assert stale_after(None, poll) == 60.0
    assert stale_after(100.0, poll) == 900.0  # 400 s capped at 300, three times
    assert stale_after(1.0, poll) == MIN_STALE_SECONDS
    assert stale_after(30.0, dataclasses.replace(poll, slow_down=False)) == 90.0


# -- the query, filters and paging ------------------------------------------------------------


def test_the_query_is_read_and_refused_by_name() -> None:
    """Filters and paging come from the query string; a bad value names its parameter."""
    query = parse_query(
        [("status", "stalled"), ("label", "team=search"), ("page", "3"), ("utm", "x")]
    )
    assert query == Query("stalled", (("team", "search"),), 3, DEFAULT_PER_PAGE)
    assert parse_query([("label", ""), ("status", "")]) == Query()
    for items, message in (
        ([("status", "in_progress")], "status: 'in_progress' is not one of"),
        ([("label", "team")], "label: 'team' is not name=value"),
        ([("page", "0")], "page: '0' is not a whole number"),
        ([("page", "-1")], "page: '-1' is not a whole number"),
        ([("per_page", "501")], "per_page: 501 is more than 500"),
        ([("label", f"k{i}=v") for i in range(11)], "label: 11 filters are more than 10"),
    ):
        with pytest.raises(QueryError, match=re.escape(message)):
            parse_query(items)


def test_a_query_makes_its_own_links() -> None:
    """Links keep the filters, change what they say, and go back to page 1."""
    query = Query("failed", (("team", "a&b"),), page=4, per_page=50)
    assert query.url(page=5) == "/?status=failed&label=team%3Da%26b&page=5&per_page=50"
    assert query.url(status="") == "/?label=team%3Da%26b&per_page=50"
    assert Query().url() == "/"
    assert parse_query([("label", "team=a&b")]).labels == (("team", "a&b"),)


def test_filters_by_state_group_and_label() -> None:
    """``status`` keeps one state or group; every ``label`` must match."""
    batches = (
        view("w1", labels={"team": "a"}),
        view("s1", stalled=True, labels={"team": "b"}),
        ended("f1", "failed", FileCounts(failed=2, total=2), NOW - 1, labels={"team": "a"}),
        ended("c1", "completed", FileCounts(completed=2, total=2), NOW - 2),
    )
    f = fleet(*batches)

    def ids(**query: Any) -> list[str]:
        return [r.watch.batch_id for r in listing(f, Query(**query)).rows]

    assert ids() == ["s1", "w1", "f1", "c1"]  # trouble first, then the rest, then ended
    assert ids(status="stalled") == ["s1"]
    assert ids(status="active") == ["s1", "w1"]
    assert ids(status="ended") == ["f1", "c1"]
    assert ids(status="trouble") == ["s1", "f1"]
    assert ids(labels=(("team", "a"),)) == ["w1", "f1"]
    assert ids(status="failed", labels=(("team", "a"),)) == ["f1"]
    assert ids(labels=(("team", "a"), ("env", "x"))) == []
    found = listing(f, Query(status="failed"))
    assert found.by_state == {"watching": 1, "stalled": 1, "failed": 1, "completed": 1}
    assert (found.active, found.ended, found.trouble, found.matched) == (2, 2, 2, 1)


def test_pages_split_the_rows_and_a_page_past_the_end_shows_the_last() -> None:
    """``per_page`` rows a page, newest ended first; a page number past the end is the last."""
    batches = tuple(
        ended(f"b{i:02d}", "completed", FileCounts(completed=1, total=1), NOW - i)
        for i in range(25)
    )
    f = fleet(*batches)
    second = listing(f, Query(page=2, per_page=10))
    assert (second.page, second.pages, second.matched) == (2, 3, 25)
    assert [r.watch.batch_id for r in second.rows] == [f"b{i:02d}" for i in range(10, 20)]
    last = listing(f, Query(page=99, per_page=10))
    assert last.page == 3
    assert [r.watch.batch_id for r in last.rows] == [f"b{i:02d}" for i in range(20, 25)]
    html = render_status(PAGES, f, Query(page=2, per_page=10))
    assert "rows 11–20 of 25" in html
    assert 'href="/?per_page=10" rel="first"' in html
    assert 'href="/?page=3&amp;per_page=10" rel="next"' in html


def test_ten_thousand_watches_render_one_page_of_rows() -> None:
    """At 10,000 watches a filtered page renders only its rows, and counts all that match.
    (How long it takes is a benchmark's question, not a test's.)"""
    batches = tuple(
        view(f"vsfb_{i:05d}", stalled=i % 7 == 0, labels={"shard": str(i % 10)})
        for i in range(10_000)
    )
    f = fleet(*batches)
    html = render_status(PAGES, f, Query(status="stalled", labels=(("shard", "3"),)))
    found = rows_of(html)
    assert len(found) == DEFAULT_PER_PAGE
    assert all(int(b.rsplit("_", 1)[1]) % 7 == 0 for b in found)
    matching = sum(1 for i in range(10_000) if i % 7 == 0 and i % 10 == 3)
    assert f"rows 1–100 of {matching}" in html


# -- HTML -------------------------------------------------------------------------------------


def test_server_text_on_the_pages_is_escaped() -> None:
    """Labels, codes, messages and notes holding markup show as text, never as markup, on both
    pages; every row links to its batch's page, not to the control API."""
    evil = '<script>alert("x")</script>'
    v = ended(
        "vsfb_x",
        "failed",
        FileCounts(failed=1, total=1),
        NOW - 1,
        failed_files=(FailedFile("file-1", LastError(evil, f"message {evil}")),),
        failed_by_code={evil: 1},
        note=f"note {evil}",
        labels={"team": evil},
    )
    f = fleet(v)
    for html in (render_status(PAGES, f, Query()), render_batch(PAGES, f, [(NOW, 1)])):
        assert "<script>" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    page = render_status(PAGES, f, Query())
    assert 'href="/batches/vs_1/vsfb_x"' in page
    assert "/v1/watches" not in page


def test_a_batchs_page_shows_its_failed_files_error_and_chart() -> None:
    """A batch's page lists each failed file with code and message, the last error seen, and
    the progress as an SVG line."""
    v = ended(
        "vsfb_f",
        "completed",
        FileCounts(completed=1, failed=2, total=3),
        NOW - 3,
        failed_files=(
            FailedFile("file-a", LastError("unsupported_file", "The file type is not supported.")),
            FailedFile("file-b", None),
        ),
        failed_by_code={"unsupported_file": 1, "unknown": 1},
        last_error="rate limited: slow down http_status=429",
        last_error_at=NOW - 40,
    )
    html = render_batch(PAGES, fleet(v), [(NOW - 20, 0), (NOW - 10, 2), (NOW - 3, 3)])
    assert "<tr><td><code>file-a</code></td><td><code>unsupported_file</code></td>" in html
    assert "The file type is not supported." in html
    assert "<tr><td><code>file-b</code></td><td><code>unknown</code></td>" in html
    assert "rate limited: slow down http_status=429" in html
    assert re.search(r'<polyline class="line" points="[\d., ]+"/>', html)
    assert "3 points" in html
    assert "watched for</dt><dd>12s" in html
    empty = render_batch(PAGES, fleet(view()), [])
    assert 'id="chart-none"' in empty
    assert 'id="last-error">none<' in empty


def test_known_secrets_are_masked_as_sent_and_as_escaped() -> None:
    """A secret a server echoed is masked in the HTML, raw or as the template escaped it."""
    html = "<p>sk-abc&def</p><p>sk-abc&amp;def</p><p>fine</p>"
    assert redact(html, ["sk-abc&def"]) == f"<p>{MASK}</p><p>{MASK}</p><p>fine</p>"
    v = view(last_error="echo sk-secret-1234", last_error_at=NOW, failures=1)
    page = render_status(PAGES, fleet(v), Query(), ["sk-secret-1234"])
    assert "sk-secret-1234" not in page
    assert f"echo {MASK}" in page
