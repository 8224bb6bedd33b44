"""The Python runtime as a long-running watcher wants it: the cyclic garbage collector.

CPython's collector runs a young collection every 700 net allocations of container objects and
a full one whenever the objects promoted since the last exceed a quarter of the old ones. A
watcher at the budget replaces each watch's record at every poll, and every request's objects
live through a few young collections while they wait for the reply: at 10,000 watches and 200
polls a second they were promoted fast enough for a full collection every 5-10 seconds, each
one 100-300 ms with the event loop held (a scrape, /healthz and every poll wait). A young
threshold of 10,000 lets a request's objects die by reference counting before any collection
sees them: measured with ``python -m bench.scrape_http`` at 10,000 batches (docs/benchmarks.md),
full collections went from 20 to 1 over the run and young ones stay under 10 ms.
"""

from __future__ import annotations

import gc
from typing import Final

#: Net allocations of container objects between young collections (CPython's default is 700).
YOUNG_THRESHOLD: Final = 10_000


def tune_collector() -> None:
    """Set the collector's thresholds for a process that runs the engine (``run``, ``watch``)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
