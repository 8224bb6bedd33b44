"""How to reach the API: its URL, key, headers, limits and timeout."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..config.model import DEFAULTS, AuthStyle
from ..credentials import Secret, SecretSource

DEFAULT_BASE_URL: Final = DEFAULTS.api.base_url


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How to reach the API. Built from config or the command line."""

    base_url: str = DEFAULT_BASE_URL
    api_key: SecretSource | Secret | None = None
    organization: str | None = None
    project: str | None = None
    auth: AuthStyle = DEFAULTS.api.auth
    query: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float = DEFAULTS.api.timeout_seconds
    max_response_bytes: int = DEFAULTS.api.max_response_bytes
    max_connections: int = 64

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> ClientSettings:
        """Settings from ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``; ``overrides`` win."""
        base_url = environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        settings = cls(
            base_url=base_url, api_key=SecretSource(env="OPENAI_API_KEY", environ=environ)
        )
        return settings.replace(**overrides) if overrides else settings

    def replace(self, **changes: Any) -> ClientSettings:
        return dataclasses.replace(self, **changes)
