"""How one watch lives, from registration to its end, as pure transitions.

Each function takes the watch as it is, what just happened (its turn came, a reply, an API error,
a cancellation, a listing of failed files), the time and the settings, and returns a
:class:`Step`: the watch as it is now, the events to announce, and the one thing the engine must
do next (:data:`Action`). Nothing here sleeps, reads a clock, draws a random number of its own or
touches the network: the engine around it does, and stays thin. ``now`` is the engine's
monotonic clock, ``wall`` Unix time.

The path of a watch::

    Wait ─▶ due() ─▶ Retrieve ─▶ replied() ─▶ Wait … ─▶ (terminal, deadline, not found, rejected)
                                   failed()           ─▶ [ListStuckFiles ─▶ stuck_listed()]
                                                      ─▶ [Cancel ─▶ cancelled()]
                                                      ─▶ [ListFailedFiles ─▶ listed()]
                                                      ─▶ [CreateRetry ─▶ retried()]
                                                      ─▶ Finish
"""

from .actions import (
    Action,
    Cancel,
    CreateRetry,
    Finish,
    Hold,
    ListFailedFiles,
    ListStuckFiles,
    Random,
    Record,
    Retrieve,
    RetrieveStore,
    Step,
    Wait,
)
from .common import poll_settings
from .ending import cancelled, listed, listing_failed, reopen, retried, retry_failed, stuck_listed
from .polling import crashed, due, failed, replied, start

__all__ = [
    "Action",
    "Cancel",
    "CreateRetry",
    "Finish",
    "Hold",
    "ListFailedFiles",
    "ListStuckFiles",
    "Random",
    "Record",
    "Retrieve",
    "RetrieveStore",
    "Step",
    "Wait",
    "cancelled",
    "crashed",
    "due",
    "failed",
    "listed",
    "listing_failed",
    "poll_settings",
    "reopen",
    "replied",
    "retried",
    "retry_failed",
    "start",
    "stuck_listed",
]
