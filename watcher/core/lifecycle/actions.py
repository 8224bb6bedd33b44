"""What the engine does next: the actions a transition asks for, and the step that carries
one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ...errors import (
    AuthError,
)
from ..events import (
    Event,
)
from ..policy import Reason
from ..results import BatchResult
from ..watch import Watch

Random = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Wait:
    """Call :func:`due` again after ``delay`` seconds. ``pause_all``: the server asked every
    request to wait this long (a 429), not only this watch's. ``remaining``: after a good
    reply, the estimate of the time left to the batch's end (``None``: none yet); the shared
    budget serves the watches most likely to have ended first."""

    delay: float
    reason: Reason
    pause_all: float | None = None
    remaining: float | None = None


@dataclass(frozen=True, slots=True)
class Retrieve:
    """Retrieve the batch now; then :func:`replied` or :func:`failed`."""


@dataclass(frozen=True, slots=True)
class RetrieveStore:
    """Retrieve the vector store now (a store's watch, :mod:`.store_lifecycle`); then its
    ``replied`` or ``failed``."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel the batch now; then :func:`cancelled`."""


@dataclass(frozen=True, slots=True)
class ListFailedFiles:
    """Read the batch's failed files now; then :func:`listed` or :func:`listing_failed`."""

    expected: int | None  # the final count of failed files, when the batch's counts are final


@dataclass(frozen=True, slots=True)
class ListStuckFiles:
    """Read one page of the batch's files still in progress, with their names; then
    :func:`stuck_listed`. ``then``: what to do after (None: the deadline passed, go on ending)."""

    then: Action | None = None
    limit: int = 20


@dataclass(frozen=True, slots=True)
class CreateRetry:
    """Send the batch's failed files of ``codes`` again as new batches: first record the watch
    (its ``retry_sending``) durably, then send; then :func:`retried` or :func:`retry_failed`.
    ``result``: how the watch ends once that is done. ``sent_before``: a request of this
    attempt may have been sent already (before a restart, or before an error)."""

    attempt: int
    codes: tuple[str, ...]
    result: BatchResult
    sent_before: bool = False


@dataclass(frozen=True, slots=True)
class Finish:
    """Record the ended watch durably, then announce the step's events (never the other way)."""


@dataclass(frozen=True, slots=True)
class Hold:
    """The API refused the credentials: hold the watches they concern until a probe passes."""

    error: AuthError


Action = (
    Wait
    | Retrieve
    | RetrieveStore
    | Cancel
    | ListFailedFiles
    | ListStuckFiles
    | CreateRetry
    | Finish
    | Hold
)


class Record(Enum):
    """What the state store should do with the step's watch (besides :class:`Finish`)."""

    NOTHING = 0
    PROGRESS = 1  # counts or status moved: written at the next checkpoint, may be lost
    SAVE = 2  # the first reply: written within a second (a result's elapsed time starts there)


@dataclass(frozen=True, slots=True)
class Step:
    watch: Watch
    action: Action
    events: tuple[Event, ...] = ()
    record: Record = Record.NOTHING


_RETRIEVE = Retrieve()


_CANCEL = Cancel()


_FINISH = Finish()
