"""What the engine, the polling policy and the API client are given, derived from a
:class:`~watcher.config.model.Config`: the daemon's file and the ``watch`` command's options
both end here, so each setting has one way in."""

from __future__ import annotations

from ..api.settings import ClientSettings
from ..core.policy import PollSettings
from ..core.settings import EngineSettings
from .model import Config


def client_settings(config: Config) -> ClientSettings:
    api = config.api
    return ClientSettings(
        base_url=api.base_url,
        api_key=api.api_key,
        organization=api.organization,
        project=api.project,
        auth=api.auth,
        query=dict(api.query),
        timeout_seconds=api.timeout_seconds,
        max_response_bytes=api.max_response_bytes,
        max_connections=api.max_concurrency,
    )


def poll_settings(config: Config) -> PollSettings:
    poll = config.poll
    return PollSettings(
        interval=poll.interval_seconds,
        min_interval=poll.min_interval_seconds,
        max_interval=poll.max_interval_seconds,
        slow_down=poll.slow_down,
        adaptive=poll.adaptive,
    )


def engine_settings(config: Config) -> EngineSettings:
    poll, api, state = config.poll, config.api, config.state
    return EngineSettings(
        poll=poll_settings(config),
        max_requests_per_minute=api.max_requests_per_minute,
        max_concurrency=api.max_concurrency,
        stall_after_seconds=poll.stall_after,
        deadline_seconds=poll.deadline,
        cancel_on_timeout=poll.cancel_on_timeout,
        max_watches=state.max_watches,
        max_failed_files=state.max_failed_files,
        max_file_pages=api.max_file_pages,
    )
