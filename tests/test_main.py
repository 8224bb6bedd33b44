"""The command line's options: defaults and help from the configuration model, one id rule, and
the configuration checks of ``run`` and ``check-config``."""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import pytest
import tomli_w

from watcher.api.settings import ClientSettings
from watcher.cli.main import _watch_command, build_parser, main
from watcher.config import DEFAULTS, validate_id
from watcher.core.engine import EngineSettings
from watcher.core.policy import PollSettings
from watcher.runtime import YOUNG_THRESHOLD, tune_collector


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    chosen: argparse.ArgumentParser = sub.choices[name]
    return chosen


def _options(name: str) -> dict[str, argparse.Action]:
    return {
        a.option_strings[-1]: a
        for a in _subparser(name)._actions
        if a.option_strings and a.option_strings[-1] != "--help"
    }


def test_every_watch_option_has_help_with_its_default() -> None:
    """Each option of ``watch`` that takes a value says what it is and its default; those in
    seconds say so."""
    for flag, action in _options("watch").items():
        assert action.help, flag
        if action.nargs != 0:
            assert "(default: " in action.help, flag
        if action.metavar == "SECONDS":
            assert "seconds" in action.help, flag


def test_watch_help_shows_the_models_defaults() -> None:
    """The defaults ``watch --help`` shows are the configuration model's."""
    options = _options("watch")
    shown = {flag: a.help.rsplit("(default: ", 1)[-1].rstrip(")") for flag, a in options.items()}
    assert float(shown["--interval"]) == DEFAULTS.poll.interval_seconds
    assert float(shown["--request-timeout"]) == DEFAULTS.api.timeout_seconds
    assert float(shown["--timeout"]) == DEFAULTS.poll.deadline_seconds
    assert int(shown["--max-requests-per-minute"]) == DEFAULTS.api.max_requests_per_minute
    assert shown["--auth"] == DEFAULTS.api.auth
    assert shown["--base-url"].endswith(DEFAULTS.api.base_url)
    assert shown["--log-level"] == DEFAULTS.log.level


def test_demo_help_has_a_description_and_the_models_listen() -> None:
    """``demo --help`` says what the demo does, and its --listen default is server.listen's."""
    demo = _subparser("demo")
    assert demo.description
    assert "simulator" in demo.description
    assert _options("demo")["--listen"].default == DEFAULTS.server.listen


def _command(*argv: str, environ: dict[str, str] | None = None) -> tuple[object, object]:
    args = build_parser().parse_args(["watch", "vs_1/b_1", *argv])
    command = _watch_command(args, environ or {})
    return command.client, command.engine


def test_watch_without_options_uses_the_default_settings() -> None:
    """``watch`` with no options gets the model's settings, with stalls and deadlines off."""
    client, engine = _command()
    assert isinstance(client, ClientSettings)
    assert isinstance(engine, EngineSettings)
    assert engine.poll == PollSettings()
    assert (engine.stall_after_seconds, engine.deadline_seconds) == (None, None)
    assert engine.max_requests_per_minute == EngineSettings().max_requests_per_minute
    assert client.timeout_seconds == ClientSettings().timeout_seconds
    assert client.base_url == DEFAULTS.api.base_url


def test_watch_options_reach_the_settings() -> None:
    """Each ``watch`` option sets its key: the request timeout, the interval (widening the
    bounds around it), deadline, stall, budget, auth and the base URL from the environment."""
    client, engine = _command(
        "--request-timeout",
        "7",
        "--interval",
        "400",
        "--timeout",
        "60",
        "--stall-after",
        "30",
        "--max-requests-per-minute",
        "90",
        "--auth",
        "Azure",
        "--cancel-on-timeout",
        environ={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1/", "OPENAI_ORG_ID": "org-1"},
    )
    assert isinstance(client, ClientSettings)
    assert isinstance(engine, EngineSettings)
    assert client.timeout_seconds == 7.0
    assert (engine.poll.interval, engine.poll.max_interval) == (400.0, 400.0)
    assert (engine.deadline_seconds, engine.stall_after_seconds) == (60.0, 30.0)
    assert engine.cancel_on_timeout is True
    assert engine.max_requests_per_minute == 90
    assert client.auth == "azure"
    assert (client.base_url, client.organization) == ("http://127.0.0.1:9/v1", "org-1")


def test_watch_ignores_the_daemons_variables() -> None:
    """``BATCH_WATCHER_*`` variables configure the daemon, not ``watch``."""
    _, engine = _command(environ={"BATCH_WATCHER_POLL_INTERVAL_SECONDS": "nope"})
    assert isinstance(engine, EngineSettings)
    assert engine.poll.interval == DEFAULTS.poll.interval_seconds


@pytest.mark.parametrize(
    ("vs", "batch"),
    [("vs_1", "a b"), ("vs%2F", "b"), ("..", "b"), ("vs", "x" * 129), ("vs", ""), ("vs", "ü")],
)
def test_the_command_line_refuses_the_ids_the_configuration_refuses(
    vs: str, batch: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A target is refused by the same id rule as the file and the control API."""
    bad = vs if validate_id(vs, "vector_store_id") else batch
    assert validate_id(bad, "batch_id")
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["watch", f"{vs}/{batch}"])
    assert caught.value.code == 2
    assert f"{bad!r} is not " in capsys.readouterr().err


@pytest.mark.parametrize("target", ["vs_abc123/vsfb_abc123", "a/b:1.x-y", f"{'x' * 128}/b"])
def test_the_command_line_accepts_the_ids_the_configuration_accepts(target: str) -> None:
    """Ids the configuration accepts are accepted as targets."""
    vs, batch = target.split("/")
    assert validate_id(vs, "vector_store_id") == validate_id(batch, "batch_id") == []
    assert build_parser().parse_args(["watch", target]).targets == [(vs, batch)]


def test_a_bare_vector_store_id_is_a_store_target() -> None:
    """``watch vs_abc`` names the whole store: its batch id is the store watch's, empty."""
    args = build_parser().parse_args(["watch", "vs_abc", "vs_abc/vsfb_1"])
    assert args.targets == [("vs_abc", ""), ("vs_abc", "vsfb_1")]


def test_check_config_exits_2_without_an_api_key_for_a_remote_api(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """check-config says when no key is found for the real API; with a key, or an API on
    loopback, it prints the configuration and exits 0."""
    assert main(["check-config"], environ={}) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "batch-watcher: api.api_key: no API key in environment variable OPENAI_API_KEY" in err
    assert main(["check-config"], environ={"OPENAI_API_KEY": "sk-test"}) == 0
    local = {"BATCH_WATCHER_API_BASE_URL": "http://127.0.0.1:8321/v1"}
    assert main(["check-config"], environ=local) == 0
    assert 'base_url = "http://127.0.0.1:8321/v1"' in capsys.readouterr().out


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_a_missing_control_token_file_exits_2_naming_the_key(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A control token file that does not exist stops run and check-config with exit 2 naming
    server.control_token_file, instead of leaving the control API without authentication."""
    missing = tmp_path / "token"
    path = tmp_path / "config.toml"
    document = {
        "api": {"base_url": "http://127.0.0.1:9/v1"},
        "server": {"listen": "127.0.0.1:0", "control_token_file": str(missing)},
        "state": {"path": str(tmp_path / "state.sqlite3")},
    }
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    assert main([command, "--config", str(path)], environ={}) == 2
    err = capsys.readouterr().err
    assert f"batch-watcher: server.control_token_file: {str(missing)!r} does not exist" in err
    assert not (tmp_path / "state.sqlite3").exists()


def test_the_engines_processes_collect_young_garbage_less_often() -> None:
    """``run`` and ``watch`` raise the collector's young threshold, keeping the older ones: a
    request's objects then die by reference counting before a collection promotes them (see
    watcher/runtime.py for the figures)."""
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_collector()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    finally:
        gc.set_threshold(*before)
