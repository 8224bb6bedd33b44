"""Reading a vector store from the API: tolerant of what servers get wrong, strict where a wrong
value would mislead."""

from __future__ import annotations

from typing import Any

import pytest

from watcher.api.vector_stores import MAX_NAME, parse_store_page, parse_vector_store
from watcher.errors import ProtocolError


def store(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "vs_1",
        "object": "vector_store",
        "status": "completed",
        "file_counts": {"in_progress": 0, "completed": 2, "failed": 1, "cancelled": 0, "total": 3},
    }
    return {**base, **fields}


def test_a_store_is_read_with_its_facts() -> None:
    """Status, counts, name, usage, expiry and activity are read as the API gives them."""
    s = parse_vector_store(
        store(
            name="Docs",
            usage_bytes=123,
            expires_after={"anchor": "last_active_at", "days": 7},
            expires_at=1_800_000_000,
            last_active_at=1_700_000_000,
        )
    )
    assert (s.id, s.status, s.name, s.usage_bytes) == ("vs_1", "completed", "Docs", 123)
    assert s.file_counts.failed == 1
    assert (s.expires_after_days, s.expires_at, s.last_active_at) == (
        7,
        1_800_000_000,
        1_700_000_000,
    )


def test_hostile_or_odd_fields_are_tolerated() -> None:
    """A name with control characters becomes one bounded printable line; a usage, expiry or
    timestamp that is not one is left out rather than refusing the store."""
    s = parse_vector_store(
        store(
            name="a\nb\x00" + "x" * 1000,
            usage_bytes=-5,
            expires_after={"days": "seven"},
            expires_at="soon",
            last_active_at=None,
            status="archived",
        )
    )
    assert s.name is not None
    assert s.name.startswith("a b\ufffd")
    assert len(s.name) == MAX_NAME
    assert (s.usage_bytes, s.expires_after_days, s.expires_at, s.last_active_at) == (
        None,
        None,
        None,
        None,
    )
    assert s.status == "archived"
    assert parse_vector_store(store(name=42)).name is None


@pytest.mark.parametrize("bad", [[], store(id=None), store(status=""), store(file_counts=[])])
def test_a_reply_that_is_no_store_is_a_protocol_error(bad: object) -> None:
    """A reply with no id, no status or unreadable counts is refused."""
    with pytest.raises(ProtocolError):
        parse_vector_store(bad)


def test_a_store_page_is_read() -> None:
    """A page of the store list gives its stores and whether more follow; a bad one is refused."""
    page = parse_store_page(
        {"object": "list", "data": [store(), store(id="vs_2")], "has_more": True}
    )
    assert [s.id for s in page.data] == ["vs_1", "vs_2"]
    assert page.has_more
    with pytest.raises(ProtocolError):
        parse_store_page({"data": "nope"})
