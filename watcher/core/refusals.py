"""Refused credentials: which watches wait, and which one probes whether they work again.

A 401 refuses the key itself: every watch waits. A 403 denies access to one vector store: only
its watches wait. While a refusal lasts, one watch at a time is let through every
``retry_seconds`` as a probe; any good reply in the scope ends the refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AuthError

#: The scope of a refusal: ``None`` for the key, else a vector store id.
Scope = str | None


@dataclass(slots=True)
class _Refusal:
    error: AuthError
    next_probe: float


class Refusals:
    def __init__(self) -> None:
        self._by_scope: dict[Scope, _Refusal] = {}

    def __bool__(self) -> bool:
        return bool(self._by_scope)

    @property
    def key_error(self) -> AuthError | None:
        """The API's refusal of the key itself, while it lasts."""
        refusal = self._by_scope.get(None)
        return None if refusal is None else refusal.error

    @property
    def stores(self) -> dict[str, AuthError]:
        """Vector stores the API denies us access to, while it lasts."""
        return {vs: r.error for vs, r in self._by_scope.items() if vs is not None}

    def refuse(self, vector_store_id: str, error: AuthError, next_probe: float) -> bool:
        """The API refused a request for a watch in ``vector_store_id``; the next probe goes at
        ``next_probe``. True if this refusal is news (its scope was not refused already)."""
        scope = vector_store_id if error.status == 403 else None
        new = scope not in self._by_scope
        self._by_scope[scope] = _Refusal(error, next_probe)
        return new

    def wait(self, vector_store_id: str, now: float, retry_seconds: float) -> float:
        """How long a watch of ``vector_store_id`` must wait before it may send; 0 lets it go
        (as the probe, when its scope is refused: the next probe is then a period away)."""
        if not self._by_scope:
            return 0.0
        refusal = self._by_scope.get(None) or self._by_scope.get(vector_store_id)
        if refusal is None:
            return 0.0
        if now < refusal.next_probe:
            return refusal.next_probe - now
        refusal.next_probe = now + retry_seconds
        return 0.0

    def accept(self, vector_store_id: str) -> list[Scope]:
        """A request for a watch of ``vector_store_id`` got a good reply: the refusals it
        disproves are over. Returns their scopes."""
        if not self._by_scope:
            return []
        return [s for s in (None, vector_store_id) if self._by_scope.pop(s, None) is not None]
