"""The configuration as it takes effect, as TOML (for ``check-config``): secrets by source only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import tomli_w
from pydantic import BaseModel

from ..credentials import MASK, SecretSource
from .model import SECTIONS, Config, StateConfig


def render_effective(config: Config) -> str:
    """The configuration as TOML that loads back to it: secrets by source, never by value;
    a key that is not set is left out."""
    header = [
        "# batch-watcher: the effective configuration (defaults, file and environment).",
        _secret_line("api key", config.api.api_key),
        _secret_line("control token", config.server.control_token),
        _secret_line("webhook secret", config.notify.webhook_secret),
    ]
    document: dict[str, object] = {name: _table(getattr(config, name)) for name in SECTIONS}
    if config.watches:
        document["watch"] = [_table(watch) for watch in config.watches]
    if config.stores:
        document["store"] = [_table(store) for store in config.stores]
    return "\n".join(header) + "\n\n" + tomli_w.dumps(document)


def _secret_line(what: str, source: SecretSource | None) -> str:
    if source is None:
        return f"# {what}: not configured"
    if source.current() is None:
        return f"# {what}: missing ({source.description})"
    return f"# {what}: present ({source.description}), value {MASK}"


def _table(model: BaseModel) -> dict[str, object]:
    table = {
        name: _plain(value)
        for name in type(model).model_fields
        if (value := getattr(model, name)) is not None
    }
    if isinstance(model, StateConfig) and model.url is not None:
        table["url"] = model.shown_url  # the password only ever from the environment, masked
    return table


def _plain(value: object) -> object:
    if isinstance(value, BaseModel):
        return _table(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Path):
        return str(value)
    return value
