"""The simulator's vector-store endpoints, served by :class:`~.app.SimulatorApp`:

    GET /vector_stores                    every store, cursor pages (limit 1..100, after, order)
    GET /vector_stores/{vs}               one store: status, summed file_counts, usage, expiry
    GET /vector_stores/{vs}/files         every file of the store's batches (filter, limit, after)

The app checks rate limit, auth and faults first, as for the batch endpoints; a fault armed for
a store id (``Simulator.inject(fault, "vs_...")``) fires on that store's requests.
"""

from __future__ import annotations

from typing import Any, Final

from ..api.models import FILE_STATUSES
from .batch import UnknownStore
from .faults import Endpoint, Fault, FaultKind
from .files import DEFAULT_LIMIT, MAX_LIMIT, Order
from .simulator import Simulator
from .stores import page_after, store_files
from .wire import Reply, error_reply, json_reply

#: The endpoints this module answers.
STORE_ENDPOINTS: Final[frozenset[Endpoint]] = frozenset(
    {"list_stores", "retrieve_store", "list_store_files"}
)
_ORDERS: Final[dict[str, Order]] = {"asc": "asc", "desc": "desc"}
_Query = dict[str, list[str]]


def route_store(method: str, parts: list[str]) -> tuple[Endpoint, str, str] | None:
    """``(endpoint, vector_store_id, "")`` for a store path (split after the prefix), or None."""
    if method != "GET" or not parts or parts[0] != "vector_stores":
        return None
    if len(parts) == 1:
        return "list_stores", "", ""
    if not parts[1]:
        return None
    if len(parts) == 2:
        return "retrieve_store", parts[1], ""
    if len(parts) == 3 and parts[2] == "files":
        return "list_store_files", parts[1], ""
    return None


def answer_store(
    sim: Simulator, endpoint: Endpoint, vs_id: str, query: _Query, fault: Fault | None
) -> Reply:
    if endpoint == "retrieve_store":
        return _retrieve(sim, vs_id, fault)
    page = _page_params(query)
    if isinstance(page, Reply):
        return page
    limit, order, after = page
    if fault is not None and fault.kind is FaultKind.PAGINATION_LOOP:
        after = None
    if endpoint == "list_stores":
        ids = sim.store_ids()
        if order == "desc":
            ids.reverse()
        items = ((i, sim.store(i)) for i in ids)
        data, has_more = page_after(items, after=after, limit=limit)
    else:
        try:
            sim.store(vs_id)
        except UnknownStore:
            return _not_found(vs_id)
        wanted = query.get("filter", [None])[0]
        if fault is not None and fault.kind is FaultKind.IGNORE_FILTER:
            wanted = None
        if wanted is not None and wanted not in FILE_STATUSES:
            return error_reply(
                400,
                f"Invalid 'filter': expected one of {', '.join(FILE_STATUSES)}, got '{wanted}'.",
                param="filter",
            )
        files = store_files(sim.store_batches(vs_id), order=order, status=wanted)
        data, has_more = page_after(files, after=after, limit=limit)
    if fault is not None and fault.kind is FaultKind.EMPTY_PAGE:
        data, has_more = [], True
    looping = fault is not None and fault.kind is FaultKind.PAGINATION_LOOP
    return json_reply(
        200,
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more or looping,
        },
    )


def _retrieve(sim: Simulator, vs_id: str, fault: Fault | None) -> Reply:
    try:
        body: dict[str, Any] = sim.store(vs_id)
    except UnknownStore:
        return _not_found(vs_id)
    if fault is not None and fault.kind is FaultKind.UNKNOWN_STATUS:
        body["status"] = fault.value
    if fault is not None and fault.kind is FaultKind.WRONG_ID:
        body["id"] = "vs_invented"
    return json_reply(200, body)


def _page_params(query: _Query) -> tuple[int, Order, str | None] | Reply:
    limit_s = query.get("limit", [str(DEFAULT_LIMIT)])[0]
    try:
        limit = int(limit_s)
    except ValueError:
        return error_reply(400, f"Invalid 'limit': expected an integer, got '{limit_s}'.")
    if not 1 <= limit <= MAX_LIMIT:
        return error_reply(
            400,
            f"Invalid 'limit': expected a value in 1..{MAX_LIMIT}, but got {limit} instead.",
            param="limit",
        )
    order_s = query.get("order", ["desc"])[0]
    order = _ORDERS.get(order_s)
    if order is None:
        return error_reply(
            400, f"Invalid 'order': expected 'asc' or 'desc', got '{order_s}'.", param="order"
        )
    if "before" in query:
        return error_reply(400, "The simulator pages stores forward only ('after').")
    return limit, order, query.get("after", [None])[0]


def _not_found(vs_id: str) -> Reply:
    return error_reply(404, f"No vector store found with id '{vs_id}'.")
