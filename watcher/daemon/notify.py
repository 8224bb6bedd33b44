"""Webhook notifications: one POST per finished batch, never blocking polling.

The payload is the same JSON as ``watch --output json``. Deliveries come from the state store's
outbox (written in the same transaction that records the batch as finished), so a crash between
the two loses nothing; a delivery is retried with backoff and jitter (stamina), and stays in the
outbox until the receiver accepts it. Receivers may see a delivery twice after a crash; each
carries its id in ``X-Batch-Watcher-Delivery`` to make that harmless.
"""

from __future__ import annotations

import hashlib
import hmac

import anyio
import httpx
import stamina
import structlog

from .. import __version__
from ..core.events import BatchFinished, Event
from ..credentials import SecretSource
from ..errors import StoreUnavailable
from ..store import OutboxItem, StateStore

log = structlog.get_logger("watcher.daemon.notify")

SIGNATURE_HEADER = "X-Batch-Watcher-Signature"
PAGE = 100  # deliveries read from the outbox at a time
DELIVERY_HEADER = "X-Batch-Watcher-Delivery"
STORE_RETRY_SECONDS = 5.0  # between reads of an outbox the store could not read or update


class _Refused(Exception):
    """The receiver answered with a status worth retrying (5xx, 429, 408)."""


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the body>``, as the signature header carries it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    def __init__(
        self,
        url: str,
        store: StateStore,
        *,
        secret: SecretSource | None = None,
        timeout_seconds: float = 10.0,
        max_attempts: int = 5,
        idle_seconds: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self._store = store
        self._secret = secret
        self._max_attempts = max_attempts
        self._idle = idle_seconds
        self._http = httpx.AsyncClient(
            timeout=timeout_seconds,
            transport=transport,
            headers={"User-Agent": f"batch-watcher/{__version__}"},
            follow_redirects=False,
            trust_env=False,
        )
        self._wake = anyio.Event()
        # Delivered, but not yet removed from the outbox (the store could not write): removed
        # first on the next round, never delivered again by this process.
        self._unmarked: list[int] = []
        self.delivered = 0

    def on_event(self, event: Event) -> None:
        """Engine sink: a finished batch means something new waits in the outbox."""
        if isinstance(event, BatchFinished):
            self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                # A fresh event before reading the outbox: a batch that finishes while we read
                # or deliver sets this one, and the wait below returns at once.
                self._wake = anyio.Event()
                idle = self._idle
                try:
                    progressed, full = await self._round()
                except StoreUnavailable as exc:
                    # The outbox waits in the store; polling goes on. Try again soon: no batch
                    # finishes (and wakes us) while the store cannot write.
                    log.warning("webhook_outbox_unavailable", error=str(exc))
                    progressed = full = False
                    idle = min(idle, STORE_RETRY_SECONDS)
                if full and progressed:
                    # More may wait behind a full page, finished before this page was read:
                    # their wake-up is spent. Read on now, not after the idle wait.
                    continue
                with anyio.move_on_after(idle):
                    await self._wake.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await self._http.aclose()

    async def _round(self) -> tuple[bool, bool]:
        """Deliver one page of the outbox: whether any was delivered, and whether the page was
        full."""
        while self._unmarked:
            await self._store.delivered(self._unmarked[0])
            self._unmarked.pop(0)
        items = await self._store.pending_deliveries(PAGE)
        progressed = False
        for item in items:
            if await self._deliver(item):
                self._unmarked.append(item.id)
                progressed = True
                await self._store.delivered(item.id)
                self._unmarked.pop()
        return progressed, len(items) == PAGE

    async def _deliver(self, item: OutboxItem) -> bool:
        body = item.payload.encode()
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: str(item.id)}
        secret = self._secret.current() if self._secret is not None else None
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret.reveal(), body)
        try:
            async for attempt in stamina.retry_context(
                on=(httpx.TransportError, _Refused),
                attempts=self._max_attempts,
                timeout=None,
                wait_initial=1.0,
                wait_max=30.0,
            ):
                with attempt:
                    # Only the status matters: the receiver's body is never read, so neither its
                    # size nor an encoding it gets wrong can stop the notifier.
                    async with self._http.stream(
                        "POST", self.url, content=body, headers=headers
                    ) as response:
                        pass
                    if response.status_code >= 500 or response.status_code in (408, 429):
                        raise _Refused(str(response.status_code))
        except (httpx.TransportError, _Refused) as exc:
            log.warning(
                "webhook_failed",
                vector_store_id=item.vector_store_id,
                batch_id=item.batch_id,
                delivery=item.id,
                error=f"{type(exc).__name__}: {exc}",
                attempts=self._max_attempts,
            )
            return False
        if response.status_code >= 300:
            # The receiver refuses this payload for good (4xx); retrying will not change that.
            log.error(
                "webhook_rejected",
                vector_store_id=item.vector_store_id,
                batch_id=item.batch_id,
                delivery=item.id,
                http_status=response.status_code,
            )
            return True
        self.delivered += 1
        log.info(
            "webhook_delivered",
            vector_store_id=item.vector_store_id,
            batch_id=item.batch_id,
            delivery=item.id,
        )
        return True
