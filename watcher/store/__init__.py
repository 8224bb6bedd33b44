"""Where watches outlive the process: the :class:`StateStore` protocol and its backends.

The protocol and its promises are in :mod:`watcher.store.protocol`; the row encoding every
backend shares in :mod:`watcher.store.codec`; the SQLite backend in :mod:`watcher.store.sqlite`;
the PostgreSQL backend, which a fleet of replicas shares, in :mod:`watcher.store.postgres`.
"""

from .protocol import OutboxItem, StateStore, WriteFailure

__all__ = ["OutboxItem", "StateStore", "WriteFailure"]
