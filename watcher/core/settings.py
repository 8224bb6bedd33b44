"""The engine's knobs: what the lifecycle's rules and the scheduler's limits go by.

Defaults for what the configuration sets are the configuration's (``DEFAULTS``); the rest are
the engine's own rules of thumb.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config.model import DEFAULTS
from .policy import PollSettings


@dataclass(frozen=True, slots=True)
class EngineSettings:
    poll: PollSettings = field(default_factory=PollSettings)
    max_requests_per_minute: float = DEFAULTS.api.max_requests_per_minute
    max_concurrency: int = DEFAULTS.api.max_concurrency
    stall_after_seconds: float | None = DEFAULTS.poll.stall_after
    deadline_seconds: float | None = DEFAULTS.poll.deadline
    cancel_on_timeout: bool = DEFAULTS.poll.cancel_on_timeout
    max_watches: int = DEFAULTS.state.max_watches
    max_failed_files: int = DEFAULTS.state.max_failed_files
    max_list_attempts: int = 8  # failed attempts at listing a batch's files before giving up
    auth_retry_seconds: float = 30.0
    not_found_confirmations: int = 2
    rejections_to_end: int = 3  # consecutive rejected replies that end a watch as rejected
    max_file_pages: int = DEFAULTS.api.max_file_pages  # a list's pages follow its count too
