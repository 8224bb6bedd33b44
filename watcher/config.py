"""The daemon's configuration: read once at start, validated, frozen.

Sources, each over the one before: the defaults on the dataclasses below; ``OPENAI_BASE_URL``
(only for ``api.base_url``, and only when the file does not set it); the TOML file; variables
``BATCH_WATCHER_<SECTION>_<KEY>`` for the scalar keys of ``[api]``, ``[poll]``, ``[server]``,
``[state]``, ``[log]`` and ``[notify]``. An empty variable sets its key back to the default.

Every problem is collected and raised together as one :class:`~watcher.errors.ConfigError`,
each starting with the key (or variable) it is about. Secrets are never held as values, only
as a :class:`~watcher.credentials.SecretSource` that reads them when needed. Relative paths
resolve against the working directory, not against the configuration file's directory.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

from .api.client import MAX_FILE_PAGES
from .config_schema import (
    REQUIRED_WATCH_KEYS,
    SCHEMA,
    TABLE_KINDS,
    WATCH_SCHEMA,
    dotted,
    hint,
    parse_listen,
    read_table,
    show,
)
from .credentials import MASK, SecretSource
from .errors import ConfigError
from .logs import LogFormat

ENV_PREFIX: Final = "BATCH_WATCHER_"


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class APIConfig:
    """``[api]``: where the API is and how we talk to it. ``api_key`` reads the key on demand."""

    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: Path | None = None  # wins over api_key_env when set
    organization: str | None = None
    project: str | None = None
    auth: Literal["bearer", "azure"] = "bearer"
    query: Mapping[str, str] = field(default_factory=dict)  # extra query parameters
    timeout_seconds: float = 30.0
    max_requests_per_minute: int = 600
    max_concurrency: int = 8
    max_response_bytes: int = 8 * 1024 * 1024
    max_file_pages: int = MAX_FILE_PAGES  # per list of a batch's failed files
    environ: InitVar[Mapping[str, str] | None] = None
    api_key: SecretSource = field(init=False, repr=False, compare=False)

    def __post_init__(self, environ: Mapping[str, str] | None) -> None:
        object.__setattr__(self, "query", _frozen(self.query))
        source = SecretSource(
            env=self.api_key_env, file=self.api_key_file, environ=_environ(environ)
        )
        object.__setattr__(self, "api_key", source)


@dataclass(frozen=True, slots=True)
class PollConfig:
    """``[poll]``: how often to ask, and when to give up. Zero turns a stall or deadline off."""

    interval_seconds: float = 5.0
    max_interval_seconds: float = 300.0
    stall_after_seconds: float = 900.0
    deadline_seconds: float = 0.0
    cancel_on_timeout: bool = False
    min_interval_seconds: float = 0.5  # the floor under the server's openai-poll-after-ms
    slow_down: bool = True  # poll less often while a batch makes no progress


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``[server]``: the HTTP endpoint for metrics, health and control."""

    listen: str = "127.0.0.1:9464"
    control_token_env: str = "BATCH_WATCHER_CONTROL_TOKEN"  # noqa: S105 - a name, not a secret
    control_token_file: Path | None = None
    environ: InitVar[Mapping[str, str] | None] = None
    control_token: SecretSource = field(init=False, repr=False, compare=False)

    def __post_init__(self, environ: Mapping[str, str] | None) -> None:
        source = SecretSource(
            env=self.control_token_env, file=self.control_token_file, environ=_environ(environ)
        )
        object.__setattr__(self, "control_token", source)

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


@dataclass(frozen=True, slots=True)
class StateConfig:
    """``[state]``: the SQLite file and how much it keeps."""

    path: Path = Path("batch-watcher.sqlite3")
    retention_seconds: float = 86400.0
    max_watches: int = 10000
    max_failed_files: int = 1000  # per batch


@dataclass(frozen=True, slots=True)
class LogConfig:
    """``[log]``: ``auto`` is console on a terminal, JSON otherwise."""

    format: LogFormat = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """``[notify]``: a webhook told when a batch finishes; ``webhook_secret`` signs it."""

    webhook_url: str | None = None
    webhook_secret_env: str | None = None
    webhook_secret_file: Path | None = None
    timeout_seconds: float = 10.0
    max_attempts: int = 5
    environ: InitVar[Mapping[str, str] | None] = None
    webhook_secret: SecretSource | None = field(init=False, repr=False, compare=False)

    def __post_init__(self, environ: Mapping[str, str] | None) -> None:
        source = None
        if self.webhook_secret_env or self.webhook_secret_file:
            source = SecretSource(
                env=self.webhook_secret_env,
                file=self.webhook_secret_file,
                environ=_environ(environ),
            )
        object.__setattr__(self, "webhook_secret", source)


_OVERRIDES: Final = (
    "deadline_seconds",
    "cancel_on_timeout",
    "interval_seconds",
    "stall_after_seconds",
)


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """One ``[[watch]]``: a batch to watch. ``None`` overrides fall back to ``[poll]``."""

    vector_store_id: str
    batch_id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    deadline_seconds: float | None = None
    cancel_on_timeout: bool | None = None
    interval_seconds: float | None = None
    stall_after_seconds: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))

    @property
    def key(self) -> tuple[str, str]:
        return (self.vector_store_id, self.batch_id)

    def poll_config(self, poll: PollConfig) -> PollConfig:
        """``poll`` with this watch's overrides applied."""
        overrides = {name: getattr(self, name) for name in _OVERRIDES}
        return replace(poll, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    api: APIConfig = field(default_factory=APIConfig)
    poll: PollConfig = field(default_factory=PollConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    state: StateConfig = field(default_factory=StateConfig)
    log: LogConfig = field(default_factory=LogConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    watches: tuple[WatchConfig, ...] = ()


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] = os.environ) -> Config:
    """Read and validate the TOML file at ``path``, then the environment over it."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot read the configuration file ({error.strerror or error})"
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return config_from_mapping(data, environ)


def config_from_mapping(
    data: Mapping[str, object], environ: Mapping[str, str] = os.environ
) -> Config:
    """Validate ``data`` (a parsed TOML document) with the environment over it."""
    problems: list[str] = []
    merged, origins = _apply_environment(data, environ, problems)
    for name in merged:
        if name not in SCHEMA and name != "watch":
            problems.append(f"{dotted('', name)}: unknown key{hint(name, [*SCHEMA, 'watch'])}")

    raw = {name: merged.get(name, {}) for name in SCHEMA}
    values = {name: read_table(raw[name], name, SCHEMA[name], origins, problems) for name in SCHEMA}
    poll = PollConfig(**values["poll"])
    for low, high in (
        ("interval_seconds", "max_interval_seconds"),
        ("min_interval_seconds", "interval_seconds"),
    ):
        _check_order(raw["poll"], values["poll"], poll, low, high, origins, problems)
    state = StateConfig(**values["state"])
    config = Config(
        api=APIConfig(**values["api"], environ=environ),
        poll=poll,
        server=ServerConfig(**values["server"], environ=environ),
        state=state,
        log=LogConfig(**values["log"]),
        notify=NotifyConfig(**values["notify"], environ=environ),
        watches=_read_watches(merged.get("watch", []), poll, state, problems),
    )
    if problems:
        raise ConfigError(problems)
    return config


def parse_watch(data: object, poll: PollConfig, where: str = "watch") -> WatchConfig:
    """One watch table (from the file or the control API), or :class:`ConfigError`."""
    problems: list[str] = []
    watch = _read_watch(data, where, poll, problems)
    if watch is None:
        raise ConfigError(problems)
    return watch


def _apply_environment(
    data: Mapping[str, object], environ: Mapping[str, str], problems: list[str]
) -> tuple[dict[str, object], dict[str, str]]:
    """``data`` with the environment's values put in, and which variable set which key."""
    merged: dict[str, object] = {
        name: dict(value) if isinstance(value, Mapping) else value for name, value in data.items()
    }
    origins: dict[str, str] = {}
    api = merged.setdefault("api", {})
    if environ.get("OPENAI_BASE_URL") and isinstance(api, dict) and "base_url" not in api:
        api["base_url"] = environ["OPENAI_BASE_URL"]
        origins["api.base_url"] = "OPENAI_BASE_URL"
    unknown: list[tuple[str, str]] = []
    for variable, text in sorted(environ.items()):
        rest = variable.removeprefix(ENV_PREFIX)
        section = next((s for s in SCHEMA if rest.startswith(f"{s.upper()}_")), None)
        if rest == variable or section is None:
            continue  # not ours, e.g. BATCH_WATCHER_CONTROL_TOKEN
        name = rest[len(section) + 1 :].lower()
        key = SCHEMA[section].get(name)
        if key is None:
            unknown.append((variable, section))
        elif key.kind in TABLE_KINDS:
            problems.append(f"{variable}: {section}.{name} is a table, set it in the file")
        elif isinstance(table := merged.setdefault(section, {}), dict):
            if text:
                table[name] = text
            else:
                table.pop(name, None)
            origins[f"{section}.{name}"] = variable
    secret_names = _secret_env_names(merged)
    for variable, section in unknown:
        if variable not in secret_names:  # a secret may live in a variable that looks like ours
            names = [env_name(section, name) for name in SCHEMA[section]]
            problems.append(f"{variable}: unknown variable{hint(variable, names)}")
    return merged, origins


def env_name(section: str, key: str) -> str:
    """The variable that overrides ``section.key``."""
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def _secret_env_names(merged: Mapping[str, object]) -> set[str]:
    """The variables the configuration names as holding secrets (the defaults are not ours)."""
    names = set()
    for section, key in (
        ("api", "api_key_env"),
        ("server", "control_token_env"),
        ("notify", "webhook_secret_env"),
    ):
        table = merged.get(section)
        value = table.get(key) if isinstance(table, Mapping) else None
        if isinstance(value, str):
            names.add(value)
    return names


def _check_order(
    raw: object,
    values: Mapping[str, object],
    config: PollConfig,
    low: str,
    high: str,
    origins: Mapping[str, str],
    problems: list[str],
) -> None:
    """Require ``low <= high`` in ``[poll]``, blaming the key that was set (and naming the
    variable, if the environment set it)."""
    given = raw if isinstance(raw, Mapping) else {}
    if any(name in given and name not in values for name in (low, high)):
        return  # already reported
    low_value, high_value = getattr(config, low), getattr(config, high)
    if low_value <= high_value:
        return
    if high in given or low not in given:
        source = f" (from {origins[f'poll.{high}']})" if f"poll.{high}" in origins else ""
        problems.append(
            f"poll.{high}: {show(high_value)} is not >= poll.{low} ({low_value}){source}"
        )
    else:
        source = f" (from {origins[f'poll.{low}']})" if f"poll.{low}" in origins else ""
        problems.append(
            f"poll.{low}: {show(low_value)} is not <= poll.{high} ({high_value}){source}"
        )


def _read_watches(
    raw: object, poll: PollConfig, state: StateConfig, problems: list[str]
) -> tuple[WatchConfig, ...]:
    if not isinstance(raw, list):
        problems.append(f"watch: {show(raw)} is not an array of tables ([[watch]])")
        return ()
    if len(raw) > state.max_watches:
        problems.append(
            f"watch: {len(raw)} watches are more than state.max_watches ({state.max_watches})"
        )
    watches: list[WatchConfig] = []
    first: dict[tuple[str, str], int] = {}
    for index, item in enumerate(raw):
        watch = _read_watch(item, f"watch[{index}]", poll, problems)
        if watch is None:
            continue
        if watch.key in first:
            problems.append(
                f"watch[{index}]: the same batch as watch[{first[watch.key]}]"
                f" ({watch.vector_store_id} / {watch.batch_id})"
            )
            continue
        first[watch.key] = index
        watches.append(watch)
    return tuple(watches)


def _read_watch(
    data: object, where: str, poll: PollConfig, problems: list[str]
) -> WatchConfig | None:
    before = len(problems)
    values = read_table(data, where, WATCH_SCHEMA, {}, problems)
    if isinstance(data, Mapping):
        problems.extend(
            f"{where}.{name}: missing" for name in REQUIRED_WATCH_KEYS if name not in data
        )
    interval = values.get("interval_seconds")
    if interval is not None and interval > poll.max_interval_seconds:
        problems.append(
            f"{where}.interval_seconds: {show(interval)} is not <= poll.max_interval_seconds"
            f" ({poll.max_interval_seconds})"
        )
    if interval is not None and interval < poll.min_interval_seconds:
        problems.append(
            f"{where}.interval_seconds: {show(interval)} is not >= poll.min_interval_seconds"
            f" ({poll.min_interval_seconds})"
        )
    return None if len(problems) > before else WatchConfig(**values)


def render_effective(config: Config) -> str:
    """The configuration as TOML, for ``check-config``: secrets by source, never by value."""
    lines = [
        "# batch-watcher: the effective configuration (defaults, file and environment).",
        _secret_line("api key", config.api.api_key),
        _secret_line("control token", config.server.control_token),
        _secret_line("webhook secret", config.notify.webhook_secret),
    ]
    for name, keys in SCHEMA.items():
        lines += ["", f"[{name}]", *(_toml_line(getattr(config, name), key) for key in keys)]
    for watch in config.watches:
        lines += ["", "[[watch]]"]
        lines += [_toml_line(watch, k) for k in WATCH_SCHEMA if getattr(watch, k) is not None]
    return "\n".join(lines) + "\n"


def _secret_line(what: str, source: SecretSource | None) -> str:
    if source is None:
        return f"# {what}: not configured"
    if source.current() is None:
        return f"# {what}: missing ({source.description})"
    return f"# {what}: present ({source.description}), value {MASK}"


def _toml_line(section: object, key: str) -> str:
    value = getattr(section, key)
    return f"# {key} is not set" if value is None else f"{key} = {_toml_value(value)}"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_string(k)} = {_toml_string(v)}" for k, v in value.items())
        return f"{{ {items} }}" if items else "{}"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    escaped = (
        f"\\{ch}" if ch in '"\\' else f"\\u{ord(ch):04x}" if ch < " " or ch == "\x7f" else ch
        for ch in text
    )
    return f'"{"".join(escaped)}"'
