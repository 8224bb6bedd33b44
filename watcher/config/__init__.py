"""The daemon's configuration: read once at start, validated, frozen.

:mod:`~watcher.config.model` holds every key with its type, bounds, default and meaning;
:mod:`~watcher.config.values` the rules for single values (ids, labels, URLs, ``host:port``);
:mod:`~watcher.config.load` reads TOML and reports every problem at once, with
:mod:`~watcher.config.environment`'s variables over it;
:mod:`~watcher.config.render` prints the configuration as it takes effect. The settings that the
engine and the API client are given are derived in :mod:`watcher.config.settings`, which is not
imported here: it imports the core, and the core imports the model for its defaults.
"""

from .environment import ENV_PREFIX, env_name
from .load import (
    config_from_mapping,
    field_value,
    load_config,
    parse_store,
    parse_watch,
    require_api_key,
)
from .model import (
    DEFAULTS,
    SECTIONS,
    APIConfig,
    AuthStyle,
    Config,
    DiscoveryConfig,
    LogConfig,
    LogFormat,
    LogLevel,
    NotifyConfig,
    PollConfig,
    ServerConfig,
    StateConfig,
    StoreWatchConfig,
    WatchConfig,
)
from .render import render_effective
from .values import parse_listen, show, validate_id, validate_labels

__all__ = [
    "DEFAULTS",
    "ENV_PREFIX",
    "SECTIONS",
    "APIConfig",
    "AuthStyle",
    "Config",
    "DiscoveryConfig",
    "LogConfig",
    "LogFormat",
    "LogLevel",
    "NotifyConfig",
    "PollConfig",
    "ServerConfig",
    "StateConfig",
    "StoreWatchConfig",
    "WatchConfig",
    "config_from_mapping",
    "env_name",
    "field_value",
    "load_config",
    "parse_listen",
    "parse_store",
    "parse_watch",
    "render_effective",
    "require_api_key",
    "show",
    "validate_id",
    "validate_labels",
]
