"""Webhook notifications: one POST per finished batch, never blocking polling.

The payload is the same JSON as ``watch --output json``. Deliveries come from the state store's
outbox (written in the same transaction that records the batch as finished), so a crash between
the two loses nothing; a delivery is retried with backoff and jitter (stamina), and stays in the
outbox until the receiver accepts it (2xx) or refuses it for good (4xx). A redirect is a failed
attempt: it is never followed, since the body and its signature were meant for this URL.

Each POST follows Standard Webhooks (https://www.standardwebhooks.com/): ``webhook-id`` (the
same for every attempt of one delivery, after a restart too, so a receiver can drop a
duplicate), ``webhook-timestamp`` (Unix seconds of this attempt) and, with a secret,
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``: a receiver that rejects
old timestamps cannot be fed a captured request again. The key is the secret's base64 after
``whsec_`` when it has that prefix, else the secret's UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Literal

import anyio
import httpx
import stamina
import structlog

from .. import __version__
from ..core.events import BatchFinished, Event
from ..credentials import SecretSource
from ..errors import ConfigError, StoreUnavailable
from ..store import OutboxItem, StateStore

log = structlog.get_logger("watcher.daemon.notify")

PAGE = 100  # deliveries read from the outbox at a time
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
STORE_RETRY_SECONDS = 5.0  # between reads of an outbox the store could not read or update


class _Refused(Exception):
    """The receiver answered with a status worth retrying (3xx, 5xx, 429, 408)."""


def signing_key(secret: str) -> bytes:
    """The HMAC key for a secret: base64-decoded after ``whsec_``, else its UTF-8 bytes.

    Raises ValueError when the part after ``whsec_`` is not base64."""
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"the part after {SECRET_PREFIX!r} is not base64") from None
    if not key:
        raise ValueError(f"nothing follows {SECRET_PREFIX!r}")
    return key


def signature(key: bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, the ``webhook-signature`` value."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def delivery_id(item: OutboxItem) -> str:
    """The ``webhook-id`` of an outbox item: its row and a digest of its payload, the same for
    every attempt, and different for a new state store whose rows start again at 1."""
    digest = hashlib.sha256(item.payload.encode()).hexdigest()[:16]
    return f"bw_{item.id}_{digest}"


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        current = secret.current() if secret is not None else None
        if current is not None:
            try:
                signing_key(current.reveal())
            except ValueError as exc:
                raise ConfigError(f"notify.webhook_secret: {exc}") from None
        self.url = url
        self._store = store
        self._secret = secret
        self._clock = clock
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
        # Sent (delivered or rejected for good), but not yet removed from the outbox (the store
        # could not write): removed first on the next round, never sent again by this process.
        self._unmarked: list[tuple[int, bool]] = []
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
        """Send one page of the outbox: whether any was sent, and whether the page was full."""
        while self._unmarked:
            await self._mark(*self._unmarked[0])
            self._unmarked.pop(0)
        items = await self._store.pending_deliveries(PAGE)
        progressed = False
        for item in items:
            outcome = await self._deliver(item)
            if outcome == "failed":
                continue
            progressed = True
            self._unmarked.append((item.id, outcome == "delivered"))
            await self._mark(*self._unmarked[-1])
            self._unmarked.pop()
        return progressed, len(items) == PAGE

    async def _mark(self, item_id: int, delivered: bool) -> None:
        await self._store.delivered(item_id)
        if delivered:
            # Counted once the outbox says so, so that a reader of the count never sees a
            # delivery the store would still send again.
            self.delivered += 1

    def _headers(self, item: OutboxItem, body: bytes, key: bytes | None) -> dict[str, str]:
        """This attempt's headers: a fresh timestamp, and the signature over it."""
        message_id, timestamp = delivery_id(item), int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
        }
        if key is not None:
            headers["webhook-signature"] = signature(key, message_id, timestamp, body)
        return headers

    async def _deliver(self, item: OutboxItem) -> Literal["delivered", "rejected", "failed"]:
        body = item.payload.encode()
        secret = self._secret.current() if self._secret is not None else None
        try:
            key = signing_key(secret.reveal()) if secret else None
        except ValueError as exc:  # the secret was changed to one that is not valid
            log.error("webhook_secret_invalid", delivery=item.id, error=str(exc))
            return "failed"
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
                        "POST", self.url, content=body, headers=self._headers(item, body, key)
                    ) as response:
                        pass
                    status = response.status_code
                    if 300 <= status < 400:
                        raise _Refused(f"HTTP {status}: a redirect, which is not followed")
                    if status >= 500 or status in (408, 429):
                        raise _Refused(f"HTTP {status}")
        except (httpx.TransportError, _Refused) as exc:
            log.warning(
                "webhook_failed",
                vector_store_id=item.vector_store_id,
                batch_id=item.batch_id,
                delivery=item.id,
                error=f"{type(exc).__name__}: {exc}",
                attempts=self._max_attempts,
            )
            return "failed"
        if response.status_code >= 400:
            # The receiver refuses this payload for good (4xx); retrying will not change that.
            log.error(
                "webhook_rejected",
                vector_store_id=item.vector_store_id,
                batch_id=item.batch_id,
                delivery=item.id,
                http_status=response.status_code,
            )
            return "rejected"
        log.info(
            "webhook_delivered",
            vector_store_id=item.vector_store_id,
            batch_id=item.batch_id,
            delivery=item.id,
        )
        return "delivered"
