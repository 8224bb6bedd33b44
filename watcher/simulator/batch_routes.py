"""The simulator's batch endpoints, served by :class:`~.app.SimulatorApp`:

    GET  /vector_stores/{vs}/file_batches/{batch}          the batch: status, file_counts
    GET  /vector_stores/{vs}/file_batches/{batch}/files    its files, cursor pages (filter,
                                                            limit 1..100, order, after, before)
    POST /vector_stores/{vs}/file_batches/{batch}/cancel   ask to cancel it

Batch creation (``POST /vector_stores/{vs}/file_batches``) is in :mod:`.file_routes`.
"""

from __future__ import annotations

from typing import Final

from ..api.models import FILE_STATUSES, TERMINAL_STATUSES
from .batch import BatchNotCancellable, SimBatch, UnknownBatch
from .faults import Endpoint, Fault, FaultKind
from .files import DEFAULT_LIMIT, Order, PageQuery, file_json, page_indices
from .scenario import Progress
from .simulator import Simulator
from .wire import Reply, error_reply, json_reply

_QueryParams = dict[str, list[str]]
_ORDERS: Final[dict[str, Order]] = {"asc": "asc", "desc": "desc"}


def route_batch(method: str, vs_id: str, rest: list[str]) -> tuple[Endpoint, str, str] | None:
    """``/vector_stores/{vs}/file_batches[/{batch}[/files|/cancel]]``."""
    if not rest:
        return ("create_batch", vs_id, "") if method == "POST" else None
    batch_id, tail = rest[0], rest[1:]
    if not tail and method == "GET":
        return "retrieve", vs_id, batch_id
    if tail == ["files"] and method == "GET":
        return "list", vs_id, batch_id
    if tail == ["cancel"] and method == "POST":
        return "cancel", vs_id, batch_id
    return None


def answer_batch(
    sim: Simulator,
    endpoint: Endpoint,
    vs_id: str,
    batch_id: str,
    query: _QueryParams,
    fault: Fault | None,
) -> tuple[Reply, SimBatch | None]:
    """The reply of a batch endpoint, and the batch when the reply shows it terminal."""
    if endpoint == "retrieve":
        return _retrieve(sim, vs_id, batch_id, fault)
    if endpoint == "cancel":
        return _cancel(sim, vs_id, batch_id, fault)
    return _list(sim, vs_id, batch_id, query, fault), None


def batch_reply(sim: Simulator, found: SimBatch, progress: Progress, fault: Fault | None) -> Reply:
    """A batch object, with the ``openai-poll-after-ms`` header when one is set."""
    status = progress.status
    if fault is not None and fault.kind is FaultKind.UNKNOWN_STATUS:
        status = fault.value
    spec = found.spec
    wrong_id = fault is not None and fault.kind is FaultKind.WRONG_ID
    body = {
        "id": "vsfb_invented" if wrong_id else spec.batch_id,
        "object": "vector_store.file_batch",
        "created_at": found.created_at,
        "vector_store_id": spec.vector_store_id,
        "status": status,
        "file_counts": progress.file_counts.as_dict(),
    }
    poll_after = spec.poll_after_ms if spec.poll_after_ms is not None else sim.poll_after_ms
    headers = [] if poll_after is None else [(b"openai-poll-after-ms", str(poll_after).encode())]
    return json_reply(200, body, headers)


def _retrieve(
    sim: Simulator, vs_id: str, batch_id: str, fault: Fault | None
) -> tuple[Reply, SimBatch | None]:
    try:
        found = sim.visible(vs_id, batch_id)
    except UnknownBatch:
        return _not_found(batch_id), None
    progress = found.progress(sim.clock(), sim.cancel_seconds)
    reply = batch_reply(sim, found, progress, fault)
    shown = found if _shows_terminal(progress, fault) else None
    return reply, shown


def _cancel(
    sim: Simulator, vs_id: str, batch_id: str, fault: Fault | None
) -> tuple[Reply, SimBatch | None]:
    try:
        progress = sim.cancel(vs_id, batch_id)
    except UnknownBatch:
        return _not_found(batch_id), None
    except BatchNotCancellable as exc:
        message = f"Cannot cancel a vector store file batch that is already {exc}."
        return error_reply(400, message), None
    found = sim.visible(vs_id, batch_id)
    shown = found if _shows_terminal(progress, fault) else None
    return batch_reply(sim, found, progress, fault), shown


def _list(
    sim: Simulator, vs_id: str, batch_id: str, query: _QueryParams, fault: Fault | None
) -> Reply:
    try:
        found = sim.visible(vs_id, batch_id)
    except UnknownBatch:
        return _not_found(batch_id)
    spec = found.spec
    limit_s = query.get("limit", [str(DEFAULT_LIMIT)])[0]
    try:
        limit = int(limit_s)
    except ValueError:
        return error_reply(400, f"Invalid 'limit': expected an integer, got '{limit_s}'.")
    sim.stats.record_limit(limit)
    if not 1 <= limit <= 100:
        kind = "below minimum value" if limit < 1 else "above maximum value"
        bound = "expected a value >= 1" if limit < 1 else "expected a value <= 100"
        return error_reply(
            400,
            f"Invalid 'limit': integer {kind}. {bound.capitalize()}, but got {limit} instead.",
            param="limit",
        )
    order_s = query.get("order", ["desc"])[0]
    order = _ORDERS.get(order_s)
    if order is None:
        return error_reply(
            400, f"Invalid 'order': expected 'asc' or 'desc', got '{order_s}'.", param="order"
        )
    wanted = query.get("filter", [None])[0]
    if fault is not None and fault.kind is FaultKind.IGNORE_FILTER:
        wanted = None
    if wanted is not None and wanted not in FILE_STATUSES:
        return error_reply(
            400,
            f"Invalid 'filter': expected one of in_progress, completed, failed, cancelled, "
            f"got '{wanted}'.",
            param="filter",
        )
    cursors: dict[str, int | None] = {"after": None, "before": None}
    looping = fault is not None and fault.kind is FaultKind.PAGINATION_LOOP
    for name in cursors:
        value = query.get(name, [None])[0]
        if value is None or looping:
            continue
        index = found.file_index(value)
        if index is None:
            return error_reply(
                400, f"Invalid '{name}': no file with id '{value}' in this batch.", param=name
            )
        cursors[name] = index
    page_query = PageQuery(
        limit=limit,
        order=order,
        after=cursors["after"],
        before=cursors["before"],
        status=wanted,
    )
    progress = found.progress(sim.clock(), sim.cancel_seconds)
    indices: list[int]
    if fault is not None and fault.kind is FaultKind.EMPTY_PAGE:
        indices, has_more = [], True
    else:
        indices, has_more = page_indices(spec, progress, page_query)
        has_more = has_more or looping
    # A filtered page holds only files of the wanted status: no need to work it out again.
    data = [
        file_json(
            spec,
            progress,
            i,
            found.created_at,
            wanted,
            fid=found.file_id(i),
            meta=sim.file_meta(vs_id, found.file_id(i)),
        )
        for i in indices
    ]
    return json_reply(
        200,
        {
            "object": "list",
            "data": data,
            "first_id": found.file_id(indices[0]) if indices else None,
            "last_id": found.file_id(indices[-1]) if indices else None,
            "has_more": has_more,
        },
    )


def _shows_terminal(progress: Progress, fault: Fault | None) -> bool:
    if fault is not None and fault.kind is FaultKind.UNKNOWN_STATUS:
        return False
    return progress.status in TERMINAL_STATUSES


def _not_found(batch_id: str) -> Reply:
    return error_reply(404, f"No file batch found with id '{batch_id}'")
