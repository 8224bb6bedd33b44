"""What a single configuration value accepts: ids, labels, URLs, ``host:port``, paths, names.

Each rule is one function that returns the value (converted) or raises :class:`ValueError` with
the reason, worded to follow the value in a problem (``"is not an id (...)"``). The model's
fields use them through the annotated types at the bottom; the command line and the control API
call them directly, so an id is an id by one rule everywhere.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Final, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BeforeValidator, ValidationInfo
from pydantic_core import PydanticCustomError

from ..credentials import MASK

MAX_LABELS: Final = 16
MAX_LABEL_VALUE: Final = 256
#: Label names that would collide with the labels every batch series already has.
RESERVED_LABELS: Final = frozenset({"vector_store_id", "batch_id"})
#: Beyond this, arithmetic with floats stops being exact.
MAX_INTEGER: Final = 2**53
#: What a ``vector_store_id`` or ``batch_id`` may be: it goes into URL paths as it is.
ID_RULE: Final = "1..128 of A-Z a-z 0-9 _ . : -, not . or .."

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")

#: A problem found inside a value: the path below the value's key ("" for the key itself) and
#: the rest of the message (``"1 is not a string"``).
Found = tuple[str, str]


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


# -- one rule each ---------------------------------------------------------------------------


def check_id(value: object) -> str:
    """A ``vector_store_id`` or ``batch_id``, or :class:`ValueError`."""
    if not isinstance(value, str):
        raise ValueError("is not a string")
    if value in {".", ".."} or not _ID.fullmatch(value):
        raise ValueError(f"is not an id ({ID_RULE})")
    return value


def validate_id(value: object, key: str) -> list[str]:
    """Problems with an id, each a whole message naming ``key``."""
    try:
        check_id(value)
    except ValueError as reason:
        return [f"{key}: {show(value)} {reason}"]
    return []


def label_problems(value: object) -> list[Found]:
    """What is wrong with a table of labels (name → value) for a batch's metrics and events."""
    if not isinstance(value, Mapping):
        return [("", f"{show(value)} is not a table of labels")]
    found: list[Found] = []
    if len(value) > MAX_LABELS:
        found.append(("", f"{len(value)} labels are more than {MAX_LABELS}"))
    for name, text in value.items():
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
            found.append(("", f"label name {show(name)} does not match [a-zA-Z_][a-zA-Z0-9_]*"))
        elif name.startswith("__"):
            found.append(("", f"label name {name!r} starts with '__', which is reserved"))
        elif name in RESERVED_LABELS:
            found.append(("", f"label name {name!r} is reserved (every batch has it)"))
        where = dotted("", name)
        if not isinstance(text, str):
            found.append((where, f"{show(text)} is not a string"))
        elif len(text) > MAX_LABEL_VALUE:
            found.append((where, f"{show(text)} is longer than {MAX_LABEL_VALUE} characters"))
        elif not text.isprintable():
            found.append((where, f"{show(text)} contains control characters"))
    return found


def query_problems(value: object) -> list[Found]:
    """What is wrong with a table of extra query parameters (name → value)."""
    if not isinstance(value, Mapping):
        return [("", f"{show(value)} is not a table of strings")]
    found: list[Found] = []
    for name, text in value.items():
        if not isinstance(name, str) or not name:
            found.append(("", f"parameter name {show(name)} is not a non-empty string"))
        elif not isinstance(text, str):
            found.append((dotted("", name), f"{show(text)} is not a string"))
    return found


def join(key: str, found: Iterable[Found]) -> list[str]:
    """Found problems as whole messages under ``key``."""
    return [f"{key}.{sub}: {rest}" if sub else f"{key}: {rest}" for sub, rest in found]


def validate_labels(value: object, key: str) -> list[str]:
    """Problems with a table of labels, each a whole message naming ``key``."""
    return join(key, label_problems(value))


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


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """The URL without a trailing slash, or a :class:`ValueError` saying what is wrong with it
    (without repeating it)."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError("contains spaces or control characters")
    try:
        parts = urlsplit(url)
        # A port that is no number in 0..65535 fails only here, not when the URL is split; left
        # for later, it failed every request with an error no one translated.
        parts.port  # noqa: B018
    except ValueError as exc:
        raise ValueError(f"is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("has a query or fragment")
    return url.rstrip("/")


def validate_base_url(url: str) -> str:
    """:func:`check_base_url`, with the URL named in the error."""
    try:
        return check_base_url(url)
    except ValueError as exc:
        raise ValueError(f"{url!r} {exc}") from None


def _string(value: object, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise ValueError(f"is not {what}")
    return value


def check_url(value: object) -> str:
    """A base or webhook URL: :func:`check_base_url`, and no credentials in it."""
    url = check_base_url(_string(value))
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError("holds credentials; give secrets by *_env or *_file instead")
    return url


#: Where ``[state] url`` may carry a password: the one variable that sets it (never the file).
STATE_URL_ENV: Final = "BATCH_WATCHER_STATE_URL"
PG_SCHEMES: Final = ("postgresql", "postgres")


def password_of(url: str) -> str | None:
    """The password a URL carries, if any."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by the mask."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return MASK  # unparsable: show nothing of it
    if not password:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{hosts}"))


def check_pg_url(value: object, info: ValidationInfo) -> str:
    """A PostgreSQL URL. A password only when the URL came from :data:`STATE_URL_ENV`; every
    problem shows the URL with its password masked."""
    text = _string(value)
    context = info.context if isinstance(info.context, Mapping) else {}
    environ = context.get("environ")
    from_env = (os.environ if environ is None else environ).get(STATE_URL_ENV) == text
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError as exc:
        reason = f"is not a URL ({exc})"
    else:
        reason = ""
        if parts.scheme not in PG_SCHEMES:
            reason = 'is not a "postgresql://user@host:port/dbname" URL'
        elif not text.isprintable():
            reason = "contains control characters"
        elif password is not None and not from_env:
            reason = f"holds a password; give it by {STATE_URL_ENV}, PGPASSWORD or a passfile"
    if reason:
        source = f" (from {STATE_URL_ENV})" if from_env else ""
        found = [("", f"{show(mask_url(text))} {reason}{source}")]
        raise PydanticCustomError("problems", "{problems}", {"problems": found})
    return text


def check_listen(value: object) -> str:
    text = _string(value, 'a string "host:port"')
    parse_listen(text)
    return text


def check_path(value: object) -> Path:
    if isinstance(value, Path):
        value = str(value)
    text = _string(value)
    if not text:
        raise ValueError("is an empty path")
    if not text.isprintable():
        raise ValueError("contains control characters")
    return Path(text)


def check_env_name(value: object) -> str:
    if not _ENV_NAME.fullmatch(text := _string(value)):
        raise ValueError("is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
    return text


def check_header(value: object) -> str:
    text = _string(value)
    if not (text and text.isascii() and text.isprintable()):
        raise ValueError("is not a non-empty string of printable ASCII")
    return text


def check_integer(value: int) -> int:
    if abs(value) > MAX_INTEGER:
        raise ValueError(f"is out of range (more than {MAX_INTEGER})")
    return value


def choice(options: object) -> BeforeValidator:
    """One of the ``Literal`` ``options``, in any case."""
    allowed: tuple[str, ...] = get_args(options)

    def check(value: object) -> str:
        text = _string(value).lower()
        if text not in allowed:
            raise ValueError(f"is not one of {', '.join(allowed)}")
        return text

    return BeforeValidator(check)


def _table(problems: Callable[[object], list[Found]]) -> BeforeValidator:
    """Check a whole table, every problem at once (a plain validator stops at the first)."""

    def check(value: object) -> object:
        if found := problems(value):
            raise PydanticCustomError("problems", "{problems}", {"problems": found})
        return value

    return BeforeValidator(check)


def _read_only(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True)
class Text:
    """How a key's value is written in an environment variable or a command-line option:
    ``table`` kinds cannot be; the rest is parsed by the field's type."""

    kind: Literal["text", "table"] = "text"


TABLE: Final = Text("table")

Id = Annotated[str, BeforeValidator(check_id)]
Url = Annotated[str, BeforeValidator(check_url)]
PgUrl = Annotated[str, BeforeValidator(check_pg_url)]
Listen = Annotated[str, BeforeValidator(check_listen)]
FilePath = Annotated[Path, BeforeValidator(check_path)]
EnvName = Annotated[str, BeforeValidator(check_env_name)]
Header = Annotated[str, BeforeValidator(check_header)]
Integer = Annotated[int, AfterValidator(check_integer)]
Labels = Annotated[Mapping[str, str], _table(label_problems), AfterValidator(_read_only), TABLE]
Query = Annotated[Mapping[str, str], _table(query_problems), AfterValidator(_read_only), TABLE]
