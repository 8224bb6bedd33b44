"""The project's error hierarchy.

Everything above the API client speaks in these, never in ``httpx`` exceptions. Errors are
translated once, where the call is made (:mod:`watcher.api.client`).

    WatcherError
    ├── ConfigError
    ├── TooManyWatches
    ├── StoreUnavailable          the state store cannot write now (locked, full, read-only)
    └── APIError                  status, request_id
        ├── AuthError             401 / 403
        ├── NotFound              404, or a 400 that says the id is unknown
        ├── Expired               a 400 or 404 that says the batch has expired
        ├── AlreadyAttached       a 400: a file sent in a new batch is still in the store
        ├── RateLimited           429, retry_after seconds (or None)
        ├── Transient             5xx, timeouts, connection errors, HTML error pages
        └── ProtocolError         a 2xx that is not the JSON we need
            ├── PaginationError   a list that would never end
            └── WrongBatch        a reply for another batch than the one asked for
"""

from __future__ import annotations


class WatcherError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(WatcherError):
    """The configuration or the command line is invalid.

    ``problems`` lists every problem found, each naming its key.
    """

    def __init__(self, problems: str | list[str]) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class StoreUnavailable(WatcherError):
    """The state store could not write what was noted (a lock held too long, a full disk, a
    read-only file, a lost connection). Nothing noted is dropped: it is written by a later
    flush, once the store can write again."""


class TooManyWatches(WatcherError):
    """The engine already holds its maximum number of unfinished watches."""


class APIError(WatcherError):
    """The API (or the network on the way to it) did not give us what we asked for."""

    def __init__(
        self, message: str, *, status: int | None = None, request_id: str | None = None
    ) -> None:
        self.message = message
        self.status = status
        self.request_id = request_id
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"http_status={self.status}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class AuthError(APIError):
    """The API refused our credentials (401) or our access to the resource (403)."""


class NotFound(APIError):
    """The vector store or the batch does not exist (or no longer does)."""


class Expired(APIError):
    """The server expired the batch (llama-stack does seven days after its creation)."""


class AlreadyAttached(APIError):
    """Creating a batch was refused because a file in it is still attached to the vector store
    (detach it, then send the batch again)."""


class RateLimited(APIError):
    """The API said 429. ``retry_after`` is the server's wait in seconds, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        status: int | None = 429,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.retry_after = retry_after


class Transient(APIError):
    """A failure worth retrying later: 5xx, timeouts, dropped connections, error pages."""


class ProtocolError(APIError):
    """The server answered 2xx with something that is not the JSON the API promises."""


class WrongBatch(ProtocolError):
    """The reply is for another batch than the one asked for (mock servers of the spec invent
    ids): it says nothing of ours, and repeated it is a rejection, not a passing fault."""


class PaginationError(ProtocolError):
    """A list of files would never end: a repeated cursor, an empty page claiming more, or
    more pages than the bound allows."""
