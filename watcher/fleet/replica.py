"""A replica's name in the fleet: ``BATCH_WATCHER_REPLICA_ID``, else the host name and pid.

A Kubernetes pod's name (the host name) works as it is; the pid keeps two processes on one host
apart. Two live processes under one name are refused at their first heartbeat.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Final

from ..config.values import show
from ..errors import ConfigError

REPLICA_ID_ENV: Final = "BATCH_WATCHER_REPLICA_ID"
MAX_NAME: Final = 128


def replica_name(environ: Mapping[str, str] = os.environ) -> str:
    """This process's replica name, or a :class:`ConfigError` naming the variable."""
    given = environ.get(REPLICA_ID_ENV, "").strip()
    if not given:
        return f"{socket.gethostname()}-{os.getpid()}"
    if len(given) > MAX_NAME or not given.isprintable():
        raise ConfigError(
            f"{REPLICA_ID_ENV}: {show(given)} is not a replica name "
            f"(1..{MAX_NAME} printable characters)"
        )
    return given
