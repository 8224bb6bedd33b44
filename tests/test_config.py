"""Tests for the configuration: schema, validation, environment overrides and rendering."""

from __future__ import annotations

import math
import re
import string
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pydantic
import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic.fields import FieldInfo

from watcher.api.settings import ClientSettings
from watcher.config import (
    DEFAULTS,
    SECTIONS,
    APIConfig,
    Config,
    DiscoveryConfig,
    LogConfig,
    NotifyConfig,
    PollConfig,
    ServerConfig,
    StateConfig,
    StoreWatchConfig,
    WatchConfig,
    config_from_mapping,
    env_name,
    field_value,
    load_config,
    parse_watch,
    render_effective,
    require_api_key,
    show,
    validate_id,
    validate_labels,
)
from watcher.config.settings import client_settings, engine_settings, poll_settings
from watcher.core.engine import EngineSettings
from watcher.core.policy import PollSettings
from watcher.credentials import MASK
from watcher.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
SECTION_CLASSES: dict[str, type] = {
    "api": APIConfig,
    "poll": PollConfig,
    "server": ServerConfig,
    "state": StateConfig,
    "log": LogConfig,
    "notify": NotifyConfig,
    "discovery": DiscoveryConfig,
}
SCHEMA: dict[str, dict[str, FieldInfo]] = {
    name: dict(model.model_fields) for name, model in SECTIONS.items()
}
WATCH_SCHEMA: dict[str, FieldInfo] = dict(WatchConfig.model_fields)
REQUIRED_WATCH_KEYS = tuple(name for name, f in WATCH_SCHEMA.items() if f.is_required())
WATCH = {"vector_store_id": "vs_1", "batch_id": "vsfb_1"}


def problems(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> list[str]:
    """The problems ``config_from_mapping`` reports for ``data``; fails if there are none."""
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data, environ or {})
    return caught.value.problems


def with_watch(**keys: Any) -> dict[str, Any]:
    return {"watch": [{**WATCH, **keys}]}


# -- defaults and the example file ---------------------------------------------------------


def test_defaults() -> None:
    """An empty document gives the documented defaults and no watches."""
    config = config_from_mapping({}, {})
    assert config.api.base_url == "https://api.openai.com/v1"
    assert config.api.api_key_env == "OPENAI_API_KEY"
    assert config.api.api_key_file is None
    assert config.api.auth == "bearer"
    assert dict(config.api.query) == {}
    assert (config.api.timeout_seconds, config.api.max_requests_per_minute) == (30.0, 600)
    assert (config.api.max_concurrency, config.api.max_response_bytes) == (8, 8388608)
    assert config.poll == PollConfig(
        interval_seconds=5.0,
        max_interval_seconds=300.0,
        stall_after_seconds=900.0,
        deadline_seconds=0.0,
        cancel_on_timeout=False,
        min_interval_seconds=0.5,
        slow_down=True,
    )
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9464)
    assert config.server.control_token_env == "BATCH_WATCHER_CONTROL_TOKEN"
    assert config.state == StateConfig(
        path=Path("batch-watcher.sqlite3"),
        retention_seconds=86400.0,
        max_watches=10000,
        max_failed_files=1000,
    )
    assert (config.log.format, config.log.level) == ("auto", "info")
    assert config.notify.webhook_url is None
    assert config.notify.webhook_secret is None
    assert (config.notify.timeout_seconds, config.notify.max_attempts) == (10.0, 5)
    assert config.watches == ()
    assert config == Config()


@pytest.mark.parametrize("section", sorted(SCHEMA))
def test_sections_are_the_tables_of_the_config(section: str) -> None:
    """Every section the loader reads is the class of the Config field of that name."""
    assert SECTIONS[section] is SECTION_CLASSES[section]
    assert Config.model_fields[section].annotation is SECTION_CLASSES[section]


def test_every_key_says_what_it_means() -> None:
    """Every key of every section has a description (the command line's help reads it)."""
    for section, fields in SCHEMA.items():
        for name, field in fields.items():
            assert field.description, f"{section}.{name}"


def test_watch_requires_only_its_ids() -> None:
    """A ``[[watch]]`` needs its two ids; every other key is optional."""
    assert REQUIRED_WATCH_KEYS == ("vector_store_id", "batch_id")


def _documented_keys(text: str) -> dict[str, set[str]]:
    """The keys under each table header of a TOML text, counting commented-out lines."""
    found: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        stripped = line.lstrip("# ").rstrip()
        if header := re.fullmatch(r"\[\[?([a-z]+)\]\]?", stripped):
            current = header.group(1)
            found.setdefault(current, set())
        elif current and (key := re.match(r"([a-z_]+) = ", stripped)):
            found[current].add(key.group(1))
    return found


def test_example_documents_every_key() -> None:
    """config.example.toml shows every key of every section and of [[watch]]."""
    documented = _documented_keys(EXAMPLE.read_text(encoding="utf-8"))
    for section, keys in SCHEMA.items():
        assert set(keys) - documented.get(section, set()) == set(), section
    assert set(WATCH_SCHEMA) - documented.get("watch", set()) == set()


def test_example_loads_to_the_defaults() -> None:
    """The example file, loaded, is exactly the default configuration."""
    assert load_config(EXAMPLE, environ={}) == Config()


def test_example_watch_is_valid() -> None:
    """The commented [[watch]] in the example is itself a valid watch."""
    text = EXAMPLE.read_text(encoding="utf-8")
    block = text[text.index("# [[watch]]") :]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    config = config_from_mapping(tomllib.loads(uncommented), {})
    assert config.watches[0].labels == {"team": "search", "corpus": "manuals"}
    assert config.watches[0].cancel_on_timeout is True


# -- validation rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"poll": {"interval_seconds": -1}}, "poll.interval_seconds: -1 is not > 0"),
        ({"poll": {"interval_seconds": 0}}, "poll.interval_seconds: 0 is not > 0"),
        ({"poll": {"deadline_seconds": -1}}, "poll.deadline_seconds: -1 is not >= 0"),
        ({"poll": {"stall_after_seconds": -0.5}}, "poll.stall_after_seconds: -0.5 is not >= 0"),
        ({"poll": {"min_interval_seconds": 0}}, "poll.min_interval_seconds: 0 is not > 0"),
        ({"poll": {"cancel_on_timeout": "yes"}}, "poll.cancel_on_timeout: 'yes' is not true or"),
        ({"poll": {"slow_down": 1}}, "poll.slow_down: 1 is not true or false"),
        ({"api": {"auth": "basic"}}, "api.auth: 'basic' is not one of bearer, azure"),
        ({"api": {"timeout_seconds": "30"}}, "api.timeout_seconds: '30' is not a number"),
        ({"api": {"timeout_seconds": True}}, "api.timeout_seconds: True is not a number"),
        ({"api": {"timeout_seconds": math.inf}}, "api.timeout_seconds: inf is not a finite"),
        ({"api": {"timeout_seconds": math.nan}}, "api.timeout_seconds: nan is not a finite"),
        ({"api": {"timeout_seconds": 10**400}}, "api.timeout_seconds: 1000"),
        ({"api": {"max_requests_per_minute": 0}}, "api.max_requests_per_minute: 0 is not > 0"),
        ({"api": {"max_requests_per_minute": 1.5}}, "api.max_requests_per_minute: 1.5 is not an"),
        ({"api": {"max_requests_per_minute": 2**60}}, "is out of range"),
        ({"api": {"max_concurrency": 0}}, "api.max_concurrency: 0 is not in 1..1024"),
        ({"api": {"max_concurrency": 1025}}, "api.max_concurrency: 1025 is not in 1..1024"),
        ({"api": {"max_response_bytes": 1023}}, "api.max_response_bytes: 1023 is not >= 1024"),
        ({"api": {"base_url": "ftp://x.test"}}, "api.base_url: 'ftp://x.test' is not an http(s)"),
        ({"api": {"base_url": "https://"}}, "api.base_url: 'https://' is not an http(s) URL"),
        ({"api": {"base_url": "api.openai.com"}}, "is not an http(s) URL with a host"),
        ({"api": {"base_url": "https://u:p@x.test"}}, "holds credentials"),
        ({"api": {"base_url": "https://x.test/v1?a=1"}}, "has a query or fragment"),
        ({"api": {"base_url": "https://x.test:99999"}}, "is not a URL"),
        ({"api": {"base_url": "https://x .test"}}, "contains spaces or control characters"),
        ({"api": {"base_url": 3}}, "api.base_url: 3 is not a string"),
        ({"api": {"api_key_env": "my key"}}, "api.api_key_env: 'my key' is not an environment"),
        ({"api": {"api_key_file": ""}}, "api.api_key_file: '' is an empty path"),
        ({"api": {"organization": ""}}, "api.organization: '' is not a non-empty string"),
        ({"api": {"project": "p\n"}}, "api.project: 'p\\n' is not a non-empty string of print"),
        ({"api": {"project": "prøj"}}, "api.project: 'prøj' is not a non-empty string of print"),
        ({"api": {"query": {"api-version": 1}}}, "api.query.api-version: 1 is not a string"),
        ({"api": {"query": {"": "x"}}}, "api.query: parameter name '' is not a non-empty"),
        ({"api": {"query": "api-version=1"}}, "api.query: 'api-version=1' is not a table"),
        ({"api": 3}, "api: 3 is not a table"),
        ({"server": {"listen": 8080}}, 'server.listen: 8080 is not a string "host:port"'),
        ({"server": {"listen": "localhost"}}, "server.listen: 'localhost' is not \"host:port\""),
        ({"server": {"listen": "::1:9464"}}, "(write IPv6 in brackets"),
        ({"server": {"listen": "[nope]:9464"}}, "has no IPv6 address inside the brackets"),
        ({"server": {"listen": "host:65536"}}, "server.listen: 'host:65536' has no port in 0..6"),
        ({"server": {"listen": "host:-1"}}, "has no port in 0..65535"),
        ({"server": {"listen": "host:"}}, "has no port in 0..65535"),
        ({"server": {"listen": ":9464"}}, "has no valid host name or address"),
        ({"server": {"listen": "a b:9464"}}, "has no valid host name or address"),
        ({"server": {"control_token_env": ""}}, "server.control_token_env: '' is not an env"),
        ({"state": {"path": ""}}, "state.path: '' is an empty path"),
        ({"state": {"path": "a\x00b"}}, "state.path: 'a\\x00b' contains control characters"),
        ({"state": {"retention_seconds": -1}}, "state.retention_seconds: -1 is not >= 0"),
        ({"state": {"max_watches": 0}}, "state.max_watches: 0 is not >= 1"),
        ({"state": {"max_failed_files": -1}}, "state.max_failed_files: -1 is not >= 0"),
        ({"log": {"format": "xml"}}, "log.format: 'xml' is not one of auto, json, console"),
        ({"log": {"level": "trace"}}, "log.level: 'trace' is not one of debug, info, warning,"),
        ({"notify": {"webhook_url": "hooks.test/x"}}, "notify.webhook_url: 'hooks.test/x' is not"),
        ({"notify": {"timeout_seconds": 0}}, "notify.timeout_seconds: 0 is not > 0"),
        ({"notify": {"max_attempts": 0}}, "notify.max_attempts: 0 is not >= 1"),
        ({"notify": {"webhook_secret_env": "1X"}}, "notify.webhook_secret_env: '1X' is not an"),
    ],
)
def test_each_rule_names_key_value_and_what_is_allowed(data: dict[str, Any], expected: str) -> None:
    """A bad value gives one problem that names its key, shows the value and what is allowed."""
    found = problems(data)
    assert len(found) == 1, found
    assert expected in found[0]


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:9464", "127.0.0.1", 9464),
        ("0.0.0.0:0", "0.0.0.0", 0),  # noqa: S104 - a value under test, nothing binds
        ("[::1]:9464", "::1", 9464),
        ("[::]:65535", "::", 65535),
        ("metrics.local:80", "metrics.local", 80),
    ],
)
def test_listen_accepts_host_port_and_bracketed_ipv6(listen: str, host: str, port: int) -> None:
    """``server.listen`` takes host:port with IPv6 in brackets, port 0..65535."""
    server = config_from_mapping({"server": {"listen": listen}}, {}).server
    assert (server.listen, server.host, server.port) == (listen, host, port)


def test_base_url_loses_trailing_slash_and_keeps_its_path() -> None:
    """A base URL is kept with its path, without a trailing slash."""
    data = {"api": {"base_url": "http://r.openai.azure.com/openai/v1/"}}
    assert config_from_mapping(data, {}).api.base_url == "http://r.openai.azure.com/openai/v1"


def test_choices_ignore_case() -> None:
    """``LEVEL = "DEBUG"`` and ``auth = "Azure"`` are read as their lowercase choices."""
    config = config_from_mapping({"log": {"level": "DEBUG"}, "api": {"auth": "Azure"}}, {})
    assert (config.log.level, config.api.auth) == ("debug", "azure")


def test_integers_are_accepted_where_seconds_are_floats() -> None:
    """``interval_seconds = 2`` (a TOML integer) is read as 2.0."""
    poll = config_from_mapping({"poll": {"interval_seconds": 2}}, {}).poll
    assert poll.interval_seconds == 2.0
    assert isinstance(poll.interval_seconds, float)


def test_max_interval_below_interval_blames_the_key_that_was_set() -> None:
    """max_interval_seconds < interval_seconds is reported on whichever key the file set."""
    assert problems({"poll": {"max_interval_seconds": 2}}) == [
        "poll.max_interval_seconds: 2.0 is not >= poll.interval_seconds (5.0)"
    ]
    assert problems({"poll": {"interval_seconds": 400}}) == [
        "poll.interval_seconds: 400.0 is not <= poll.max_interval_seconds (300.0)"
    ]


def test_min_interval_above_interval_is_a_problem() -> None:
    """min_interval_seconds must not exceed interval_seconds."""
    assert problems({"poll": {"interval_seconds": 1, "min_interval_seconds": 2}}) == [
        "poll.interval_seconds: 1.0 is not >= poll.min_interval_seconds (2.0)"
    ]
    assert problems({"poll": {"min_interval_seconds": 6}}) == [
        "poll.min_interval_seconds: 6.0 is not <= poll.interval_seconds (5.0)"
    ]


def test_order_check_is_skipped_when_a_side_is_already_wrong() -> None:
    """A bad interval is reported once, not again as out of order."""
    assert problems({"poll": {"interval_seconds": "x", "max_interval_seconds": 1}}) == [
        "poll.interval_seconds: 'x' is not a number"
    ]


def test_several_problems_are_reported_together() -> None:
    """Every problem in the document is in the one ConfigError, in document order."""
    found = problems(
        {
            "api": {"auth": "basic", "base_ur": "https://x.test"},
            "poll": {"interval_seconds": -1},
            "server": {"listen": 8080},
            "watch": [{"vector_store_id": "vs_1"}],
        }
    )
    assert found == [
        "api.auth: 'basic' is not one of bearer, azure",
        "api.base_ur: unknown key (did you mean base_url?)",
        "poll.interval_seconds: -1 is not > 0",
        'server.listen: 8080 is not a string "host:port"',
        "watch[0].batch_id: missing",
    ]
    data = {"api": {"auth": "basic"}, "poll": {"interval_seconds": -1}}
    with pytest.raises(ConfigError, match=r"^api\.auth: .*; poll\.interval_seconds: .*$"):
        config_from_mapping(data, {})


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"api": {"base_ur": "x"}}, "api.base_ur: unknown key (did you mean base_url?)"),
        ({"pol": {}}, "pol: unknown key (did you mean poll?)"),
        ({"watches": []}, "watches: unknown key (did you mean watch?)"),
        (with_watch(label={}), "watch[0].label: unknown key (did you mean labels?)"),
        ({"log": {"colour": True}}, "log.colour: unknown key"),
        ({"log": {"a b": 1}}, "log.'a b': unknown key"),
    ],
)
def test_unknown_key_is_a_problem_with_a_hint(data: dict[str, Any], expected: str) -> None:
    """An unknown key is named, with the closest known key when there is one."""
    assert problems(data) == [expected]


# -- watches, ids and labels ---------------------------------------------------------------


def test_watches_are_read_with_labels_and_overrides() -> None:
    """[[watch]] tables become WatchConfigs with read-only labels and their overrides."""
    config = config_from_mapping(
        {
            "watch": [
                {**WATCH, "labels": {"team": "search"}, "deadline_seconds": 60},
                {"vector_store_id": "vs_1", "batch_id": "batch_2", "cancel_on_timeout": True},
            ]
        },
        {},
    )
    first, second = config.watches
    assert (first.vector_store_id, first.batch_id) == ("vs_1", "vsfb_1")
    assert first.labels == {"team": "search"}
    assert first.deadline_seconds == 60.0
    assert second.cancel_on_timeout is True
    assert second.interval_seconds is None
    with pytest.raises(TypeError):
        first.labels["team"] = "other"  # type: ignore[index]


@pytest.mark.parametrize(
    ("watch", "expected"),
    [
        ({"vector_store_id": "vs_1"}, ["watch[0].batch_id: missing"]),
        ({}, ["watch[0].vector_store_id: missing", "watch[0].batch_id: missing"]),
        (
            {**WATCH, "interval_seconds": 301},
            ["watch[0].interval_seconds: 301.0 is not <= poll.max_interval_seconds (300.0)"],
        ),
        (
            {**WATCH, "interval_seconds": 0.1},
            ["watch[0].interval_seconds: 0.1 is not >= poll.min_interval_seconds (0.5)"],
        ),
        ({**WATCH, "interval_seconds": 0}, ["watch[0].interval_seconds: 0 is not > 0"]),
        ({**WATCH, "deadline_seconds": -1}, ["watch[0].deadline_seconds: -1 is not >= 0"]),
        (
            {**WATCH, "stall_after_seconds": "1"},
            ["watch[0].stall_after_seconds: '1' is not a number"],
        ),
        ({**WATCH, "cancel_on_timeout": 0}, ["watch[0].cancel_on_timeout: 0 is not true or false"]),
        (
            {**WATCH, "batch_id": "a/b"},
            ["watch[0].batch_id: 'a/b' is not an id (1..128 of A-Z a-z 0-9 _ . : -, not . or ..)"],
        ),
    ],
)
def test_watch_rules(watch: dict[str, Any], expected: list[str]) -> None:
    """Each [[watch]] rule names the watch by index and the key."""
    assert problems({"watch": [watch]}) == expected


def test_watch_must_be_an_array_of_tables() -> None:
    """``watch`` as a table, or an item that is not a table, is a problem."""
    assert problems({"watch": WATCH}) == [
        "watch: {'vector_store_id': 'vs_1', 'batch_id': 'vsfb_1'} is not an array of tables"
        " ([[watch]])"
    ]
    assert problems({"watch": [WATCH, "vs_2/b"]}) == ["watch[1]: 'vs_2/b' is not a table"]


def test_duplicate_watches_name_both_indexes() -> None:
    """Two watches of the same batch are one problem naming both."""
    data = {"watch": [WATCH, {**WATCH, "batch_id": "other"}, dict(WATCH)]}
    assert problems(data) == ["watch[2]: the same batch as watch[0] (vs_1 / vsfb_1)"]


def test_more_watches_than_max_watches_is_a_problem() -> None:
    """The file may not list more watches than state.max_watches allows."""
    data = {"state": {"max_watches": 1}, "watch": [WATCH, {**WATCH, "batch_id": "b2"}]}
    assert problems(data) == ["watch: 2 watches are more than state.max_watches (1)"]
    data["state"] = {"max_watches": 2}
    assert len(config_from_mapping(data, {}).watches) == 2


@pytest.mark.parametrize(
    "value", ["vs_abc123", "vsfb_abc123", "batch_0b2f-9a:1.x", "a", "x" * 128, "..."]
)
def test_validate_id_accepts_ids(value: str) -> None:
    """Ids of 1..128 characters of [A-Za-z0-9_.:-] pass."""
    assert validate_id(value, "batch_id") == []


@pytest.mark.parametrize(
    "value", ["", "x" * 129, "a/b", "..", ".", "a b", "vs\n", "vs\x00", "vs%2F", "ü", 7, None]
)
def test_validate_id_refuses_what_is_not_an_id(value: object) -> None:
    """Empty, too long, slashes, dot segments, spaces, control characters and non-strings fail."""
    (problem,) = validate_id(value, "watch[0].batch_id")
    assert problem.startswith(f"watch[0].batch_id: {show(value)} is not ")


def test_validate_labels_accepts_sixteen_good_labels() -> None:
    """Sixteen labels with good names and values up to 256 characters pass."""
    labels = {f"label_{i}": "v" * 256 for i in range(15)} | {"_x": ""}
    assert validate_labels(labels, "labels") == []


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({f"l{i}": "v" for i in range(17)}, "labels: 17 labels are more than 16"),
        ({"9a": "v"}, "labels: label name '9a' does not match [a-zA-Z_][a-zA-Z0-9_]*"),
        ({"a-b": "v"}, "labels: label name 'a-b' does not match"),
        ({"": "v"}, "labels: label name '' does not match"),
        ({"__x": "v"}, "labels: label name '__x' starts with '__', which is reserved"),
        ({"batch_id": "v"}, "labels: label name 'batch_id' is reserved"),
        ({"vector_store_id": "v"}, "labels: label name 'vector_store_id' is reserved"),
        ({"team": 1}, "labels.team: 1 is not a string"),
        ({"team": "v" * 257}, "labels.team: 'vvvv"),
        ({"team": "a\nb"}, "labels.team: 'a\\nb' contains control characters"),
        ("team=x", "labels: 'team=x' is not a table of labels"),
    ],
)
def test_validate_labels_refuses_bad_labels(labels: object, expected: str) -> None:
    """Too many labels, bad or reserved names, and bad values are each named."""
    (problem,) = validate_labels(labels, "labels")
    assert problem.startswith(expected)


def test_label_problems_in_a_watch_name_the_watch() -> None:
    """A bad label in the file is reported under its watch's labels key."""
    assert problems(with_watch(labels={"team": 1, "__x": "y"})) == [
        "watch[0].labels.team: 1 is not a string",
        "watch[0].labels: label name '__x' starts with '__', which is reserved",
    ]


def test_parse_watch_checks_one_watch_for_the_control_api() -> None:
    """parse_watch reads one watch, or raises a ConfigError with every problem."""
    poll = PollConfig()
    assert parse_watch({**WATCH, "labels": {"a": "b"}}, poll).labels == {"a": "b"}
    with pytest.raises(ConfigError) as caught:
        parse_watch({"batch_id": "..", "x": 1}, poll, where="body")
    assert caught.value.problems == [
        "body.batch_id: '..' is not an id (1..128 of A-Z a-z 0-9 _ . : -, not . or ..)",
        "body.x: unknown key",
        "body.vector_store_id: missing",
    ]


# -- files ---------------------------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    """A TOML file is read and validated; relative paths stay relative to the working directory."""
    path = tmp_path / "watcher.toml"
    document = {
        "poll": {"interval_seconds": 2},
        "state": {"path": "data/w.sqlite3"},
        "watch": [{"vector_store_id": "vs_1", "batch_id": "b_1"}],
    }
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    config = load_config(path, environ={})
    assert config.poll.interval_seconds == 2.0
    assert config.state.path == Path("data/w.sqlite3")
    assert config.watches == (WatchConfig(vector_store_id="vs_1", batch_id="b_1"),)


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    """A file that is not TOML is one problem naming the file, the line and the column."""
    path = tmp_path / "bad.toml"
    path.write_text('[poll]\ninterval_seconds = 5\nlisten = "a\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: not valid TOML: ")
    assert "line 3, column" in problem


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A configuration file that does not exist is named in the error."""
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml", environ={})
    assert caught.value.problems == [f"{tmp_path / 'nope.toml'}: no such configuration file"]


def test_unreadable_or_binary_file_is_a_clear_error(tmp_path: Path) -> None:
    """A directory or a file that is not UTF-8 gives a ConfigError, not an OSError."""
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(tmp_path, environ={})
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[log]\nlevel = "\xe9"\n')
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 15\)"):
        load_config(path, environ={})


# -- the environment -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "text", "section", "key", "value"),
    [
        ("BATCH_WATCHER_POLL_INTERVAL_SECONDS", "2", "poll", "interval_seconds", 2.0),
        ("BATCH_WATCHER_POLL_INTERVAL_SECONDS", "2.5", "poll", "interval_seconds", 2.5),
        ("BATCH_WATCHER_SERVER_LISTEN", "0.0.0.0:9464", "server", "listen", "0.0.0.0:9464"),
        ("BATCH_WATCHER_API_AUTH", "azure", "api", "auth", "azure"),
        ("BATCH_WATCHER_API_MAX_CONCURRENCY", "16", "api", "max_concurrency", 16),
        ("BATCH_WATCHER_API_API_KEY_FILE", __file__, "api", "api_key_file", Path(__file__)),
        ("BATCH_WATCHER_STATE_PATH", "s.db", "state", "path", Path("s.db")),
        ("BATCH_WATCHER_LOG_LEVEL", "DEBUG", "log", "level", "debug"),
        ("BATCH_WATCHER_NOTIFY_WEBHOOK_URL", "http://h/x", "notify", "webhook_url", "http://h/x"),
        ("BATCH_WATCHER_POLL_CANCEL_ON_TIMEOUT", "true", "poll", "cancel_on_timeout", True),
        ("BATCH_WATCHER_POLL_CANCEL_ON_TIMEOUT", "1", "poll", "cancel_on_timeout", True),
        ("BATCH_WATCHER_POLL_CANCEL_ON_TIMEOUT", "Yes", "poll", "cancel_on_timeout", True),
        ("BATCH_WATCHER_POLL_SLOW_DOWN", "false", "poll", "slow_down", False),
        ("BATCH_WATCHER_POLL_SLOW_DOWN", "0", "poll", "slow_down", False),
        ("BATCH_WATCHER_POLL_SLOW_DOWN", "no", "poll", "slow_down", False),
    ],
)
def test_environment_overrides_are_parsed_to_the_keys_type(
    variable: str, text: str, section: str, key: str, value: object
) -> None:
    """BATCH_WATCHER_<SECTION>_<KEY> sets the key, parsed to its type."""
    config = config_from_mapping({}, {variable: text})
    assert getattr(getattr(config, section), key) == value
    assert type(getattr(getattr(config, section), key)) is type(value)


def test_environment_wins_over_the_file_and_empty_resets_to_default() -> None:
    """A variable replaces the file's value; an empty variable puts back the default."""
    data = {"poll": {"interval_seconds": 9}, "api": {"auth": "azure"}}
    environ = {"BATCH_WATCHER_POLL_INTERVAL_SECONDS": "3", "BATCH_WATCHER_API_AUTH": ""}
    config = config_from_mapping(data, environ)
    assert config.poll.interval_seconds == 3.0
    assert config.api.auth == "bearer"


@pytest.mark.parametrize(
    ("variable", "text", "expected"),
    [
        (
            "BATCH_WATCHER_POLL_INTERVAL_SECONDS",
            "abc",
            "poll.interval_seconds: 'abc' is not a number",
        ),
        ("BATCH_WATCHER_POLL_INTERVAL_SECONDS", "-1", "poll.interval_seconds: '-1' is not > 0"),
        (
            "BATCH_WATCHER_POLL_INTERVAL_SECONDS",
            "nan",
            "poll.interval_seconds: 'nan' is not a finite",
        ),
        (
            "BATCH_WATCHER_API_MAX_CONCURRENCY",
            "8.0",
            "api.max_concurrency: '8.0' is not an integer",
        ),
        (
            "BATCH_WATCHER_POLL_SLOW_DOWN",
            "maybe",
            "poll.slow_down: 'maybe' is not one of true, fal",
        ),
        ("BATCH_WATCHER_API_AUTH", "basic", "api.auth: 'basic' is not one of bearer, azure"),
        ("BATCH_WATCHER_SERVER_LISTEN", "9464", "server.listen: '9464' is not \"host:port\""),
    ],
)
def test_bad_environment_values_name_the_variable(variable: str, text: str, expected: str) -> None:
    """A bad value from a variable names the key, the text and the variable it came from."""
    (problem,) = problems({}, {variable: text})
    assert problem.startswith(expected)
    assert problem.endswith(f" (from {variable})")


def test_unknown_variable_in_a_known_section_is_a_problem_with_a_hint() -> None:
    """BATCH_WATCHER_POLL_<unknown> is named, with the closest known variable."""
    assert problems({}, {"BATCH_WATCHER_POLL_INTERVALL_SECONDS": "2"}) == [
        "BATCH_WATCHER_POLL_INTERVALL_SECONDS: unknown variable"
        " (did you mean BATCH_WATCHER_POLL_INTERVAL_SECONDS?)"
    ]


def test_table_keys_cannot_be_set_from_the_environment() -> None:
    """A variable for a table key (api.query) is a problem, not silently ignored."""
    assert problems({}, {"BATCH_WATCHER_API_QUERY": "a=b"}) == [
        "BATCH_WATCHER_API_QUERY: api.query is a table, set it in the file"
    ]


def test_unrelated_variables_are_ignored() -> None:
    """Variables outside the prefix or with no known section after it are not ours."""
    environ = {
        "BATCH_WATCHER_CONTROL_TOKEN": "t",
        "BATCH_WATCHER_WATCH_0_BATCH_ID": "b",
        "BATCH_WATCHER_X": "1",
        "BATCH_WATCHERS_POLL_INTERVAL_SECONDS": "x",
        "batch_watcher_poll_interval_seconds": "x",
        "POLL_INTERVAL_SECONDS": "x",
        "PATH": "/usr/bin",
    }
    assert config_from_mapping({}, environ) == Config()


def test_a_secret_variable_that_looks_like_an_override_is_not_an_error() -> None:
    """A variable named as a secret's source is not mistaken for an unknown key."""
    data = {"notify": {"webhook_secret_env": "BATCH_WATCHER_NOTIFY_SECRET"}}
    config = config_from_mapping(data, {"BATCH_WATCHER_NOTIFY_SECRET": "whsec"})
    assert config.notify.webhook_secret is not None
    assert config.notify.webhook_secret.require("notify.webhook_secret").reveal() == "whsec"
    assert problems({}, {"BATCH_WATCHER_NOTIFY_SECRET": "whsec"}) == [
        "BATCH_WATCHER_NOTIFY_SECRET: unknown variable (did you mean"
        " BATCH_WATCHER_NOTIFY_WEBHOOK_SECRET_ENV?)"
    ]


def test_openai_base_url_is_used_when_the_file_does_not_set_base_url() -> None:
    """OPENAI_BASE_URL fills api.base_url only when the file leaves it out."""
    environ = {"OPENAI_BASE_URL": "http://localhost:8321/v1/"}
    assert config_from_mapping({}, environ).api.base_url == "http://localhost:8321/v1"
    data = {"api": {"base_url": "https://file.test/v1"}}
    assert config_from_mapping(data, environ).api.base_url == "https://file.test/v1"
    both = {**environ, "BATCH_WATCHER_API_BASE_URL": "https://override.test"}
    assert config_from_mapping(data, both).api.base_url == "https://override.test"
    assert config_from_mapping({}, {"OPENAI_BASE_URL": ""}).api.base_url == APIConfig().base_url


def test_bad_openai_base_url_names_the_variable() -> None:
    """A bad OPENAI_BASE_URL is reported as coming from that variable."""
    assert problems({}, {"OPENAI_BASE_URL": "localhost:8321"}) == [
        "api.base_url: 'localhost:8321' is not an http(s) URL with a host (from OPENAI_BASE_URL)"
    ]


def test_env_name_is_the_override_variable() -> None:
    """env_name gives the variable that overrides a key."""
    assert env_name("poll", "interval_seconds") == "BATCH_WATCHER_POLL_INTERVAL_SECONDS"


# -- secrets -------------------------------------------------------------------------------


def test_api_key_file_wins_over_api_key_env(tmp_path: Path) -> None:
    """With both a key file and a key variable, the key comes from the file."""
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n", encoding="utf-8")
    data = {"api": {"api_key_file": str(key_file)}}
    config = config_from_mapping(data, {"OPENAI_API_KEY": "sk-from-env"})
    assert config.api.api_key.require("api.api_key").reveal() == "sk-from-file"
    assert config.api.api_key.description == f"file {key_file}"
    without_file = config_from_mapping({}, {"OPENAI_API_KEY": "sk-from-env"})
    assert without_file.api.api_key.require("api.api_key").reveal() == "sk-from-env"


def test_secret_sources_read_the_given_environment() -> None:
    """The control token and webhook secret come from the environ passed in, by name."""
    data = {"server": {"control_token_env": "TOKEN"}, "notify": {"webhook_secret_env": "HOOK"}}
    config = config_from_mapping(data, {"TOKEN": "ctl", "HOOK": "whs"})
    assert config.server.control_token.require("server.control_token").reveal() == "ctl"
    assert config.notify.webhook_secret is not None
    assert config.notify.webhook_secret.require("notify.webhook_secret").reveal() == "whs"


def test_render_effective_masks_secrets_and_parses_back(tmp_path: Path) -> None:
    """check-config output names secret sources, says present or missing, and hides values."""
    key_file = tmp_path / "api-key"
    key_file.write_text("sk-FILE-SECRET-7f3a", encoding="utf-8")
    environ = {
        "OPENAI_API_KEY": "sk-ENV-SECRET-91b2",
        "BATCH_WATCHER_CONTROL_TOKEN": "ctl-SECRET-44c1",
        "HOOK_SECRET": "whsec-SECRET-0d9e",
    }
    data = {
        "api": {"api_key_file": str(key_file), "query": {"api-version": "2024", "x\x7f": "\t"}},
        "notify": {"webhook_url": "https://h.test/x", "webhook_secret_env": "HOOK_SECRET"},
        "watch": [
            {**WATCH, "labels": {"team": 'a "quoted" \\ välue'}, "interval_seconds": 9},
            {"vector_store_id": "vs_2", "batch_id": "b:2"},
        ],
    }
    config = config_from_mapping(data, environ)
    text = render_effective(config)
    for secret in ("sk-FILE-SECRET-7f3a", "sk-ENV-SECRET-91b2", "ctl-SECRET-44c1", "whsec-"):
        assert secret not in text
    assert f"# api key: present (file {key_file}), value {MASK}" in text
    assert "# control token: present (environment variable BATCH_WATCHER_CONTROL_TOKEN)" in text
    assert "# webhook secret: present (environment variable HOOK_SECRET)" in text
    assert config_from_mapping(tomllib.loads(text), {}) == config


def test_render_effective_says_when_secrets_are_missing() -> None:
    """A secret that is not set is reported missing; an unconfigured one as not configured."""
    text = render_effective(config_from_mapping({}, {}))
    assert "# api key: missing (environment variable OPENAI_API_KEY)\n" in text
    assert "# webhook secret: not configured\n" in text
    assert MASK not in text
    assert tomllib.loads(text)["api"]["api_key_env"] == "OPENAI_API_KEY"


def test_config_is_frozen() -> None:
    """Configuration objects cannot be changed after they are built."""
    config = Config()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.poll.interval_seconds = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.api.query["x"] = "y"  # type: ignore[index]


# -- property: any TOML-ish document either loads or gives ConfigError -----------------------

_BARE = string.ascii_letters + string.digits + "_-"
_names = st.text(alphabet=_BARE, min_size=1, max_size=10)
_likely = st.sampled_from(
    [0, -1, 1, 2, 5, 0.5, 300.0, 1024, 1025, 2**60, math.nan, math.inf, True, False, "", "..",
     "bearer", "azure", "json", "DEBUG", "127.0.0.1:9464", "[::1]:0", "::1:1", "https://a.test/v1",
     "ftp://a", "vs_1", "b_1", "a/b", "OPENAI_API_KEY", "p.sqlite3", {}, {"team": "x"},
     {"__x": "y"}, {"batch_id": "b"}, {"api-version": "1"}, [], ["x"]]
)  # fmt: skip
_keys = st.text(max_size=4)
_scalars = st.one_of(
    _likely,
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.datetimes(timezones=st.none() | st.just(UTC)),
    st.dates(),
    st.times(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=6,
)


def _table(keys: Mapping[str, object]) -> st.SearchStrategy[object]:
    """A table with known and unknown keys and any values, or any value instead of a table."""
    names = st.sampled_from(sorted(keys)) | _names
    return st.dictionaries(names, _values, max_size=4) | _values


def _kind(name: str, field: FieldInfo) -> str:
    """What sort of value a key takes, from its type or, for text, its name."""
    annotation = field.annotation
    for kind, types in (("number", float), ("integer", int), ("boolean", bool)):
        if annotation in (types, types | None):
            return kind
    if get_origin(annotation) is Literal:
        return "choice"
    if name.endswith("_url"):
        return "url"
    if name.endswith("_env"):
        return "env_name"
    if name.endswith("_file") or name == "path":
        return "path"
    if name.endswith("_id"):
        return "id"
    return {"organization": "header", "project": "header"}.get(name, name)


def _plausible_value(name: str, field: FieldInfo) -> st.SearchStrategy[object]:
    """Values of the key's kind, mostly right, sometimes out of bounds."""
    kind = _kind(name, field)
    by_kind: dict[str, st.SearchStrategy[object]] = {
        "number": st.sampled_from([0, 0.5, 1, 5, 30.0, 300.0, 1e9]),
        "integer": st.sampled_from([0, 1, 8, 1024, 10**6]),
        "boolean": st.booleans(),
        "choice": st.sampled_from(get_args(field.annotation) or ("",)),
        "url": st.sampled_from(["https://a.test/v1/", "http://[::1]:8080", "https://b.test"]),
        "listen": st.sampled_from(["127.0.0.1:9464", "[::1]:0", "h:65535"]),
        "path": _names | st.just(__file__),
        "env_name": st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
        "header": _names,
        "query": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
        "id": st.from_regex(r"[A-Za-z0-9_.:-]{1,12}", fullmatch=True),
        "labels": st.dictionaries(
            st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,6}", fullmatch=True),
            st.text(st.characters(codec="utf-8", exclude_categories=["C"]), max_size=8),
            max_size=3,
        ),
        "retry": st.fixed_dictionaries(
            {},
            optional={
                "codes": st.lists(
                    st.sampled_from(["server_error", "invalid_file", ""]), max_size=3
                ),
                "max_attempts": st.sampled_from([0, 1, 2, 11]),
            },
        ),
    }
    return by_kind[kind]


def test_every_key_has_a_plausible_kind() -> None:
    """The property tests below know the kind of every key (a new key needs one)."""
    kinds = {"number", "integer", "boolean", "choice", "url", "listen", "path", "env_name"}
    kinds |= {"header", "query", "id", "labels", "retry"}
    for fields in [*SCHEMA.values(), WATCH_SCHEMA]:
        for name, field in fields.items():
            assert _kind(name, field) in kinds, name


def _plausible_table(
    keys: Mapping[str, FieldInfo], required: tuple[str, ...] = ()
) -> st.SearchStrategy[dict[str, object]]:
    """A table of known keys whose values are often right."""
    strategies = {name: _plausible_value(name, field) for name, field in keys.items()}
    return st.fixed_dictionaries(
        {name: strategies.pop(name) for name in required}, optional=strategies
    )


_ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,12}", fullmatch=True) | _likely
_labels = st.dictionaries(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True) | _names,
    st.text(max_size=8) | _values,
    max_size=3,
)
_watch = st.fixed_dictionaries(
    {"vector_store_id": _ids, "batch_id": _ids},
    optional={"labels": _labels, **dict.fromkeys(list(WATCH_SCHEMA)[3:], _likely)},
)
_garbled = st.fixed_dictionaries(
    {},
    optional={
        **{section: _table(keys) for section, keys in SCHEMA.items()},
        "watch": st.lists(_watch | _table(WATCH_SCHEMA), max_size=3) | _values,
        "extra": _values,
    },
)
_plausible = st.fixed_dictionaries(
    {},
    optional={
        **{name: _plausible_table(keys) for name, keys in SCHEMA.items()},
        "watch": st.lists(_plausible_table(WATCH_SCHEMA, REQUIRED_WATCH_KEYS), max_size=3),
    },
)
_document = _garbled | _plausible
_variables = sorted(env_name(s, k) for s, keys in SCHEMA.items() for k in keys)
_environ = st.dictionaries(
    st.sampled_from([*_variables, "OPENAI_BASE_URL", "BATCH_WATCHER_LOG_COLOUR"]),
    st.sampled_from(["", "1", "no", "-1", "2.5", "azure", "x", "[::1]:1", "https://e.test"])
    | st.text(max_size=8),
    max_size=3,
)
_PROBLEM = re.compile(
    r"[A-Za-z0-9_-]+(\[\d+\])?(\.([A-Za-z0-9_-]+|'([^'\\]|\\.)*'|\"([^\"\\]|\\.)*\"))*: \S"
)


# A document is garbled or plausible, section by section, with a few environment overrides:
# 200 examples reach every section's keys with good and bad values many times over (400 took
# twice the time, the slowest test of the file, and passed too).
@settings(max_examples=200, deadline=None)
@given(data=_document, environ=_environ)
def test_any_document_loads_or_raises_config_error(
    data: dict[str, Any], environ: dict[str, str]
) -> None:
    """Random documents raise only ConfigError, whose problems start with a key path; and
    whatever loads renders to TOML that loads back to the same configuration."""
    try:
        config = config_from_mapping(data, environ)
    except ConfigError as error:
        found = error.problems
    else:
        assert config_from_mapping(tomllib.loads(render_effective(config)), {}) == config
        return
    assert found
    for problem in found:
        assert _PROBLEM.match(problem), problem


# -- problems found together ---------------------------------------------------------------


def test_a_duplicate_watch_is_reported_with_the_other_problems() -> None:
    """A second watch of the same batch is named even when that watch, or the file, has other
    problems too."""
    data = {
        "poll": {"interval_seconds": -1},
        "watch": [WATCH, {**WATCH, "labels": {"__x": "y"}}],
    }
    assert problems(data) == [
        "poll.interval_seconds: -1 is not > 0",
        "watch[1]: the same batch as watch[0] (vs_1 / vsfb_1)",
        "watch[1].labels: label name '__x' starts with '__', which is reserved",
    ]


# -- secrets' files and the API key ----------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key"),
    [("api", "api_key_file"), ("server", "control_token_file"), ("notify", "webhook_secret_file")],
)
def test_a_secret_file_that_does_not_exist_is_a_problem(
    tmp_path: Path, section: str, key: str
) -> None:
    """A *_file secret that is not there, or is a directory, is a problem naming its key (it
    would otherwise mean no secret, e.g. no control token)."""
    missing = tmp_path / "nope"
    assert problems({section: {key: str(missing)}}) == [
        f"{section}.{key}: {str(missing)!r} does not exist"
    ]
    assert problems({section: {key: str(tmp_path)}}) == [
        f"{section}.{key}: {str(tmp_path)!r} is a directory, not a file"
    ]
    variable = env_name(section, key)
    assert problems({}, {variable: str(missing)}) == [
        f"{section}.{key}: {str(missing)!r} does not exist (from {variable})"
    ]
    present = tmp_path / "secret"
    present.write_text("s3cret\n", encoding="utf-8")
    config = config_from_mapping({section: {key: str(present)}}, {})
    assert getattr(getattr(config, section), key) == present


def test_require_api_key_refuses_no_key_for_a_remote_api(tmp_path: Path) -> None:
    """With no key anywhere, a remote API is a problem naming api.api_key and where it looked;
    an API on loopback (a simulator) needs none, and a key in the variable or a file is enough."""
    with pytest.raises(ConfigError) as caught:
        require_api_key(config_from_mapping({}, {}))
    (problem,) = caught.value.problems
    assert problem.startswith("api.api_key: no API key in environment variable OPENAI_API_KEY")
    for url in ("http://127.0.0.1:8321/v1", "http://localhost/v1", "http://[::1]:9/v1"):
        require_api_key(config_from_mapping({"api": {"base_url": url}}, {}))
    require_api_key(config_from_mapping({}, {"OPENAI_API_KEY": "sk-x"}))
    key_file = tmp_path / "key"
    key_file.write_text("sk-file", encoding="utf-8")
    require_api_key(config_from_mapping({"api": {"api_key_file": str(key_file)}}, {}))


# -- the settings built from the model -------------------------------------------------------


def test_engine_poll_and_client_defaults_are_the_models() -> None:
    """EngineSettings, PollSettings and ClientSettings default to what the default Config
    gives them, so no default is written twice."""
    config = Config()
    assert EngineSettings() == engine_settings(config)
    assert PollSettings() == poll_settings(config)
    client, default = client_settings(config), ClientSettings()
    for name in ("base_url", "auth", "timeout_seconds", "max_response_bytes", "organization"):
        assert getattr(client, name) == getattr(default, name), name


def test_settings_follow_the_configuration() -> None:
    """Every key the engine and client use reaches their settings; zero turns stall and deadline
    off."""
    config = config_from_mapping(
        {
            "api": {"timeout_seconds": 7, "max_concurrency": 3, "max_requests_per_minute": 60},
            "poll": {"interval_seconds": 2, "stall_after_seconds": 0, "deadline_seconds": 9},
            "state": {"max_watches": 5, "max_failed_files": 4},
        },
        {},
    )
    engine, client = engine_settings(config), client_settings(config)
    assert (client.timeout_seconds, client.max_connections) == (7.0, 3)
    assert (engine.max_concurrency, engine.max_requests_per_minute) == (3, 60)
    assert (engine.poll.interval, engine.stall_after_seconds, engine.deadline_seconds) == (
        2.0,
        None,
        9.0,
    )
    assert (engine.max_watches, engine.max_failed_files) == (5, 4)


@pytest.mark.parametrize(
    ("section", "key", "text", "expected"),
    [
        ("poll", "interval_seconds", "2.5", 2.5),
        ("api", "max_requests_per_minute", "60", 60),
        ("api", "auth", "Azure", "azure"),
        ("api", "base_url", "http://h.test/v1/", "http://h.test/v1"),
        ("server", "listen", "[::1]:0", "[::1]:0"),
    ],
)
def test_field_value_reads_an_options_text(
    section: str, key: str, text: str, expected: object
) -> None:
    """field_value reads a command-line option's text by its key's rule."""
    assert field_value(section, key, text) == expected


@pytest.mark.parametrize(
    ("section", "key", "text", "reason"),
    [
        ("poll", "interval_seconds", "-1", "is not > 0"),
        ("poll", "interval_seconds", "soon", "is not a number"),
        ("poll", "deadline_seconds", "-1", "is not >= 0"),
        ("api", "max_requests_per_minute", "1.5", "is not an integer"),
        ("api", "max_concurrency", "0", "is not in 1..1024"),
        ("api", "auth", "basic", "is not one of bearer, azure"),
        ("api", "timeout_seconds", "inf", "is not a finite number"),
        ("server", "listen", "nowhere", 'is not "host:port"'),
    ],
)
def test_field_value_refuses_text_with_the_files_words(
    section: str, key: str, text: str, reason: str
) -> None:
    """An option's bad text is refused with the same reason the file or a variable would get."""
    with pytest.raises(ValueError, match="^" + re.escape(reason)):
        field_value(section, key, text)
    (problem,) = problems({}, {env_name(section, key): text})
    assert f"{text!r} {reason}" in problem


# -- the documentation states the model's defaults -------------------------------------------


def _example_tables() -> dict[str, list[dict[str, Any]]]:
    """Every table of the example with its commented-out keys put back, one dict per table."""
    tables: dict[str, list[dict[str, Any]]] = {}
    current: dict[str, Any] | None = None
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        stripped = line.lstrip("# ").rstrip()
        if header := re.fullmatch(r"\[\[?([a-z]+)\]\]?", stripped):
            current = {}
            tables.setdefault(header.group(1), []).append(current)
        elif current is not None and re.match(r"[a-z_]+ = ", stripped):
            current.update(tomllib.loads(stripped))
    return tables


def test_every_key_in_the_example_validates_even_commented_out() -> None:
    """Each key the example shows, set or commented out, is valid for its table."""
    tables = _example_tables()
    assert set(tables) == {*SECTIONS, "watch", "store"}
    for name, model in SECTIONS.items():
        (table,) = tables[name]
        assert set(table) == set(model.model_fields), name
        model.model_validate(table)
    (watch,) = tables["watch"]
    assert set(watch) == set(WATCH_SCHEMA)
    WatchConfig.model_validate(watch, context={"poll": PollConfig()})
    (store,) = tables["store"]
    assert set(store) == set(StoreWatchConfig.model_fields)
    StoreWatchConfig.model_validate(store)


def test_the_examples_set_keys_are_the_defaults() -> None:
    """Each key the example sets (not commented out) is the model's default, as it says."""
    document = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for name, table in document.items():
        for key, value in table.items():
            default = SECTIONS[name].model_fields[key].get_default(call_default_factory=True)
            default = str(default) if isinstance(default, Path) else default
            assert value == default, f"{name}.{key}"


def test_the_readme_and_docs_state_the_models_defaults() -> None:
    """The defaults the README's option table and the docs name are the model's."""
    root = EXAMPLE.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(--[a-z-]+)` \| .*\(default: (.+?)\) \|$", readme, re.M))
    assert rows["--base-url"] == f"`$OPENAI_BASE_URL` or `{DEFAULTS.api.base_url}`"
    assert float(rows["--interval"]) == DEFAULTS.poll.interval_seconds
    assert float(rows["--timeout"]) == DEFAULTS.poll.deadline_seconds
    assert float(rows["--request-timeout"]) == DEFAULTS.api.timeout_seconds
    assert int(rows["--max-requests-per-minute"]) == DEFAULTS.api.max_requests_per_minute
    metrics = (root / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert f"`[server] listen` (default\n`{DEFAULTS.server.listen}`)" in metrics
    runbook = (root / "docs" / "runbook.md").read_text(encoding="utf-8")
    assert "`[state] retention_seconds` (24h by default)" in runbook
    assert DEFAULTS.state.retention_seconds == 24 * 3600


def test_the_model_imports_nothing_above_it() -> None:
    """The configuration (but its settings module) and the API client import nothing from the
    core, the daemon or the command line: the core and the client take their defaults from the
    model, not the other way round."""
    code = (
        "import sys, watcher.config, watcher.api.client\n"
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'watcher.core', 'watcher.daemon', 'watcher.cli', 'watcher.logs'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


# -- vector stores -----------------------------------------------------------------------------


def test_store_tables_and_discovery_are_read() -> None:
    """[[store]] tables become store watches with their labels; [discovery] has its defaults
    and takes its keys from the file and the environment."""
    config = config_from_mapping(
        {"store": [{"vector_store_id": "vs_a", "labels": {"team": "search"}}]},
        {"BATCH_WATCHER_DISCOVERY_VECTOR_STORES": "true"},
    )
    [store] = config.stores
    assert store.vector_store_id == "vs_a"
    assert dict(store.labels) == {"team": "search"}
    assert config.discovery.vector_stores is True
    assert config.discovery.interval_seconds == 300.0
    again = config_from_mapping(tomllib.loads(render_effective(config)), {})
    assert again.stores == config.stores


def test_bad_store_tables_name_their_key() -> None:
    """A store table's problems name the key: a bad id, an unknown key, a repeated store, a bad
    discovery interval."""
    found = problems(
        {
            "store": [
                {"vector_store_id": "vs_a"},
                {"vector_store_id": "vs_a"},
                {"vector_store_id": "bad id"},
                {"vector_store_id": "vs_b", "batch_id": "x"},
            ],
            "discovery": {"interval_seconds": 0},
        }
    )
    assert found[0] == "store[1]: the same vector store as store[0] (vs_a)"
    assert found[1].startswith("store[2].vector_store_id: ")
    assert found[2].startswith("store[3].batch_id: unknown key")
    assert found[3].startswith("discovery.interval_seconds: 0 is not > 0")
