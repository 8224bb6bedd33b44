"""The watches the configuration file declares, in the engine's terms.

The daemon turns each validated ``[[watch]]`` into a :class:`DeclaredWatch` when it is built
and lets the specs go before it builds any watch: a spec is a pydantic model of some 600
bytes, and 10,000 of them alive while the watches are built would leave as many holes in
the heap once freed (about 250 bytes a watch in the daemon's resident size).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..config import WatchConfig
from ..core.retry import retry_policy
from ..core.watch import WatchOptions


@dataclass(frozen=True, slots=True)
class DeclaredWatch:
    """``watch[index]`` of the file."""

    index: int
    vector_store_id: str
    batch_id: str
    labels: Mapping[str, str]
    options: WatchOptions


def declared_watches(specs: Iterable[WatchConfig]) -> tuple[DeclaredWatch, ...]:
    """Each spec's watch, its overrides as :class:`WatchOptions` (one object for equal ones)."""
    shared: dict[WatchOptions, WatchOptions] = {}
    declared = []
    for index, spec in enumerate(specs):
        options = WatchOptions(
            interval_seconds=spec.interval_seconds,
            deadline_seconds=spec.deadline_seconds,
            cancel_on_timeout=spec.cancel_on_timeout,
            stall_after_seconds=spec.stall_after_seconds,
            retry=retry_policy(spec.retry),
        )
        declared.append(
            DeclaredWatch(
                index,
                spec.vector_store_id,
                spec.batch_id,
                spec.labels,
                shared.setdefault(options, options),
            )
        )
    return tuple(declared)


class DeclaredKeys:
    """Which watches the file declares, and where: ``watch[i]`` for a store's batch.

    The daemon keeps it for its life (the control API refuses to delete a declared watch, which
    would come back at the next start, and says where it is), so it is kept small: per store,
    its batch ids in the file's order beside their indexes as 32-bit ints, about 12 bytes a
    watch where a dict of ints took about 70. A look-up scans the store's ids, which only a
    ``DELETE`` does.
    """

    def __init__(self, declared: Iterable[DeclaredWatch] = ()) -> None:
        building: dict[str, tuple[list[str], array[int]]] = {}
        for watch in declared:
            batches, indexes = building.setdefault(watch.vector_store_id, ([], array("i")))
            batches.append(watch.batch_id)
            indexes.append(watch.index)
        self._by_store = {vs: (tuple(ids), at) for vs, (ids, at) in building.items()}

    def index(self, vector_store_id: str, batch_id: str) -> int | None:
        """The ``i`` of the ``watch[i]`` that declares the batch; None if none does."""
        found = self._by_store.get(vector_store_id)
        if found is None:
            return None
        batches, indexes = found
        try:
            return indexes[batches.index(batch_id)]
        except ValueError:
            return None
