"""``[state] url`` (fleet mode on PostgreSQL), ``lease_seconds`` and the replica's name: what
is accepted, what is refused, and that a password never shows."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from watcher.cli.main import main
from watcher.config import config_from_mapping, env_name, render_effective
from watcher.config.values import STATE_URL_ENV
from watcher.errors import ConfigError
from watcher.fleet.replica import replica_name

SECRET = "s3cr3t-hunter2"


def _problems(data: dict[str, object], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data, environ or {})
    return caught.value.problems


def test_sqlite_stays_the_default() -> None:
    """Without a url the state is the SQLite file; leases default to 15 seconds."""
    state = config_from_mapping({}, {}).state
    assert state.url is None
    assert state.lease_seconds == 15.0


def test_a_url_without_a_password_selects_postgresql() -> None:
    """A postgresql:// URL in the file is taken as it is."""
    url = "postgresql://watcher@db.internal:5432/batch_watcher"
    state = config_from_mapping({"state": {"url": url, "lease_seconds": 30}}, {}).state
    assert (state.url, state.lease_seconds) == (url, 30.0)


def test_a_password_in_the_file_is_refused_naming_the_key_and_never_shown() -> None:
    """A URL with a password in the configuration file is a problem of ``state.url``, and the
    message shows the password masked."""
    url = f"postgresql://watcher:{SECRET}@db:5432/bw"
    [problem] = _problems({"state": {"url": url}})
    assert problem.startswith("state.url: 'postgresql://watcher:********@db:5432/bw' holds")
    assert "BATCH_WATCHER_STATE_URL" in problem
    assert SECRET not in problem


def test_the_cli_exits_2_for_a_password_in_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``check-config`` on a file with a password in ``state.url`` exits 2, naming the key."""
    path = tmp_path / "config.toml"
    path.write_text(f'[state]\nurl = "postgresql://u:{SECRET}@h/db"\n', encoding="utf-8")
    assert main(["check-config", "--config", str(path)], {}) == 2
    err = capsys.readouterr().err
    assert "state.url:" in err
    assert SECRET not in err


def test_a_password_from_the_environment_is_taken_and_masked() -> None:
    """``BATCH_WATCHER_STATE_URL`` may carry a password; ``repr`` leaves the URL out and
    ``check-config`` shows it masked."""
    url = f"postgresql://watcher:{SECRET}@db:5432/bw"
    config = config_from_mapping({}, {"BATCH_WATCHER_STATE_URL": url})
    assert config.state.url == url
    assert SECRET not in repr(config)
    rendered = render_effective(config)
    assert 'url = "postgresql://watcher:********@db:5432/bw"' in rendered
    assert SECRET not in rendered


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://u@h/db", 'is not a "postgresql://user@host:port/dbname" URL'),
        ("https://h/db", 'is not a "postgresql://user@host:port/dbname" URL'),
        ("postgresql://u@h/db\n", "contains control characters"),
    ],
)
def test_urls_that_are_not_postgresql_are_refused(url: str, reason: str) -> None:
    """Only postgresql:// (or postgres://) URLs are accepted, each problem naming the key."""
    [problem] = _problems({"state": {"url": url}})
    assert problem.startswith("state.url: ")
    assert reason in problem


def test_lease_seconds_has_a_floor_and_an_environment_variable() -> None:
    """``lease_seconds`` is at least one second; ``BATCH_WATCHER_STATE_LEASE_SECONDS`` sets it."""
    assert _problems({"state": {"lease_seconds": 0.5}}) == ["state.lease_seconds: 0.5 is not >= 1"]
    env = {"BATCH_WATCHER_STATE_LEASE_SECONDS": "20"}
    assert config_from_mapping({}, env).state.lease_seconds == 20.0


def test_the_replica_name_comes_from_the_environment_else_host_and_pid() -> None:
    """``BATCH_WATCHER_REPLICA_ID`` names the replica; without it, the host name and pid do;
    a name that cannot be one is refused naming the variable."""
    assert replica_name({"BATCH_WATCHER_REPLICA_ID": "watcher-7d9f-abcde"}) == "watcher-7d9f-abcde"
    assert replica_name({}) == f"{socket.gethostname()}-{os.getpid()}"
    with pytest.raises(ConfigError, match=r"^BATCH_WATCHER_REPLICA_ID: .* not a replica name"):
        replica_name({"BATCH_WATCHER_REPLICA_ID": "x" * 200})
    # Not a configuration key: the variable is not mistaken for an unknown [state] override.
    config_from_mapping({}, {"BATCH_WATCHER_REPLICA_ID": "r1"})


def test_the_variable_that_may_carry_a_password_is_the_urls_override() -> None:
    """The one variable allowed a password is the one that overrides ``state.url``."""
    assert env_name("state", "url") == STATE_URL_ENV
