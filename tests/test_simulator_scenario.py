"""The simulator's pure parts: progress math, file failures, pagination, faults, rate limit."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.api.models import FILE_STATUSES, TERMINAL_STATUSES, LastError
from watcher.simulator import BatchSpec, Fault, FaultKind, RateLimit, format_duration
from watcher.simulator.faults import FaultBook
from watcher.simulator.files import Order, PageQuery, file_id, file_index, page_indices
from watcher.simulator.ratelimit import RateLimiter
from watcher.simulator.scenario import (
    FinalStatus,
    expand_template,
    failed_among,
    failed_file_index,
    file_error,
    file_status,
    is_failed_file,
    processed_at,
    progress_at,
    spec_from_json,
    spec_to_json,
    terminal_after,
)


@st.composite
def specs(draw: st.DrawFn) -> BatchSpec:
    total = draw(st.integers(0, 300))
    final: FinalStatus = draw(st.sampled_from(["completed", "failed", "cancelled"]))
    cancelled = draw(st.integers(0, total)) if final == "cancelled" else 0
    failed = draw(st.integers(0, total - cancelled))
    curve = draw(st.none() | st.integers(0, 10_000))
    stall = None if curve is not None else draw(st.none() | st.integers(0, total))
    return BatchSpec(
        "vs",
        "b",
        total_files=total,
        duration_seconds=draw(st.sampled_from([0, 0.5, 7, 100, 3600])),
        start_delay_seconds=draw(st.sampled_from([0, 2.5])),
        final_status=final,
        failed_files=failed,
        cancelled_files=cancelled,
        stall_after_files=stall,
        stall_seconds=draw(st.sampled_from([0, 30])),
        curve_seed=curve,
    )


moments = st.floats(-10, 5000, allow_nan=False)


@given(specs(), moments, moments)
def test_progress_never_goes_back(spec: BatchSpec, a: float, b: float) -> None:
    """Later moments never have fewer processed or failed files."""
    early, late = progress_at(spec, min(a, b)), progress_at(spec, max(a, b))
    assert early.processed <= late.processed
    assert early.failed <= late.failed


@given(specs(), moments)
def test_counts_add_up(spec: BatchSpec, elapsed: float) -> None:
    """At every moment the five counts are consistent and add up to the total."""
    p = progress_at(spec, elapsed)
    assert min(p.in_progress, p.completed, p.failed, p.cancelled) >= 0
    assert p.in_progress + p.completed + p.failed + p.cancelled == spec.total_files
    assert p.failed == failed_among(spec, p.processed)


@given(specs(), st.none() | moments)
def test_terminal_after_is_the_first_terminal_moment(spec: BatchSpec, cancel: float | None) -> None:
    """Just before ``terminal_after`` the batch is not terminal; at it, it is."""
    cancel = None if cancel is None else max(0.0, cancel)
    end = terminal_after(spec, cancel_requested=cancel, cancel_seconds=1)
    before = progress_at(spec, end - 1e-6, cancel_requested=cancel, cancel_seconds=1)
    at = progress_at(spec, end, cancel_requested=cancel, cancel_seconds=1)
    assert before.status not in TERMINAL_STATUSES
    assert at.status in TERMINAL_STATUSES
    assert at.in_progress == 0


@given(specs())
def test_final_state_matches_the_spec(spec: BatchSpec) -> None:
    """At its natural end the batch has the spec's status, failures and cancellations."""
    p = progress_at(spec, spec.finishes_after())
    assert p.status == spec.final_status
    assert p.failed == spec.failed_files
    assert p.cancelled == spec.cancelled_files


@given(specs())
def test_failures_are_where_the_counts_say(spec: BatchSpec) -> None:
    """Failed files in any prefix match the count; the n-th failure's index is exact."""
    flags = [is_failed_file(spec, i) for i in range(spec.total_files)]
    for processed in range(0, spec.processable_files + 1, 7):
        assert sum(flags[:processed]) == failed_among(spec, processed)
    failing = [i for i, f in enumerate(flags) if f]
    assert len(failing) == spec.failed_files
    assert [failed_file_index(spec, n) for n in range(spec.failed_files)] == failing


def test_errors_cycle_over_failed_files() -> None:
    """Failed files take the spec's errors in turn."""
    errors = (LastError("a", "1"), LastError("b", "2"), LastError("zzz_unknown", "3"))
    spec = BatchSpec("vs", "b", 10, 10, failed_files=5, errors=errors)
    codes = [file_error(spec, failed_file_index(spec, n)).code for n in range(5)]
    assert codes == ["a", "b", "zzz_unknown", "a", "b"]


def test_stall_pauses_and_delays() -> None:
    """A stall holds progress at its file count for its duration, then resumes."""
    spec = BatchSpec("vs", "b", 10, 10, stall_after_files=3, stall_seconds=5)
    assert [processed_at(spec, t) for t in (2.9, 3, 7.9, 8, 9, 15)] == [2, 3, 3, 3, 4, 10]
    assert spec.finishes_after() == 15


def test_cancel_freezes_progress() -> None:
    """A cancel stops processing at the moment it was asked; the rest end cancelled."""
    spec = BatchSpec("vs", "b", 10, 10, failed_files=10)
    during = progress_at(spec, 6, cancel_requested=4, cancel_seconds=3)
    after = progress_at(spec, 7, cancel_requested=4, cancel_seconds=3)
    assert (during.status, during.processed, during.cancelled) == ("cancelling", 4, 0)
    assert (after.status, after.processed, after.cancelled) == ("cancelled", 4, 6)
    assert file_status(spec, after, 3) == "failed"
    assert file_status(spec, after, 4) == "cancelled"


@given(
    st.integers(0, 250),
    st.integers(1, 100),
    st.sampled_from(["asc", "desc"]),
    st.none() | st.sampled_from(FILE_STATUSES),
    st.floats(0, 1),
)
@settings(max_examples=60)
def test_pages_cover_each_file_once(
    total: int, limit: int, order: Order, status: str | None, when: float
) -> None:
    """Walking pages forward with ``after``, or backward with ``before``, lists every matching
    file exactly once, in order."""
    spec = BatchSpec("vs", "b", total, 10, failed_files=total // 3)
    progress = progress_at(spec, when * 12, cancel_requested=8, cancel_seconds=1)
    expected = [
        i for i in range(total) if status is None or file_status(spec, progress, i) == status
    ]
    if order == "desc":
        expected.reverse()
    forward: list[int] = []
    after = None
    while True:
        page, more = page_indices(
            spec, progress, PageQuery(limit, order, after=after, status=status)
        )
        forward += page
        if not more:
            break
        assert page
        after = page[-1]
    assert forward == expected
    if not expected:
        return
    # Backward from the last file: ``before`` pages must lead back to the first.
    backward = [expected[-1]]
    before = expected[-1]
    while True:
        query = PageQuery(limit, order, before=before, status=status)
        page, more = page_indices(spec, progress, query)
        backward = page + backward
        if not more:
            break
        before = page[0]
    assert backward == expected


def test_file_ids_round_trip() -> None:
    """A file id names its batch and index; others are not files of the batch."""
    assert file_index("vsfb_1", 10, file_id("vsfb_1", 7)) == 7
    assert file_index("vsfb_1", 10, file_id("vsfb_1", 10)) is None
    assert file_index("vsfb_1", 10, file_id("vsfb_2", 7)) is None
    assert file_index("vsfb_1", 10, "file-vsfb_1-7") is None


def test_page_query_validates_limit_and_filter() -> None:
    """Limits outside 1..100 and unknown statuses are refused."""
    with pytest.raises(ValueError, match="limit"):
        PageQuery(limit=0)
    with pytest.raises(ValueError, match="filter"):
        PageQuery(status="pending")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.02, "20ms"),
        (0.9994, "1s"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.25, "59.25s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (90.5, "1m30.5s"),
        (3723, "1h2m3s"),
    ],
)
def test_durations_are_written_like_openai(seconds: float, text: str) -> None:
    """Rate-limit reset times use OpenAI's duration format."""
    assert format_duration(seconds) == text


def test_rate_limiter_counts_fixed_windows() -> None:
    """A window allows its budget, refuses the rest, and a new window starts afresh."""
    limiter = RateLimiter(RateLimit(2, 10))
    decisions = [limiter.hit(t) for t in (0, 1, 2, 9.5, 10)]
    assert [d.allowed for d in decisions] == [True, True, False, False, True]
    assert [d.remaining for d in decisions] == [1, 0, 0, 0, 1]
    assert decisions[3].reset_seconds == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"total_files": -1}, "total_files"),
        ({"duration_seconds": float("inf")}, "duration_seconds"),
        ({"failed_files": 11}, "failed_files"),
        ({"cancelled_files": 2}, "cancelled_files"),
        ({"final_status": "paused"}, "final_status"),
        ({"total_files": "10"}, "total_files"),
        ({"failed_files": 1, "errors": ()}, "errors"),
        ({"batch_id": "a/b"}, "'/'"),
    ],
)
def test_spec_problems_name_the_field(fields: dict[str, object], problem: str) -> None:
    """An invalid spec is refused with the offending field named."""
    base: dict[str, object] = {
        "vector_store_id": "vs",
        "batch_id": "b",
        "total_files": 10,
        "duration_seconds": 1,
    }
    with pytest.raises(ValueError, match=problem):
        spec_from_json(base | fields)


def test_spec_json_round_trips() -> None:
    """A spec survives its JSON form, errors and faults included."""
    spec = BatchSpec(
        "vs", "b", 10, 5, failed_files=2, faults=(Fault(FaultKind.SLOW, delay_seconds=2),)
    )
    assert spec_from_json(spec_to_json(spec)) == spec


def test_template_jitter_is_seeded() -> None:
    """A template's jitter depends only on its seed."""
    template = BatchSpec("vs", "t", 10, 60)
    one = expand_template(template, 5, prefix="p", start_jitter_seconds=10, duration_jitter=0.5)
    two = expand_template(template, 5, prefix="p", start_jitter_seconds=10, duration_jitter=0.5)
    other = expand_template(template, 5, prefix="p", start_jitter_seconds=10, seed=1)
    assert one == two
    assert one != other
    assert all(0 <= s.start_delay_seconds <= 10 and 30 <= s.duration_seconds <= 90 for s in one)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "meteor"}, "kind"),
        ({"kind": "slow", "times": 0}, "times"),
        ({"kind": "slow", "probability": 2}, "probability"),
        ({"kind": "slow", "endpoint": "upload"}, "endpoint"),
        ({"kind": "server_error", "status": 200}, "status"),
        ({"kind": "slow", "delay_seconds": -1}, "delay_seconds"),
        ({"kind": "slow", "later": True}, "unknown"),
    ],
)
def test_fault_problems_name_the_field(fields: dict[str, object], problem: str) -> None:
    """An invalid fault is refused with the offending field named."""
    with pytest.raises(ValueError, match=problem):
        Fault.from_json(fields)


def test_fault_book_order_times_and_endpoints() -> None:
    """A batch's faults come first, ``times`` runs out, endpoint-bound kinds stay put."""
    book = FaultBook(random.Random(0))
    book.arm(Fault(FaultKind.SERVER_ERROR, times=1))
    book.arm(Fault(FaultKind.EMPTY_PAGE, times=1), "b1")
    book.arm(Fault(FaultKind.DROP, endpoint="cancel", times=2), "b1")
    assert book.draw("retrieve", "b1") == Fault(FaultKind.SERVER_ERROR, times=1)
    assert book.draw("retrieve", "b1") is None
    assert book.draw("list", "b2") is None
    assert book.draw("list", "b1") == Fault(FaultKind.EMPTY_PAGE, times=1)
    assert book.draw("cancel", "b1") is not None
    assert [f["remaining"] for f in book.snapshot()] == [1]
    assert book.clear() == 1
    assert book.draw("cancel", "b1") is None
