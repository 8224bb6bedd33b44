"""A watch as a stored row, and back: the encoding every backend shares.

A row is the watch's key, three JSON texts (labels, options, progress), the registration time,
and, once it ended, the result's JSON and the end time. :func:`encode` makes one;
:func:`decode` reads one back and refuses, with :class:`DamagedRow` naming the field, anything
:func:`encode` could not have written: a row that decodes is a watch the engine, the metrics and
the pages can use without another check.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, NamedTuple, Protocol

from ..api.models import FileCounts, LastError, parse_file_counts
from ..config.values import validate_id, validate_labels
from ..core.results import BatchResult, FailedFile, FileName, StuckFile
from ..core.retry import RetryPolicy
from ..core.states import ENDINGS, Phase
from ..core.watch import STORE, Watch, WatchOptions
from ..errors import ProtocolError

#: Statuses, ids and error codes longer than this were not written by :func:`encode` (the API
#: client refuses longer ones).
_MAX_TOKEN = 128


class Row(NamedTuple):
    """One stored watch, column by column (in the order of the SQLite table)."""

    vector_store_id: str
    batch_id: str
    labels: str
    options: str
    registered_at: float
    progress: str
    result: str | None
    finished_at: float | None


#: The columns of :class:`Row`, in its order.
COLUMNS = Row._fields


class Fields(Protocol):
    """A stored row read by column name (``sqlite3.Row``, a psycopg dict row, :class:`Row`'s
    ``_asdict()``)."""

    def __getitem__(self, key: str, /) -> Any: ...


class DamagedRow(ValueError):
    """A stored row that :func:`encode` could not have written. ``key`` names the row (as
    stored: it may be no valid key at all), the message the field at fault."""

    def __init__(self, key: tuple[object, object], problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"the watch {_show(key[0])}/{_show(key[1])}: {problem}")


def encode(watch: Watch) -> Row:
    progress = {
        "status": watch.status,
        "file_counts": watch.file_counts.as_dict() if watch.file_counts else None,
        "created_at": watch.created_at,
        "first_seen_at": watch.first_seen_at,
        "last_poll_at": watch.last_poll_at,
    }
    if watch.retry_of is not None or watch.retry_sending is not None:
        progress["retry_of"] = watch.retry_of
        progress["retry_attempt"] = watch.retry_attempt
        progress["retry_sending"] = watch.retry_sending
    options = watch.options.as_dict()
    # Most watches have no labels and no options: "{}" without a trip through the encoder (a row
    # is made of every watch whose counts moved, at each progress checkpoint).
    return Row(
        watch.vector_store_id,
        watch.batch_id,
        json.dumps(dict(watch.labels)) if watch.labels else "{}",
        json.dumps(options) if options else "{}",
        watch.registered_at,
        json.dumps(progress),
        json.dumps(watch.result.as_dict()) if watch.result is not None else None,
        watch.finished_at,
    )


def decode(row: Fields) -> Watch:
    """The watch a row holds; :class:`DamagedRow` (a ``ValueError``) for a row :func:`encode`
    could not have written (a value of the wrong type, a negative count, JSON that is not an
    object), naming the row and the field."""
    get = row.__getitem__
    key = (row["vector_store_id"], row["batch_id"])
    try:
        return _decode(get, key)
    except DamagedRow:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, ProtocolError) as exc:
        # What the checks below did not foresee is damage all the same, never a crash.
        raise DamagedRow(key, f"{type(exc).__name__}: {exc}") from None


def _decode(get: Any, key: tuple[object, object]) -> Watch:
    def damaged(problem: str) -> DamagedRow:
        return DamagedRow(key, problem)

    vs, batch = key
    problems = validate_id(vs, "vector_store_id")
    if batch != STORE:  # a whole vector store's watch has no batch
        problems += validate_id(batch, "batch_id")
    if problems:
        raise damaged("; ".join(problems))
    assert isinstance(vs, str)
    assert isinstance(batch, str)
    labels = _object(get("labels"), "labels", damaged)
    if problems := validate_labels(labels, "labels"):
        raise damaged("; ".join(problems))
    options = _options(_object(get("options"), "options", damaged), damaged)
    registered_at = _real(get("registered_at"), "registered_at", damaged)
    if registered_at is None:
        raise damaged("registered_at is missing")
    watch = Watch.new(vs, batch, labels=labels, options=options, registered_at=registered_at)

    progress = _object(get("progress"), "progress", damaged)
    created_at = progress.get("created_at")
    if created_at is not None and (
        isinstance(created_at, bool) or not isinstance(created_at, int) or created_at < 0
    ):
        raise damaged(f"progress.created_at is {_show(created_at)}, not a timestamp")
    watch = dataclasses.replace(
        watch,
        status=_token_or_none(progress.get("status"), "progress.status", damaged),
        file_counts=_counts(progress.get("file_counts"), "progress.file_counts", damaged),
        created_at=created_at,
        first_seen_at=_real(progress.get("first_seen_at"), "progress.first_seen_at", damaged),
        last_poll_at=_real(progress.get("last_poll_at"), "progress.last_poll_at", damaged),
        retry_of=_id_or_none(progress.get("retry_of"), "progress.retry_of", damaged),
        retry_attempt=_count(progress.get("retry_attempt", 0), "progress.retry_attempt", damaged),
        retry_sending=_count_or_none(
            progress.get("retry_sending"), "progress.retry_sending", damaged
        ),
    )

    result = get("result")
    finished_at = _real(get("finished_at"), "finished_at", damaged)
    if result is None:
        if finished_at is not None:
            raise damaged("finished_at is set, but there is no result")
        return watch
    if finished_at is None:
        raise damaged("there is a result, but finished_at is not set")
    return dataclasses.replace(
        watch,
        result=_result(_object(result, "result", damaged), key, damaged),
        finished_at=finished_at,
        phase=Phase.FINISHED,
    )


def _object(text: object, what: str, damaged: Any) -> dict[str, Any]:
    if not isinstance(text, str):
        raise damaged(f"{what} is {_show(text)}, not JSON text")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise damaged(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise damaged(f"{what} is {_show(value)}, not a JSON object")
    return value


def _real(value: object, what: str, damaged: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise damaged(f"{what} is {_show(value)}, not a number")
    if value < 0:
        raise damaged(f"{what} is {_show(value)}, a negative time")
    return float(value)


def _token(value: object, what: str, damaged: Any) -> str:
    if not isinstance(value, str) or not value:
        raise damaged(f"{what} is {_show(value)}, not a non-empty string")
    if len(value) > _MAX_TOKEN or not value.isprintable():
        raise damaged(f"{what} is {_show(value)}, not a plausible status, id or code")
    return value


def _token_or_none(value: object, what: str, damaged: Any) -> str | None:
    return None if value is None else _token(value, what, damaged)


def _id_or_none(value: object, what: str, damaged: Any) -> str | None:
    if value is None:
        return None
    if problems := validate_id(value, what):
        raise damaged("; ".join(problems))
    assert isinstance(value, str)
    return value


def _count_or_none(value: object, what: str, damaged: Any) -> int | None:
    return None if value is None else _count(value, what, damaged)


def _counts(value: object, what: str, damaged: Any) -> FileCounts | None:
    if value is None:
        return None
    try:
        return parse_file_counts(value)
    except ProtocolError as exc:
        raise damaged(what + exc.message.removeprefix("file_counts")) from None


def _count(value: object, what: str, damaged: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise damaged(f"{what} is {_show(value)}, not a count")
    return value


#: Each option, and whether it is a flag (else a number of seconds).
_OPTION_KINDS: dict[str, type] = {
    "interval_seconds": float,
    "deadline_seconds": float,
    "cancel_on_timeout": bool,
    "stall_after_seconds": float,
}


def _retry(value: object, damaged: Any) -> RetryPolicy:
    if not isinstance(value, dict) or set(value) != {"codes", "max_attempts"}:
        raise damaged(f"options.retry is {_show(value)}, not codes and max_attempts")
    codes = value["codes"]
    if not isinstance(codes, list) or not codes:
        raise damaged(f"options.retry.codes is {_show(codes)}, not a list of codes")
    for code in codes:
        _token(code, "a code of options.retry.codes", damaged)
    attempts = _count(value["max_attempts"], "options.retry.max_attempts", damaged)
    return RetryPolicy(tuple(codes), attempts)


def _options(data: dict[str, Any], damaged: Any) -> WatchOptions:
    retry = data.pop("retry", None)
    policy = None if retry is None else _retry(retry, damaged)
    for name, value in data.items():
        kind = _OPTION_KINDS.get(name)
        if kind is None:
            raise damaged(f"options.{_show(name)} is no option")
        if value is None:
            continue
        if kind is bool:
            if not isinstance(value, bool):
                raise damaged(f"options.{name} is {_show(value)}, not true or false")
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise damaged(f"options.{name} is {_show(value)}, not a number of seconds")
    return WatchOptions(**data, retry=policy)


def _result(data: dict[str, Any], key: tuple[object, object], damaged: Any) -> BatchResult:
    if (data.get("vector_store_id"), data.get("batch_id")) != key:
        raise damaged("result is for another watch")
    failed_files = data.get("failed_files")
    if not isinstance(failed_files, list):
        raise damaged("result.failed_files is not a list")
    kept = []
    for n, item in enumerate(failed_files):
        where = f"result.failed_files[{n}]"
        if not isinstance(item, dict):
            raise damaged(f"{where} is {_show(item)}, not an object")
        error = item.get("last_error")
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            raise damaged(f"{where}.last_error is {_show(error)}, not a code and a message")
        kept.append(
            FailedFile(
                _token(item.get("id"), f"{where}.id", damaged),
                LastError(
                    _token(error.get("code"), f"{where}.last_error.code", damaged),
                    error["message"],
                ),
                _file_name(item, where, damaged),
            )
        )
    stuck = data.get("stuck_files", [])
    if not isinstance(stuck, list):
        raise damaged("result.stuck_files is not a list")
    stuck_files = []
    for n, item in enumerate(stuck):
        where = f"result.stuck_files[{n}]"
        if not isinstance(item, dict):
            raise damaged(f"{where} is {_show(item)}, not an object")
        quiet = _real(item.get("stalled_seconds"), f"{where}.stalled_seconds", damaged)
        stuck_files.append(
            StuckFile(
                _token(item.get("id"), f"{where}.id", damaged),
                _file_name(item, where, damaged),
                quiet or 0.0,
            )
        )
    _id_or_none(data.get("retry_of"), "result.retry_of", damaged)
    retried_as = data.get("retried_as", [])
    if not isinstance(retried_as, list):
        raise damaged("result.retried_as is not a list")
    for n, batch_id in enumerate(retried_as):
        if problems := validate_id(batch_id, f"result.retried_as[{n}]"):
            raise damaged("; ".join(problems))
    by_code = data.get("failed_files_by_code", {})
    if not isinstance(by_code, dict):
        raise damaged("result.failed_files_by_code is not an object")
    for code, count in by_code.items():
        _token(code, "a code of result.failed_files_by_code", damaged)
        _count(count, f"result.failed_files_by_code[{_show(code)}]", damaged)
    labels = data.get("labels", {})
    if problems := validate_labels(labels, "result.labels"):
        raise damaged("; ".join(problems))
    for flag in ("failed_files_truncated", "failed_files_complete"):
        if not isinstance(data.get(flag, False), bool):
            raise damaged(f"result.{flag} is {_show(data.get(flag))}, not true or false")
    if not isinstance(data.get("note", ""), str):
        raise damaged(f"result.note is {_show(data.get('note'))}, not a string")
    if not isinstance(data.get("status"), str) or data["status"] not in _ENDINGS:
        raise damaged(f"result.status is {_show(data.get('status'))}, not how a watch ends")
    _counts(data.get("file_counts"), "result.file_counts", damaged)
    _count(data.get("failed_files_listed", 0), "result.failed_files_listed", damaged)
    _real(data.get("elapsed_seconds", 0.0), "result.elapsed_seconds", damaged)
    _real(data.get("finished_at", 0.0), "result.finished_at", damaged)
    # Every field checked: the one reader of a result's JSON builds it.
    result = BatchResult.from_dict({**data, "failed_files": [], "stuck_files": []})
    return dataclasses.replace(result, failed_files=tuple(kept), stuck_files=tuple(stuck_files))


def _file_name(item: dict[str, Any], where: str, damaged: Any) -> FileName:
    """A stored file's name, size and lookup error, each of its type or null."""
    name, size, error = item.get("filename"), item.get("bytes"), item.get("filename_error")
    if name is not None and not isinstance(name, str):
        raise damaged(f"{where}.filename is {_show(name)}, not a string")
    if error is not None and not isinstance(error, str):
        raise damaged(f"{where}.filename_error is {_show(error)}, not a string")
    size = _count_or_none(size, f"{where}.bytes", damaged)
    return FileName(name, size, error)


_ENDINGS = frozenset(state.value for state in ENDINGS)


def _show(value: object) -> str:
    """A stored value in a message: its JSON, or its repr, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
