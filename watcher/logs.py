"""Structured logs: JSON when stderr is not a terminal, readable console output when it is.

Every engine event is one log line (:func:`log_event`). Known secret values are scrubbed from
every line as a last line of defence (:func:`register_secret`), on top of the rule that code
never logs them in the first place.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, get_args

import structlog

from .api.models import parse_file_counts
from .config.model import LogFormat, LogLevel
from .core.events import BatchFinished, Event, FileFailedEvent, event_name
from .core.wording import eta_text, files_text
from .credentials import MASK, Secret, SecretSource
from .errors import ProtocolError

LEVELS: tuple[str, ...] = get_args(LogLevel)

_secrets: list[Secret] = []
_console = False  # set by configure(): a person reads the lines, not a log pipeline
_sources: list[SecretSource] = []
log = structlog.get_logger("watcher")


def register_secret(secret: Secret | SecretSource | None) -> None:
    """Scrub this secret's value from every log line from now on. A :class:`SecretSource` is
    followed as it changes (a rotated key file is scrubbed too)."""
    if isinstance(secret, SecretSource):
        if all(source is not secret for source in _sources):
            _sources.append(secret)
    elif secret and secret not in _secrets:
        _secrets.append(secret)


def secret_values() -> list[str]:
    """The current value of every registered secret, to mask text that is not a log line."""
    return _known_values()


def _known_values() -> list[str]:
    current = [source.current() for source in _sources]
    values = {s.reveal() for s in [*_secrets, *current] if s is not None}
    # Too short to be a real secret, and replacing it would mangle ordinary words.
    return [v for v in values if len(v) >= 4]


def _scrub_value(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for raw in secrets:
            if raw in value:
                value = value.replace(raw, MASK)
        return value
    if isinstance(value, dict):
        # Keys too: a mapping keyed by what a server sent (failed files by code) carries it.
        return {_scrub_value(k, secrets): _scrub_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v, secrets) for v in value]
    return value


def scrub_secrets(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    secrets = _known_values() if _secrets or _sources else []
    if not secrets:
        return event_dict
    for key, value in event_dict.items():
        event_dict[key] = _scrub_value(value, secrets)
    return event_dict


class _StderrLogger:
    """Writes to whatever ``sys.stderr`` is at the time, so a live progress display that
    redirects stderr can print log lines above itself."""

    def msg(self, message: str) -> None:
        stream: TextIO = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _stderr_logger_factory(*_: Any) -> _StderrLogger:
    return _StderrLogger()


def configure(fmt: LogFormat = "auto", level: str = "info") -> None:
    """Set up structlog (and the standard library's logging, for libraries) once, at start."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    global _console
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    _console = fmt == "console"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        # A person at a terminal reads the time of day; a pipeline gets the full UTC instant.
        structlog.processors.TimeStamper(fmt="%H:%M:%S" if _console else "iso", utc=not _console),
        structlog.processors.format_exc_info,
        scrub_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), sort_keys=False)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=_stderr_logger_factory,
        # Not cached: tests reconfigure (capture_logs), and a cached logger would ignore that.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # The HTTP libraries log every request at INFO; our own events already say what matters.
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_LEVEL_NUMBERS = {name: getattr(logging, name.upper()) for name in LEVELS}


def log_event(event: Event) -> None:
    """The engine sink that writes each event as one structured log line.

    JSON lines keep every event with every field. On a console a person reads them: one short
    line per batch event, and each failed file only at debug (the summary and the status page
    list them; 130 warnings would scroll everything else away)."""
    level = event.level
    if isinstance(event, BatchFinished) and not event.result.clean:
        level = "warning"
    elif _console and isinstance(event, FileFailedEvent):
        level = "debug"
    number = _LEVEL_NUMBERS.get(level) or getattr(logging, level.upper())
    # One logger for the level check and the line: below the configured level (the debug
    # events of every poll, at the default level) the fields are never built.
    logger = log.bind()
    is_enabled_for = getattr(logger, "is_enabled_for", None)
    if is_enabled_for is not None and not is_enabled_for(number):
        return
    name, fields = event_name(event), event.fields()
    logger.log(number, name, **(_for_console(name, fields) if _console else fields))


#: Fields a console line leaves out when they hold this value: they say nothing.
_QUIET: dict[str, object] = {
    "failed_files_complete": True,
    "failed_files_truncated": False,
    "note": "",
    "eta_seconds": None,
}


def _for_console(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """An event's fields made short for a terminal: the batch as one ``vs/batch``, counts and
    codes as short text; left out are the end's wall-clock time (the line has its own), labels
    after ``watch_started`` said them, and what repeats the counts."""
    out: dict[str, Any] = {}
    if "vector_store_id" in fields and "batch_id" in fields:
        out["batch"] = f"{fields['vector_store_id']}/{fields['batch_id']}"
    counts = fields.get("file_counts")
    failed = counts.get("failed") if isinstance(counts, dict) else None
    for key, value in fields.items():
        if key in ("vector_store_id", "batch_id", "finished_at"):
            continue
        if key in _QUIET and value == _QUIET[key]:
            continue
        if key == "labels" and name != "watch_started":
            continue
        if key == "failed_files_listed" and value == failed:
            continue
        if key == "file_counts" and isinstance(value, dict):
            value = _counts(value)
        elif key == "failed_files_by_code" and isinstance(value, dict):
            if not value:
                continue
            value = ", ".join(f"{code} {n}" for code, n in sorted(value.items()))
        elif key == "elapsed_seconds" and isinstance(value, int | float):
            key, value = "watched", eta_text(value)
        out[key] = value
    return out


def _counts(c: dict[str, Any]) -> str:
    try:
        counts = parse_file_counts(c)
    except ProtocolError:
        return str(c)
    return f"{files_text(counts)} of {counts.total}"
