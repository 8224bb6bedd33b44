"""A fake of the OpenAI vector-store file-batch API, served over real HTTP on loopback.

Batches progress from a scenario on an injectable clock; faults (429s, 5xx, HTML pages,
truncated JSON, dropped connections, slow replies, odd statuses, vanished batches, endless
pagination, a global rate limit) are armed on demand; ``/_sim/`` tells the truth and counts what
clients did. Used by the tests, by ``batch-watcher demo`` and by the benchmarks
(``python -m watcher.simulator``).
"""

from .app import SimulatorApp
from .batch import BatchNotCancellable, SimBatch, UnknownBatch, UnknownStore
from .demo import DEMO_ERRORS, DEMO_VECTOR_STORE, demo_scenario
from .faults import Endpoint, Fault, FaultKind
from .files import file_id
from .ratelimit import RateLimit, format_duration
from .scenario import REAL_ERRORS, BatchSpec, Progress
from .server import serve_simulator, serve_simulator_in_thread
from .simulator import Simulator
from .stats import SimStats
from .stores import StoreSpec

__all__ = [
    "DEMO_ERRORS",
    "DEMO_VECTOR_STORE",
    "REAL_ERRORS",
    "BatchNotCancellable",
    "BatchSpec",
    "Endpoint",
    "Fault",
    "FaultKind",
    "Progress",
    "RateLimit",
    "SimBatch",
    "SimStats",
    "Simulator",
    "SimulatorApp",
    "StoreSpec",
    "UnknownBatch",
    "UnknownStore",
    "demo_scenario",
    "file_id",
    "format_duration",
    "serve_simulator",
    "serve_simulator_in_thread",
]
