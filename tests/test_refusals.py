"""Refused credentials, with plain numbers."""

from __future__ import annotations

from watcher.core.refusals import Refusals
from watcher.errors import AuthError

KEY_REFUSED = AuthError("the API refused the API key", status=401)
DENIED = AuthError("the API denied access", status=403)


def test_a_401_holds_every_store_and_lets_one_probe_through_per_period() -> None:
    """After a 401 every watch waits until the next probe; the first one due then goes, and
    the next probe is a period later."""
    refusals = Refusals()
    assert refusals.refuse("vs_a", KEY_REFUSED, next_probe=30.0)
    assert not refusals.refuse("vs_b", KEY_REFUSED, next_probe=31.0)  # no news: same scope
    assert refusals.key_error is KEY_REFUSED
    assert refusals.wait("vs_c", now=10.0, retry_seconds=30.0) == 21.0
    assert refusals.wait("vs_c", now=31.0, retry_seconds=30.0) == 0.0  # the probe
    assert refusals.wait("vs_a", now=31.5, retry_seconds=30.0) == 29.5


def test_a_403_holds_only_its_store() -> None:
    """A 403 for one vector store leaves the key and the other stores alone."""
    refusals = Refusals()
    assert refusals.refuse("vs_a", DENIED, next_probe=30.0)
    assert refusals.key_error is None
    assert refusals.stores == {"vs_a": DENIED}
    assert refusals.wait("vs_b", now=1.0, retry_seconds=30.0) == 0.0
    assert refusals.wait("vs_a", now=1.0, retry_seconds=30.0) == 29.0


def test_a_good_reply_ends_the_refusals_it_disproves() -> None:
    """A good reply for a store ends the key's refusal and that store's, not another store's."""
    refusals = Refusals()
    refusals.refuse("vs_a", KEY_REFUSED, next_probe=30.0)
    refusals.refuse("vs_a", DENIED, next_probe=30.0)
    refusals.refuse("vs_b", DENIED, next_probe=30.0)
    assert refusals.accept("vs_a") == [None, "vs_a"]
    assert refusals.stores == {"vs_b": DENIED}
    assert refusals.accept("vs_a") == []
