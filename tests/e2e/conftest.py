"""Fixtures for whole-process tests: a simulator process and a way to start daemons."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import DaemonProcess, SimulatorProcess, start_daemon, start_simulator


@pytest.fixture
def simulator_factory() -> Iterator[Callable[..., SimulatorProcess]]:
    """Start simulator processes with the given arguments; all are stopped after the test."""
    started: list[SimulatorProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> SimulatorProcess:
        sim = start_simulator(args, env=env)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start ``batch-watcher run`` processes in ``tmp_path``; all are stopped after the test."""
    started: list[DaemonProcess] = []

    def start(config: dict[str, Any], **kwargs: Any) -> DaemonProcess:
        daemon = start_daemon(tmp_path, config, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
