"""The watches the configuration file declares, in the engine's terms.

The daemon turns each validated ``[[watch]]`` into a :class:`DeclaredWatch` when it is built
and lets the specs go before it builds any watch: a spec is a pydantic model of some 600
bytes, and 10,000 of them alive while the watches are built would leave as many holes in
the heap once freed (about 250 bytes a watch in the daemon's resident size).
"""

from __future__ import annotations

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


def declared_keys(declared: Iterable[DeclaredWatch]) -> dict[str, dict[str, int]]:
    """The index of each declared watch in the file, by vector store then batch."""
    keys: dict[str, dict[str, int]] = {}
    for watch in declared:
        keys.setdefault(watch.vector_store_id, {})[watch.batch_id] = watch.index
    return keys
