"""The configuration model: every key, its type, bounds, default and meaning, written once.

The engine's, the polling policy's and the API client's settings take their defaults from
:data:`DEFAULTS`; the command line takes its options' defaults and help from the fields'
defaults and descriptions. Reading TOML and the environment is :mod:`watcher.config.load`.

Secrets are never held as values, only as a :class:`~watcher.credentials.SecretSource` built
from the ``*_env`` and ``*_file`` keys and the environment the model was validated with
(``context={"environ": ...}``; :data:`os.environ` otherwise).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from ..credentials import SecretSource
from .values import (
    EnvName,
    FilePath,
    Header,
    Id,
    Integer,
    Labels,
    Listen,
    PgUrl,
    Query,
    Url,
    choice,
    mask_url,
    parse_listen,
    show,
)

#: How the API key is sent: ``Authorization: Bearer <key>`` or Azure's ``api-key: <key>``.
AuthStyle = Literal["bearer", "azure"]
#: ``auto`` is console on a terminal, JSON otherwise.
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]


#: One empty table for every default (read-only, so it can be shared).
_EMPTY_TABLE: Final[Mapping[str, str]] = MappingProxyType({})


def _no_table() -> Mapping[str, str]:
    return _EMPTY_TABLE


def _environ(context: Any) -> Mapping[str, str]:
    environ = context.get("environ") if isinstance(context, Mapping) else None
    return os.environ if environ is None else environ


class Section(BaseModel):
    """A table of the file: frozen, strict (TOML's types, no coercion), no unknown keys."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, allow_inf_nan=False, validate_default=False
    )


class APIConfig(Section):
    """``[api]``: where the API is and how we talk to it. ``api_key`` reads the key on demand."""

    base_url: Url = Field(
        "https://api.openai.com/v1",
        description="the API's base URL, http(s)",
    )
    api_key_env: EnvName = Field(
        "OPENAI_API_KEY", description="the environment variable that holds the API key"
    )
    api_key_file: FilePath | None = Field(
        None, description="a file that holds the API key; wins over api_key_env"
    )
    organization: Header | None = Field(None, description="sent as OpenAI-Organization")
    project: Header | None = Field(None, description="sent as OpenAI-Project")
    auth: Annotated[AuthStyle, choice(AuthStyle)] = Field(
        "bearer",
        description="how the key is sent: bearer (Authorization: Bearer) or azure (api-key)",
    )
    query: Query = Field(
        default_factory=_no_table, description="extra query parameters on every request"
    )
    timeout_seconds: float = Field(30.0, gt=0, description="seconds one request may take")
    max_requests_per_minute: Integer = Field(
        600, gt=0, description="requests per minute, shared by every batch"
    )
    max_concurrency: Integer = Field(8, ge=1, le=1024, description="requests in flight at once")
    max_response_bytes: Integer = Field(
        8 * 1024 * 1024, ge=1024, description="bytes; a larger response body is refused"
    )
    max_file_pages: Integer = Field(
        1000,
        ge=1,
        description="pages of a batch's failed-file list at most (fewer when its count needs "
        "fewer): a list past them is called endless",
    )
    _api_key: SecretSource = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._api_key = SecretSource(
            env=self.api_key_env, file=self.api_key_file, environ=_environ(context)
        )

    @property
    def api_key(self) -> SecretSource:
        return self._api_key


class PollConfig(Section):
    """``[poll]``: how often to ask, and when to give up. Zero turns a stall or deadline off."""

    interval_seconds: float = Field(5.0, gt=0, description="seconds between polls of a batch")
    max_interval_seconds: float = Field(
        300.0, gt=0, description="seconds; the longest interval slowing down may reach"
    )
    stall_after_seconds: float = Field(
        900.0,
        ge=0,
        description="seconds without progress before a batch is flagged stalled; 0: never",
    )
    deadline_seconds: float = Field(
        0.0, ge=0, description="seconds a batch may take before it ends timed_out; 0: no deadline"
    )
    cancel_on_timeout: bool = Field(False, description="cancel a batch whose deadline passed")
    min_interval_seconds: float = Field(
        0.5, gt=0, description="seconds; the floor under the server's openai-poll-after-ms"
    )
    slow_down: bool = Field(True, description="poll less often while a batch makes no progress")
    adaptive: bool = Field(
        True,
        description="poll from the estimated time until a batch ends: rarely while the end is "
        "far, closely as it nears, within about interval_seconds of it; false: every interval",
    )

    @model_validator(mode="after")
    def _in_order(self) -> Self:
        """``min_interval <= interval <= max_interval``, blaming the key that was set."""
        found = []
        for low, high in (
            ("interval_seconds", "max_interval_seconds"),
            ("min_interval_seconds", "interval_seconds"),
        ):
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value <= high_value:
                continue
            if high in self.model_fields_set or low not in self.model_fields_set:
                found.append((high, f"{show(high_value)} is not >= poll.{low} ({low_value})"))
            else:
                found.append((low, f"{show(low_value)} is not <= poll.{high} ({high_value})"))
        if found:
            raise PydanticCustomError("problems", "{problems}", {"problems": found})
        return self

    @property
    def stall_after(self) -> float | None:
        """``stall_after_seconds``, or ``None`` when it is off."""
        return self.stall_after_seconds or None

    @property
    def deadline(self) -> float | None:
        """``deadline_seconds``, or ``None`` when there is none."""
        return self.deadline_seconds or None


class ServerConfig(Section):
    """``[server]``: the HTTP endpoint for metrics, health and control."""

    listen: Listen = Field(
        "127.0.0.1:9464", description='where to listen, "host:port" (IPv6: "[::1]:9464")'
    )
    control_token_env: EnvName = Field(
        "BATCH_WATCHER_CONTROL_TOKEN",
        description="the environment variable that holds the control API's token",
    )
    control_token_file: FilePath | None = Field(
        None, description="a file that holds the control API's token; wins over the variable"
    )
    _control_token: SecretSource = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._control_token = SecretSource(
            env=self.control_token_env, file=self.control_token_file, environ=_environ(context)
        )

    @property
    def control_token(self) -> SecretSource:
        return self._control_token

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


class StateConfig(Section):
    """``[state]``: the SQLite file, or a PostgreSQL ``url`` (fleet mode), and how much it
    keeps."""

    path: FilePath = Field(
        Path("batch-watcher.sqlite3"), description="the SQLite file that keeps the watches"
    )
    retention_seconds: float = Field(86400.0, ge=0, description="seconds a finished batch is kept")
    max_watches: Integer = Field(10000, ge=1, description="the most batches watched at once")
    max_failed_files: Integer = Field(
        1000, ge=0, description="the most failed files remembered per batch"
    )
    url: PgUrl | None = Field(
        None,
        repr=False,
        description="fleet mode: a PostgreSQL URL (postgresql://user@host:5432/db) instead of"
        " the SQLite file; its password only from BATCH_WATCHER_STATE_URL, PGPASSWORD or a"
        " passfile",
    )
    lease_seconds: float = Field(
        15.0,
        ge=1,
        description="fleet mode: seconds a replica's watches stay its own after its last heartbeat",
    )

    @property
    def shown_url(self) -> str | None:
        """``url`` with its password masked, for anything that shows it."""
        return mask_url(self.url) if self.url is not None else None


class LogConfig(Section):
    """``[log]``: where the daemon's log lines go, and how many."""

    format: Annotated[LogFormat, choice(LogFormat)] = Field(
        "auto", description="log format on stderr (auto: console on a terminal, JSON otherwise)"
    )
    level: Annotated[LogLevel, choice(LogLevel)] = Field(
        "info", description="the least severe log level shown"
    )


class NotifyConfig(Section):
    """``[notify]``: a webhook told when a batch finishes; ``webhook_secret`` signs it."""

    webhook_url: Url | None = Field(None, description="gets a POST when a batch finishes")
    webhook_secret_env: EnvName | None = Field(
        None, description="the environment variable that holds the webhook's signing secret"
    )
    webhook_secret_file: FilePath | None = Field(
        None, description="a file that holds the webhook's signing secret; wins over the variable"
    )
    timeout_seconds: float = Field(10.0, gt=0, description="seconds per delivery attempt")
    max_attempts: Integer = Field(5, ge=1, description="delivery attempts before giving up")
    _webhook_secret: SecretSource | None = PrivateAttr(None)

    def model_post_init(self, context: Any) -> None:
        if self.webhook_secret_env or self.webhook_secret_file:
            self._webhook_secret = SecretSource(
                env=self.webhook_secret_env,
                file=self.webhook_secret_file,
                environ=_environ(context),
            )

    @property
    def webhook_secret(self) -> SecretSource | None:
        return self._webhook_secret


class DiscoveryConfig(Section):
    """``[discovery]``: watch what nobody registered."""

    vector_stores: bool = Field(
        False, description="watch every vector store the key can list (GET /vector_stores)"
    )
    interval_seconds: float = Field(
        300.0, gt=0, description="seconds between two listings of the vector stores"
    )


class StoreWatchConfig(Section):
    """One ``[[store]]``: a vector store to watch as a whole, for as long as it lives."""

    vector_store_id: Id
    labels: Labels = Field(default_factory=_no_table)


_ERROR_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class RetryConfig(Section):
    """A ``[[watch]]``'s ``retry``: send the batch's failed files of these codes again, as a new
    batch the daemon watches, at most ``max_attempts`` times along one chain of retries."""

    codes: tuple[str, ...] = Field(
        ("server_error",),
        min_length=1,
        max_length=20,
        description="the last_error.code values whose failed files are sent again",
    )
    max_attempts: int = Field(
        2, ge=1, le=10, description="retry batches at most, counting from the first batch"
    )

    @model_validator(mode="before")
    @classmethod
    def _codes_from_array(cls, data: Any) -> Any:
        # TOML and JSON give arrays as lists; the model keeps a tuple.
        if isinstance(data, Mapping) and isinstance(data.get("codes"), list):
            return {**data, "codes": tuple(data["codes"])}
        return data

    @model_validator(mode="after")
    def _plausible_codes(self) -> Self:
        bad = [code for code in self.codes if not _ERROR_CODE.fullmatch(code)]
        if bad:
            text = f"{show(bad[0])} is not an error code (letters, digits, _.:-; 1..64)"
            raise PydanticCustomError("problems", "{problems}", {"problems": [("codes", text)]})
        return self


class WatchConfig(Section):
    """One ``[[watch]]``: a batch to watch. ``None`` overrides fall back to ``[poll]``.

    Validated with ``context={"poll": PollConfig}``, its interval must lie within that poll's.
    """

    vector_store_id: Id
    batch_id: Id
    labels: Labels = Field(default_factory=_no_table)
    deadline_seconds: float | None = Field(None, ge=0)
    cancel_on_timeout: bool | None = None
    interval_seconds: float | None = Field(None, gt=0)
    stall_after_seconds: float | None = Field(None, ge=0)
    #: Off unless given: send failed files of some codes again, automatically.
    retry: RetryConfig | None = None

    @model_validator(mode="after")
    def _within_poll(self, info: ValidationInfo) -> Self:
        poll = info.context.get("poll") if isinstance(info.context, Mapping) else None
        interval = self.interval_seconds
        if not isinstance(poll, PollConfig) or interval is None:
            return self
        found = []
        if interval > poll.max_interval_seconds:
            found.append(
                f"{show(interval)} is not <= poll.max_interval_seconds"
                f" ({poll.max_interval_seconds})"
            )
        if interval < poll.min_interval_seconds:
            found.append(
                f"{show(interval)} is not >= poll.min_interval_seconds"
                f" ({poll.min_interval_seconds})"
            )
        if found:
            problems = [("interval_seconds", text) for text in found]
            raise PydanticCustomError("problems", "{problems}", {"problems": problems})
        return self


class Config(Section):
    """The whole configuration."""

    api: APIConfig = Field(default_factory=APIConfig)
    poll: PollConfig = Field(default_factory=PollConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    watches: tuple[WatchConfig, ...] = ()
    stores: tuple[StoreWatchConfig, ...] = ()


#: The tables of the file, by name, in the order they are documented.
SECTIONS: Final[Mapping[str, type[Section]]] = MappingProxyType(
    {
        "api": APIConfig,
        "poll": PollConfig,
        "server": ServerConfig,
        "state": StateConfig,
        "log": LogConfig,
        "notify": NotifyConfig,
        "discovery": DiscoveryConfig,
    }
)

#: Every default, for the settings built from them and for the command line.
DEFAULTS: Final = Config()
