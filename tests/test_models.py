"""Reading the API's objects: tolerant where the API is inconsistent, strict where it matters."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.api.models import (
    FileCounts,
    LastError,
    parse_batch_file,
    parse_file_batch,
    parse_file_page,
)
from watcher.errors import ProtocolError

BATCH: dict[str, Any] = {
    "id": "vsfb_abc123",
    "object": "vector_store.file_batch",
    "created_at": 1699061776,
    "vector_store_id": "vs_abc123",
    "status": "in_progress",
    "file_counts": {"in_progress": 1, "completed": 1, "failed": 0, "cancelled": 0, "total": 0},
}


def test_the_documented_example_parses_with_its_inconsistent_total() -> None:
    """The reference page's own example (total 0 beside non-zero parts) is read as said."""
    batch = parse_file_batch(BATCH)
    assert batch.file_counts == FileCounts(in_progress=1, completed=1, total=0)
    assert batch.file_counts.expected == 2
    assert not batch.is_terminal


@pytest.mark.parametrize("obj", ["vector_store.file_batch", "vector_store.files_batch", None])
def test_both_object_spellings_and_none_are_accepted(obj: str | None) -> None:
    """The object field never decides whether a reply is a batch."""
    assert parse_file_batch({**BATCH, "object": obj}).id == "vsfb_abc123"


def test_missing_counts_are_zero_and_extra_fields_ignored() -> None:
    """Missing count keys read as 0; unknown fields are ignored."""
    batch = parse_file_batch({**BATCH, "file_counts": {"completed": 3}, "new_field": [1]})
    assert batch.file_counts == FileCounts(completed=3)


def test_unknown_status_is_kept_and_not_terminal() -> None:
    """A status the API adds later (cancelling) is kept as a string and not terminal."""
    batch = parse_file_batch({**BATCH, "status": "cancelling"})
    assert batch.status == "cancelling"
    assert not batch.is_terminal


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": None}, "'id'"),
        ({"status": ""}, "'status'"),
        ({"file_counts": {"completed": "3"}}, "not a number"),
        ({"file_counts": {"completed": -1}}, "out of range"),
        ({"file_counts": {"completed": 1.5}}, "whole number"),
        ({"file_counts": [1, 2]}, "not an object"),
        ({"id": "x" * 500}, "plausible"),
    ],
)
def test_what_matters_is_strict(change: dict[str, Any], message: str) -> None:
    """A batch without id or status, or with counts that are not counts, is a protocol error."""
    with pytest.raises(ProtocolError, match=message):
        parse_file_batch({**BATCH, **change})


def test_missing_vector_store_id_is_filled_from_the_request() -> None:
    """Servers that omit vector_store_id still give a batch, with the id we asked for."""
    data = {k: v for k, v in BATCH.items() if k != "vector_store_id"}
    assert parse_file_batch(data, vector_store_id="vs_1").vector_store_id == "vs_1"
    with pytest.raises(ProtocolError):
        parse_file_batch(data)


def test_files_keep_any_error_code() -> None:
    """last_error codes outside the enum are kept; a missing code reads 'unknown'."""
    error = {"code": "parsing_error", "message": "x"}
    f = parse_batch_file({"id": "file-1", "status": "failed", "last_error": error})
    assert f.last_error == LastError("parsing_error", "x")
    g = parse_batch_file({"id": "file-2", "status": "failed", "last_error": {"message": "y"}})
    assert g.last_error == LastError("unknown", "y")


def test_page_cursor_fields_are_not_trusted() -> None:
    """A page is its data and has_more; first_id/last_id are ignored."""
    page = parse_file_page(
        {
            "data": [{"id": "file-1", "status": "failed", "last_error": None}],
            "first_id": "bogus",
            "last_id": "also-bogus",
            "has_more": True,
        }
    )
    assert [f.id for f in page.data] == ["file-1"]
    assert page.has_more is True


@pytest.mark.parametrize(
    "body",
    [[], {"data": {}}, {"data": [], "has_more": "yes"}, {"data": [1]}, {"data": [{"id": 3}]}],
)
def test_malformed_pages_are_protocol_errors(body: object) -> None:
    """Pages that are not pages raise ProtocolError."""
    with pytest.raises(ProtocolError):
        parse_file_page(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
#: Ids a parser must accept, among any others: without them nearly every example stopped at the
#: first field, and the fields after it were seldom read at all.
plausible_ids = st.sampled_from(["vsfb_1", "file-abc123"])
batch_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(plausible_ids, st.text(max_size=20), json_values),
        "status": st.one_of(st.sampled_from(["in_progress", "completed", "x"]), json_values),
        "vector_store_id": json_values,
        "created_at": json_values,
        "file_counts": st.one_of(
            st.dictionaries(
                st.sampled_from(["in_progress", "completed", "failed", "cancelled", "total"]),
                json_values,
            ),
            json_values,
        ),
    },
)


# The parser checks the reply's type, then its fields one by one. With plausible ids among the
# values, 100 examples read the fields after the id more often than 300 did without them
# (each example costs ~10-30 ms to draw).
@settings(max_examples=100, deadline=None)
@given(st.one_of(json_values, batch_like))
def test_batch_parser_raises_only_our_errors(value: object) -> None:
    """Any JSON value either parses to a batch or raises ProtocolError, nothing else."""
    try:
        batch = parse_file_batch(value, vector_store_id="vs")
    except ProtocolError:
        return  # any other exception fails the test
    assert batch.id
    assert batch.status


# Each item of ``data`` is parsed on its own, so a handful of items is as telling as many, and
# makes a page whose every item parses likelier; with plausible ids among the values, 100
# examples reach a parsed page and every refusal more often than 300 did with unbounded lists.
@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "data": st.lists(
                    st.one_of(
                        json_values, st.fixed_dictionaries({"id": plausible_ids | json_values})
                    ),
                    max_size=4,
                )
            },
            optional={"has_more": json_values},
        ),
    )
)
def test_page_parser_raises_only_our_errors(value: object) -> None:
    """Any JSON value either parses to a page or raises ProtocolError, nothing else."""
    try:
        page = parse_file_page(value)
    except ProtocolError:
        return  # any other exception fails the test
    assert all(f.id for f in page.data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_other_errors(raw: bytes) -> None:
    """Bytes that decode to JSON go through the parser; only ProtocolError may come out."""
    try:
        value = json.loads(raw)
    except ValueError:
        return
    with contextlib.suppress(ProtocolError):
        parse_file_batch(value, vector_store_id="vs")
