"""Reading the configuration: the TOML file, the environment over it, and every problem at once.

Sources, each over the one before: the model's defaults; ``OPENAI_BASE_URL`` (only for
``api.base_url``, and only when the file does not set it); the TOML file; variables
``BATCH_WATCHER_<SECTION>_<KEY>`` for the scalar keys of every section. An empty variable sets
its key back to the default.

Every problem is collected and raised together as one :class:`~watcher.errors.ConfigError`, in
the order of the document, each starting with the key (or variable) it is about, showing the bad
value and what is allowed: ``poll.interval_seconds: -1 is not > 0``. A value from a variable is
shown as its text, ``(from VARIABLE)``. Relative paths resolve against the working directory.
"""

from __future__ import annotations

import functools
import os
import stat
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final

import annotated_types
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from ..errors import ConfigError
from .environment import apply_environment, from_text
from .model import SECTIONS, Config, PollConfig, StateConfig, StoreWatchConfig, WatchConfig
from .values import Found, check_id, dotted, hint, is_loopback, show

_TOP_LEVEL: Final = (*SECTIONS, "watch", "store")

Loc = tuple[str | int, ...]


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


class _Report:
    """Problems, each with its place in the document so they come out in document order."""

    def __init__(self, document: Mapping[str, object], origins: Mapping[str, tuple[str, str]]):
        self.document = document
        self.origins = origins  # "section.key" -> (variable, its text)
        self.found: list[tuple[tuple[int, ...], str]] = []

    def add(self, loc: Loc, rest: str) -> None:
        """A problem at ``loc``; ``rest`` is what follows ``key: `` in the message."""
        self.found.append((self._position(loc), f"{_path(loc)}: {rest}"))

    def bad_value(self, loc: Loc, value: object, reason: str) -> None:
        origin = self.origins.get(_path(loc))
        if origin is not None:
            self.add(loc, f"{show(origin[1])} {reason} (from {origin[0]})")
        else:
            self.add(loc, f"{show(value)} {reason}")

    def errors(self, loc: Loc, model: type[BaseModel], error: ValidationError) -> None:
        """Each of pydantic's errors for ``model`` (validated at ``loc``) in our words."""
        for detail in error.errors():
            where = (*loc, *detail["loc"])
            kind = detail["type"]
            if kind == "problems":
                found: Sequence[Found] = (detail.get("ctx") or {})["problems"]
                for sub, rest in found:
                    self._found(where, sub, rest)
            elif kind == "missing":
                self.add(where, "missing")
            elif kind == "extra_forbidden":
                self.add(where, f"unknown key{hint(detail['loc'][-1], model.model_fields)}")
            else:
                self.bad_value(where, detail["input"], _reason(detail, model))

    def _found(self, loc: Loc, sub: str, rest: str) -> None:
        if not sub:
            self.add(loc, rest)
            return
        origin = self.origins.get(f"{_path(loc)}.{sub}")
        source = f" (from {origin[0]})" if origin else ""
        self.found.append((self._position(loc), f"{_path(loc)}.{sub}: {rest}{source}"))

    def _position(self, loc: Loc) -> tuple[int, ...]:
        """Where ``loc`` is in the document: indexes down the tree, missing keys last."""
        place: list[int] = []
        node: object = self.document
        for part in loc:
            if isinstance(node, Mapping) and part in node:
                place.append(list(node).index(part))
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                place.append(part)
                node = node[part]
            else:
                place.append(1 << 30)
                node = None
        return tuple(place)

    def raise_if_any(self) -> None:
        if self.found:
            self.found.sort(key=lambda item: item[0])
            raise ConfigError([text for _, text in self.found])


def _path(loc: Loc) -> str:
    text = ""
    for part in loc:
        text = f"{text}[{part}]" if isinstance(part, int) else dotted(text, part)
    return text


def _number(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


_WORDS: Final = {
    "float_type": "is not a number",
    "int_type": "is not an integer",
    "bool_type": "is not true or false",
    "finite_number": "is not a finite number",
    "string_type": "is not a string",
    "model_type": "is not a table",
    "dict_type": "is not a table",
}
_BOUNDS: Final = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than_equal": ("<=", "le"),
}


def _reason(detail: ErrorDetails, model: type[BaseModel]) -> str:
    """What is wrong with a value, after the value: ``is not > 0``."""
    kind, ctx = detail["type"], detail.get("ctx") or {}
    if kind == "value_error":
        return str(ctx["error"])
    if kind in _BOUNDS:
        field = model.model_fields.get(str(detail["loc"][0])) if detail["loc"] else None
        low, high = _bounds(field) if field is not None else (None, None)
        if kind != "greater_than" and low is not None and high is not None:
            return f"is not in {low}..{high}"
        word, bound = _BOUNDS[kind]
        return f"is not {word} {_number(ctx.get(bound))}"
    return _WORDS.get(kind, detail["msg"])


def _bounds(field: FieldInfo) -> tuple[object, object]:
    low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
    return low, high


@functools.cache
def _adapter(section: str, key: str) -> TypeAdapter[Any]:
    field = SECTIONS[section].model_fields[key]
    config = ConfigDict(strict=True, allow_inf_nan=False)
    annotation: Any = field.annotation
    if field.metadata:  # the bounds (gt, ge, le) live here, not on the annotation
        annotation = Annotated[(annotation, *field.metadata)]
    return TypeAdapter(annotation, config=config)


def field_value(section: str, key: str, text: str) -> Any:
    """``section.key`` read from text (a command-line option), or :class:`ValueError` saying
    what is wrong with it after the text."""
    model = SECTIONS[section]
    value = from_text(model.model_fields[key], text)
    try:
        return _adapter(section, key).validate_python(value)
    except ValidationError as exc:
        detail = exc.errors()[0]
        raise ValueError(_reason({**detail, "loc": (key,)}, model)) from None


def config_from_mapping(
    data: Mapping[str, object], environ: Mapping[str, str] = os.environ
) -> Config:
    """Validate ``data`` (a parsed TOML document) with the environment over it."""
    merged, origins, env_problems = apply_environment(data, environ)
    report = _Report(merged, origins)
    for variable, rest in env_problems:
        report.found.append(((-1,), f"{variable}: {rest}"))
    for name in merged:
        if name not in _TOP_LEVEL:
            report.add((name,), f"unknown key{hint(name, _TOP_LEVEL)}")
    context = {"environ": environ}
    sections: dict[str, Any] = {}
    for name, model in SECTIONS.items():
        raw = merged.get(name, {})
        raw = _parse_texts(name, raw, origins, report)
        try:
            sections[name] = model.model_validate(raw, context=context)
        except ValidationError as exc:
            report.errors((name,), model, exc)
    for name in ("api", "server", "notify"):
        if name in sections:
            _check_secret_files(name, sections[name], report)
    poll = sections.get("poll") or PollConfig()
    state = sections.get("state") or StateConfig()
    watches = _read_watches(merged.get("watch", []), poll, state, report)
    stores = _read_stores(merged.get("store", []), report)
    report.raise_if_any()
    return Config(**sections, watches=watches, stores=stores)


def parse_watch(data: object, poll: PollConfig, where: str = "watch") -> WatchConfig:
    """One watch table (from the file or the control API), or :class:`ConfigError`."""
    report = _Report({where: data}, {})
    watch = _read_watch(data, (where,), poll, report)
    report.raise_if_any()
    assert watch is not None
    return watch


def parse_store(data: object, where: str = "store") -> StoreWatchConfig:
    """One store table (from the file or the control API), or :class:`ConfigError`."""
    report = _Report({where: data}, {})
    try:
        return StoreWatchConfig.model_validate(data)
    except ValidationError as exc:
        report.errors((where,), StoreWatchConfig, exc)
        report.raise_if_any()
        raise  # unreachable: the report holds the errors


def require_api_key(config: Config) -> None:
    """:class:`ConfigError` if no API key can be found and the API is not on this machine (a
    local simulator needs none)."""
    api = config.api
    host = api.base_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
    if api.api_key.current() is None and not is_loopback(host):
        raise ConfigError(
            f"api.api_key: no API key in {api.api_key.description}, and {api.base_url} needs"
            " one (set the variable, or api.api_key_file)"
        )


def _parse_texts(
    section: str, raw: object, origins: Mapping[str, tuple[str, str]], report: _Report
) -> object:
    """The table with each value a variable gave parsed from its text; bad text is reported."""
    if not isinstance(raw, Mapping):
        return raw
    fields = SECTIONS[section].model_fields
    table = dict(raw)
    for name, value in raw.items():
        origin = origins.get(dotted(section, name))
        if origin is None or name not in fields or not isinstance(value, str):
            continue
        try:
            table[name] = from_text(fields[name], value)
        except ValueError as reason:
            report.bad_value((section, name), value, str(reason))
            del table[name]
    return table


def _check_secret_files(section: str, model: BaseModel, report: _Report) -> None:
    """A secret's file must be there: a missing one would quietly mean no secret at all."""
    for name in type(model).model_fields:
        path = getattr(model, name)
        if not name.endswith("_file") or path is None:
            continue
        try:
            is_dir = stat.S_ISDIR(path.stat().st_mode)
        except FileNotFoundError:
            report.bad_value((section, name), str(path), "does not exist")
        except OSError as error:
            report.bad_value((section, name), str(path), f"cannot be read ({error.strerror})")
        else:
            if is_dir:
                report.bad_value((section, name), str(path), "is a directory, not a file")


def _read_watches(
    raw: object, poll: PollConfig, state: StateConfig, report: _Report
) -> tuple[WatchConfig, ...]:
    if not isinstance(raw, list):
        report.add(("watch",), f"{show(raw)} is not an array of tables ([[watch]])")
        return ()
    if len(raw) > state.max_watches:
        report.add(
            ("watch",), f"{len(raw)} watches are more than state.max_watches ({state.max_watches})"
        )
    watches: list[WatchConfig] = []
    first: dict[tuple[str, str], int] = {}
    for index, item in enumerate(raw):
        watch = _read_watch(item, ("watch", index), poll, report)
        key = _watch_key(item)
        if key is None:
            continue
        if key in first:
            # Reported whatever else is wrong with either watch: it is a problem of its own.
            report.add(
                ("watch", index),
                f"the same batch as watch[{first[key]}] ({key[0]} / {key[1]})",
            )
            continue
        first[key] = index
        if watch is not None:
            watches.append(watch)
    return tuple(watches)


def _read_stores(raw: object, report: _Report) -> tuple[StoreWatchConfig, ...]:
    if not isinstance(raw, list):
        report.add(("store",), f"{show(raw)} is not an array of tables ([[store]])")
        return ()
    stores: list[StoreWatchConfig] = []
    first: dict[str, int] = {}
    for index, item in enumerate(raw):
        try:
            store = StoreWatchConfig.model_validate(item)
        except ValidationError as exc:
            report.errors(("store", index), StoreWatchConfig, exc)
            continue
        if store.vector_store_id in first:
            report.add(
                ("store", index),
                f"the same vector store as store[{first[store.vector_store_id]}] "
                f"({store.vector_store_id})",
            )
            continue
        first[store.vector_store_id] = index
        stores.append(store)
    return tuple(stores)


def _watch_key(item: object) -> tuple[str, str] | None:
    """The batch a watch table names, if both its ids are valid."""
    if not isinstance(item, Mapping):
        return None
    try:
        return (check_id(item.get("vector_store_id")), check_id(item.get("batch_id")))
    except ValueError:
        return None


def _read_watch(data: object, loc: Loc, poll: PollConfig, report: _Report) -> WatchConfig | None:
    try:
        return WatchConfig.model_validate(data, context={"poll": poll})
    except ValidationError as exc:
        report.errors(loc, WatchConfig, exc)
        return None
