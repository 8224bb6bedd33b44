"""One vocabulary for where a watch stands and how it ended.

Every layer that shows a watch — the engine's events, the ``watch`` command's report and exit
status, the metrics, the state store, the status page and the webhook — speaks in :class:`State`.
A batch's own ``status`` is the API's word and stays a plain string (servers send statuses no
enum lists); the watch's state is ours.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from ..api.models import CANCELLED, COMPLETED, FAILED


class State(StrEnum):
    """Where a watch stands: still watching (perhaps stalled), or how it ended."""

    WATCHING = "watching"
    STALLED = "stalled"
    #: The batch ended with the API's status of the same name.
    COMPLETED = COMPLETED
    CANCELLED = CANCELLED
    FAILED = FAILED
    #: The watch's deadline passed before the batch ended.
    TIMED_OUT = "timed_out"
    #: The API said, twice, that the batch (or its vector store) does not exist.
    NOT_FOUND = "not_found"
    #: The API kept rejecting the request, or kept answering for another batch.
    REJECTED = "rejected"
    #: The server expired the batch (llama-stack expires batches seven days after creation).
    EXPIRED = "expired"
    #: The API refused the credentials and ``watch`` gave up (the daemon holds and probes).
    AUTH_FAILED = "auth_failed"

    @property
    def is_ending(self) -> bool:
        return self in ENDINGS


#: The states a watch ends in.
ENDINGS: Final = frozenset(
    {
        State.COMPLETED,
        State.CANCELLED,
        State.FAILED,
        State.TIMED_OUT,
        State.NOT_FOUND,
        State.REJECTED,
        State.EXPIRED,
        State.AUTH_FAILED,
    }
)

#: How a batch's terminal API status ends its watch.
BY_TERMINAL_STATUS: Final = {
    COMPLETED: State.COMPLETED,
    CANCELLED: State.CANCELLED,
    FAILED: State.FAILED,
}


class Phase(StrEnum):
    """Where the engine is with a watch; a finer grain than :class:`State`."""

    WATCHING = "watching"  # polling the batch
    LISTING = "listing"  # its end is decided: cancelling it if asked, reading its failed files
    FINISHED = "finished"  # recorded and announced: nothing more to do
