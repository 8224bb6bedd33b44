"""Secrets (the API key, the control token, the webhook secret) and where they come from.

A :class:`Secret` never shows its value in ``repr``, ``str``, f-strings or logs; only
:meth:`Secret.reveal` gives it, at the one place that puts it on the wire. A
:class:`SecretSource` reads a secret from an environment variable or a file (a mounted Kubernetes
secret), and re-reads the file when it changes, so a rotated key is picked up without a restart.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

MASK = "********"


class Secret:
    """A string that will not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str) -> bool:
        """Compare in constant time."""
        return hmac.compare_digest(self._value.encode(), candidate.encode())

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        # Bytes: compare_digest refuses str with non-ASCII characters.
        return isinstance(other, Secret) and self.matches(other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret is not to be pickled")


@dataclass(slots=True)
class SecretSource:
    """Where a secret lives: a file (preferred when set) or an environment variable.

    ``current()`` is cheap enough to call per request: the file is stat'ed at most once per
    ``recheck_seconds`` and read again only when its modification time or size changed.
    """

    env: str | None = None
    file: Path | None = None
    # Two sources are equal when they name the same place: what was read, and from which
    # environment, is not part of that.
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, compare=False)
    recheck_seconds: float = 1.0
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    _cached: Secret | None = field(default=None, init=False, compare=False)
    _stamp: tuple[int, int] | None = field(default=None, init=False, compare=False)
    _checked_at: float = field(default=float("-inf"), init=False, compare=False)

    @property
    def description(self) -> str:
        """Where the secret comes from, for messages (never the value)."""
        if self.file is not None:
            return f"file {self.file}"
        if self.env:
            return f"environment variable {self.env}"
        return "nowhere (not configured)"

    def current(self) -> Secret | None:
        if self.file is not None:
            return self._from_file(self.file)
        if self.env:
            value = self.environ.get(self.env, "").strip()
            return Secret(value) if value else None
        return None

    def _from_file(self, path: Path) -> Secret | None:
        now = self.clock()
        if now - self._checked_at < self.recheck_seconds:
            return self._cached
        self._checked_at = now
        try:
            st = path.stat()
        except OSError:
            self._cached, self._stamp = None, None
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                text = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                text = ""
            self._cached = Secret(text) if text else None
            self._stamp = stamp
        return self._cached

    def require(self, key: str) -> Secret:
        """The secret, or a :class:`ConfigError` naming ``key`` and where we looked."""
        secret = self.current()
        if secret is None:
            raise ConfigError(f"{key}: no secret found in {self.description}")
        return secret
