"""``[discovery] vector_stores``: watch every vector store the key can list.

There is no endpoint that lists a store's file batches, so a batch nobody registered is
invisible; its store is not. Every ``interval`` the daemon reads every page of
``GET /vector_stores`` (through the engine's client, so within the shared request budget) and
watches each store it does not watch yet. A store that is no longer listed is not dropped here:
its own watch ends when the API says it is gone or expired.
"""

from __future__ import annotations

import anyio
import structlog

from ..core.engine import Engine
from ..core.watch import STORE
from ..errors import APIError, TooManyWatches

log = structlog.get_logger("watcher.daemon.discovery")


async def discover_once(engine: Engine) -> int:
    """List every store once and watch the new ones; returns how many were added. Raises the
    client's :class:`~watcher.errors.APIError` if the list cannot be read to its end."""
    listed = [store.id async for store in engine.client.iter_vector_stores()]
    added = 0
    for vector_store_id in listed:
        if engine.get(vector_store_id, STORE) is not None:
            continue
        try:
            engine.add(vector_store_id, STORE)
        except TooManyWatches as exc:
            log.warning("store_discovery_full", message=str(exc), listed=len(listed))
            break
        added += 1
    log.info("stores_discovered", listed=len(listed), added=added)
    return added


async def discover_stores(engine: Engine, *, interval: float) -> None:
    """Discover the stores now and every ``interval`` seconds, until cancelled. A listing that
    fails is logged and tried again at the next interval."""
    while True:
        try:
            await discover_once(engine)
        except APIError as exc:
            log.warning(
                "store_discovery_failed",
                error=type(exc).__name__,
                message=exc.message,
                http_status=exc.status,
                request_id=exc.request_id,
            )
        await anyio.sleep(interval)
