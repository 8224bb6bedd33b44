"""The environment over the file: ``BATCH_WATCHER_<SECTION>_<KEY>`` and ``OPENAI_BASE_URL``.

A variable's text is parsed by its key's type (``"2.5"``, ``"yes"``); an empty variable puts the
key back to its default. A table key (``api.query``) cannot be set from a variable. The same
parsing reads a command-line option's text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pydantic.fields import FieldInfo

from .model import SECTIONS
from .values import TABLE, hint

ENV_PREFIX: Final = "BATCH_WATCHER_"
_BOOLEANS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def env_name(section: str, key: str) -> str:
    """The variable that overrides ``section.key``."""
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def from_text(field: FieldInfo, text: str) -> object:
    """A variable's or an option's text as the TOML value it stands for."""
    kinds = {float: "a number", int: "an integer"}
    annotation = field.annotation
    for kind, what in kinds.items():
        if annotation in (kind, kind | None):
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"is not {what}") from None
    if annotation in (bool, bool | None):
        if text.strip().lower() not in _BOOLEANS:
            raise ValueError("is not one of true, false, 1, 0, yes, no")
        return _BOOLEANS[text.strip().lower()]
    return text


def is_table(section: str, key: str) -> bool:
    """Whether ``section.key`` is a table, which no variable or option can set."""
    return TABLE in SECTIONS[section].model_fields[key].metadata


def apply_environment(
    data: Mapping[str, object], environ: Mapping[str, str]
) -> tuple[dict[str, object], dict[str, tuple[str, str]], list[tuple[str, str]]]:
    """``data`` with the environment's values put in, which variable set which key (and to what
    text), and the problems with variables that set nothing."""
    merged: dict[str, object] = {
        name: dict(value) if isinstance(value, Mapping) else value for name, value in data.items()
    }
    origins: dict[str, tuple[str, str]] = {}
    problems: list[tuple[str, str]] = []
    api = merged.setdefault("api", {})
    if environ.get("OPENAI_BASE_URL") and isinstance(api, dict) and "base_url" not in api:
        api["base_url"] = environ["OPENAI_BASE_URL"]
        origins["api.base_url"] = ("OPENAI_BASE_URL", environ["OPENAI_BASE_URL"])
    unknown: list[tuple[str, str]] = []
    for variable, text in sorted(environ.items()):
        rest = variable.removeprefix(ENV_PREFIX)
        section = next((s for s in SECTIONS if rest.startswith(f"{s.upper()}_")), None)
        if rest == variable or section is None:
            continue  # not ours, e.g. BATCH_WATCHER_CONTROL_TOKEN
        name = rest[len(section) + 1 :].lower()
        if name not in SECTIONS[section].model_fields:
            unknown.append((variable, section))
        elif is_table(section, name):
            problems.append((variable, f"{section}.{name} is a table, set it in the file"))
        elif isinstance(table := merged.setdefault(section, {}), dict):
            if text:
                table[name] = text
                origins[f"{section}.{name}"] = (variable, text)
            else:
                table.pop(name, None)
    secret_names = _secret_env_names(merged)
    for variable, section in unknown:
        if variable not in secret_names:  # a secret may live in a variable that looks like ours
            names = [env_name(section, name) for name in SECTIONS[section].model_fields]
            problems.append((variable, f"unknown variable{hint(variable, names)}"))
    return merged, origins, problems


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
