"""The engine's knobs: what the lifecycle's rules and the scheduler's limits go by."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..api.client import MAX_FILE_PAGES
from .policy import PollSettings


@dataclass(frozen=True, slots=True)
class EngineSettings:
    poll: PollSettings = field(default_factory=PollSettings)
    max_requests_per_minute: float = 600.0
    max_concurrency: int = 8
    stall_after_seconds: float | None = 900.0
    deadline_seconds: float | None = None
    cancel_on_timeout: bool = False
    max_watches: int = 10_000
    max_failed_files: int = 1000
    max_list_attempts: int = 8  # failed attempts at listing a batch's files before giving up
    auth_retry_seconds: float = 30.0
    not_found_confirmations: int = 2
    rejections_to_end: int = 3  # consecutive rejected replies that end a watch as rejected
    max_file_pages: int = MAX_FILE_PAGES  # a list's pages are bounded by its batch's count too
