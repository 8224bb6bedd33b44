"""What each configuration key accepts, and the checks the control API reuses.

:data:`SCHEMA` lists every key of every section with its kind and bounds; the defaults live on the
dataclasses in :mod:`watcher.config`. :func:`convert` turns one value into the key's type or
raises :class:`ValueError` with the reason (``"is not > 0"``); :func:`read_table` checks a whole
table, prefixing each reason with the key and the value. :func:`validate_id` and
:func:`validate_labels` return whole problem strings.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

from .api.client import check_base_url
from .logs import LEVELS, LogFormat

Kind = Literal[
    "number", "integer", "boolean", "choice", "url", "listen", "path", "env_name", "header",
    "id", "labels", "query",
]  # fmt: skip

#: Kinds that are TOML tables: they cannot be set from one environment variable.
TABLE_KINDS: Final = frozenset({"labels", "query"})

MAX_LABELS: Final = 16
MAX_LABEL_VALUE: Final = 256
#: Label names that would collide with the labels every batch series already has.
RESERVED_LABELS: Final = frozenset({"vector_store_id", "batch_id"})

_MAX_INTEGER = 2**53  # beyond this, arithmetic with floats stops being exact
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True, slots=True)
class Key:
    """One key: its kind and the bounds its value must keep."""

    kind: Kind
    above: int | None = None  # the value must be > above
    at_least: int | None = None
    at_most: int | None = None
    choices: tuple[str, ...] = ()


_SECONDS = Key("number", above=0)
_SECONDS_OR_ZERO = Key("number", at_least=0)

SCHEMA: Final[Mapping[str, Mapping[str, Key]]] = {
    "api": {
        "base_url": Key("url"),
        "api_key_env": Key("env_name"),
        "api_key_file": Key("path"),
        "organization": Key("header"),
        "project": Key("header"),
        "auth": Key("choice", choices=("bearer", "azure")),
        "query": Key("query"),
        "timeout_seconds": _SECONDS,
        "max_requests_per_minute": Key("integer", above=0),
        "max_concurrency": Key("integer", at_least=1, at_most=1024),
        "max_response_bytes": Key("integer", at_least=1024),
        "max_file_pages": Key("integer", at_least=1),
    },
    "poll": {
        "interval_seconds": _SECONDS,
        "max_interval_seconds": _SECONDS,
        "stall_after_seconds": _SECONDS_OR_ZERO,
        "deadline_seconds": _SECONDS_OR_ZERO,
        "cancel_on_timeout": Key("boolean"),
        "min_interval_seconds": _SECONDS,
        "slow_down": Key("boolean"),
    },
    "server": {
        "listen": Key("listen"),
        "control_token_env": Key("env_name"),
        "control_token_file": Key("path"),
    },
    "state": {
        "path": Key("path"),
        "retention_seconds": _SECONDS_OR_ZERO,
        "max_watches": Key("integer", at_least=1),
        "max_failed_files": Key("integer", at_least=0),
    },
    "log": {
        "format": Key("choice", choices=get_args(LogFormat)),
        "level": Key("choice", choices=LEVELS),
    },
    "notify": {
        "webhook_url": Key("url"),
        "webhook_secret_env": Key("env_name"),
        "webhook_secret_file": Key("path"),
        "timeout_seconds": _SECONDS,
        "max_attempts": Key("integer", at_least=1),
    },
}

#: The keys of one ``[[watch]]`` table. The last four override ``[poll]`` for that batch.
WATCH_SCHEMA: Final[Mapping[str, Key]] = {
    "vector_store_id": Key("id"),
    "batch_id": Key("id"),
    "labels": Key("labels"),
    "deadline_seconds": _SECONDS_OR_ZERO,
    "cancel_on_timeout": Key("boolean"),
    "interval_seconds": _SECONDS,
    "stall_after_seconds": _SECONDS_OR_ZERO,
}
REQUIRED_WATCH_KEYS: Final = ("vector_store_id", "batch_id")
_ID_KEY = WATCH_SCHEMA["batch_id"]


def show(value: object) -> str:
    """A value as a problem message quotes it: ``repr``, cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def dotted(parent: str, name: object) -> str:
    """The path of ``name`` inside ``parent``; a name that is not a bare TOML key is quoted."""
    text = name if isinstance(name, str) and _BARE_KEY.fullmatch(name) else show(name)
    return f"{parent}.{text}" if parent else text


def hint(name: object, candidates: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest candidate, or nothing."""
    matches = difflib.get_close_matches(str(name), list(candidates), n=1)
    return f" (did you mean {matches[0]}?)" if matches else ""


def validate_id(value: object, key: str) -> list[str]:
    """Problems with a ``vector_store_id`` or ``batch_id``: it goes into URL paths as it is."""
    try:
        convert(_ID_KEY, value)
    except ValueError as reason:
        return [f"{key}: {show(value)} {reason}"]
    return []


def validate_labels(value: object, key: str) -> list[str]:
    """Problems with a table of labels (name → value) for a batch's metrics and events."""
    if not isinstance(value, Mapping):
        return [f"{key}: {show(value)} is not a table of labels"]
    problems = []
    if len(value) > MAX_LABELS:
        problems.append(f"{key}: {len(value)} labels are more than {MAX_LABELS}")
    for name, text in value.items():
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
            problems.append(f"{key}: label name {show(name)} does not match [a-zA-Z_][a-zA-Z0-9_]*")
        elif name.startswith("__"):
            problems.append(f"{key}: label name {name!r} starts with '__', which is reserved")
        elif name in RESERVED_LABELS:
            problems.append(f"{key}: label name {name!r} is reserved (every batch has it)")
        where = dotted(key, name)
        if not isinstance(text, str):
            problems.append(f"{where}: {show(text)} is not a string")
        elif len(text) > MAX_LABEL_VALUE:
            problems.append(f"{where}: {show(text)} is longer than {MAX_LABEL_VALUE} characters")
        elif not text.isprintable():
            problems.append(f"{where}: {show(text)} contains control characters")
    return problems


def validate_query(value: object, key: str) -> list[str]:
    """Problems with a table of extra query parameters (name → value)."""
    if not isinstance(value, Mapping):
        return [f"{key}: {show(value)} is not a table of strings"]
    problems = []
    for name, text in value.items():
        if not isinstance(name, str) or not name:
            problems.append(f"{key}: parameter name {show(name)} is not a non-empty string")
        elif not isinstance(text, str):
            problems.append(f"{dotted(key, name)}: {show(text)} is not a string")
    return problems


def read_table(
    raw: object,
    path: str,
    schema: Mapping[str, Key],
    origins: Mapping[str, str],
    problems: list[str],
) -> dict[str, Any]:
    """The valid keys of table ``raw`` (at ``path``), converted; each other key is a problem.

    ``origins`` names the environment variable a key's value came from, as ``{path: name}``:
    such a value is text to parse, and its problems name the variable.
    """
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: {show(raw)} is not a table")
        return {}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        where = dotted(path, name)
        key = schema.get(name) if isinstance(name, str) else None
        if key is None:
            problems.append(f"{where}: unknown key{hint(name, schema)}")
        elif key.kind in TABLE_KINDS:
            validate = validate_labels if key.kind == "labels" else validate_query
            found = validate(value, where)
            problems.extend(found)
            if not found and isinstance(value, Mapping):
                values[name] = dict(value)
        else:
            origin = origins.get(where)
            try:
                values[name] = convert(key, value, from_env=origin is not None)
            except ValueError as reason:
                source = f" (from {origin})" if origin else ""
                problems.append(f"{where}: {show(value)} {reason}{source}")
    return values


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:9464``) as ``(host, port)``, or :class:`ValueError`."""
    host, colon, port = text.rpartition(":")
    if not colon:
        raise ValueError('is not "host:port"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("has no IPv6 address inside the brackets") from None
    elif ":" in host:
        raise ValueError('is not "host:port" (write IPv6 in brackets: "[::1]:9464")')
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError("has no valid host name or address before the port")
    if not _PORT.fullmatch(port) or int(port) > 65535:
        raise ValueError("has no port in 0..65535")
    return host, int(port)


def _check_url(value: str) -> str:
    url = check_base_url(value)
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        raise ValueError("holds credentials; give secrets by *_env or *_file instead")
    return url


def _from_text(kind: Kind, text: str) -> object:
    """An environment variable's text as the TOML value it stands for."""
    try:
        if kind == "number":
            return float(text)
        if kind == "integer":
            return int(text)
    except ValueError:
        raise ValueError(f"is not {'a number' if kind == 'number' else 'an integer'}") from None
    if kind == "boolean":
        if text.strip().lower() not in _BOOLEANS:
            raise ValueError("is not one of true, false, 1, 0, yes, no")
        return _BOOLEANS[text.strip().lower()]
    return text


def _number(kind: Kind, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"is not {'a number' if kind == 'number' else 'an integer'}")
    if kind == "integer":
        if not isinstance(value, int):
            raise ValueError("is not an integer")
        if abs(value) > _MAX_INTEGER:
            raise ValueError(f"is out of range (more than {_MAX_INTEGER})")
        return value
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError("is not a finite number")
    return number


def _check_bounds(key: Key, value: float) -> None:
    if key.above is not None and not value > key.above:
        raise ValueError(f"is not > {key.above}")
    if key.at_least is not None and key.at_most is not None:
        if not key.at_least <= value <= key.at_most:
            raise ValueError(f"is not in {key.at_least}..{key.at_most}")
    elif key.at_least is not None and not value >= key.at_least:
        raise ValueError(f"is not >= {key.at_least}")


def convert(key: Key, value: object, *, from_env: bool = False) -> object:
    """``value`` as ``key``'s type, or :class:`ValueError` saying what is wrong with it.

    ``from_env``: the value is an environment variable's text, to be parsed first. Table kinds
    are checked by :func:`validate_labels` and :func:`validate_query` instead.
    """
    if from_env and isinstance(value, str):
        value = _from_text(key.kind, value)
    if key.kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError("is not true or false")
        return value
    if key.kind in {"number", "integer"}:
        number = _number(key.kind, value)
        _check_bounds(key, number)
        return number
    if not isinstance(value, str):
        raise ValueError(
            'is not a string "host:port"' if key.kind == "listen" else "is not a string"
        )
    if key.kind == "choice":
        if value.lower() not in key.choices:
            raise ValueError(f"is not one of {', '.join(key.choices)}")
        return value.lower()
    if key.kind == "url":
        return _check_url(value)
    if key.kind == "path":
        if not value:
            raise ValueError("is an empty path")
        if not value.isprintable():
            raise ValueError("contains control characters")
        return Path(value)
    if key.kind == "listen":
        parse_listen(value)
    elif key.kind == "env_name" and not _ENV_NAME.fullmatch(value):
        raise ValueError("is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
    elif key.kind == "header" and not (value and value.isascii() and value.isprintable()):
        raise ValueError("is not a non-empty string of printable ASCII")
    elif key.kind == "id" and (value in {".", ".."} or not _ID.fullmatch(value)):
        raise ValueError("is not an id (1..128 of A-Z a-z 0-9 _ . : -, not . or ..)")
    return value
