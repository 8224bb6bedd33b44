"""The ``batch-watcher`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import anyio
from pydantic.fields import FieldInfo

from .. import __version__
from ..config import (
    DEFAULTS,
    SECTIONS,
    AuthStyle,
    Config,
    LogConfig,
    LogFormat,
    LogLevel,
    PollConfig,
    ServerConfig,
    config_from_mapping,
    field_value,
    load_config,
    render_effective,
    require_api_key,
)
from ..config.settings import client_settings, engine_settings
from ..config.values import check_id
from ..daemon.service import Daemon
from ..errors import ConfigError
from ..logs import configure, register_secret
from ..runtime import tune_collector
from .report import ExitStatus
from .retry_command import RetryCommand, run_retry
from .watch_command import Target, WatchCommand, run_watch


@dataclass(frozen=True, slots=True)
class _Setting:
    """A ``watch`` option that sets one configuration key: its default and help are the key's."""

    flag: str
    section: str
    key: str
    metavar: str | None = "SECONDS"
    default: str | None = None  # when the command's default is not the configuration's

    @property
    def field(self) -> FieldInfo:
        return SECTIONS[self.section].model_fields[self.key]

    def help(self) -> str:
        default = self.default or _shown(self.field.default)
        return f"{self.field.description} (default: {default})"

    def parse(self, text: str) -> object:
        try:
            return field_value(self.section, self.key, text)
        except ValueError as reason:
            raise argparse.ArgumentTypeError(f"{text!r} {reason}") from None


_BASE_URL = _Setting("--base-url", "api", "base_url", "URL")
_INTERVAL = _Setting("--interval", "poll", "interval_seconds")
# ``watch`` runs in pipelines, where a stalled flag would only be noise unless asked for.
_STALL_AFTER = _Setting("--stall-after", "poll", "stall_after_seconds", default="0")
_WATCH_SETTINGS = (
    _BASE_URL,
    _INTERVAL,
    _Setting("--timeout", "poll", "deadline_seconds"),
    _STALL_AFTER,
    _Setting("--request-timeout", "api", "timeout_seconds"),
    _Setting("--max-requests-per-minute", "api", "max_requests_per_minute", "N"),
    _Setting("--auth", "api", "auth", None),
)


def _shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _target(text: str) -> Target:
    """``VS/BATCH`` for a batch, or a bare ``VS`` for the whole vector store."""
    vs, sep, batch = text.partition("/")
    if "/" in batch:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not VECTOR_STORE_ID/BATCH_ID or VECTOR_STORE_ID "
            "(e.g. vs_abc123/vsfb_abc123, or vs_abc123 for the whole store)"
        )
    for part in (vs, batch) if sep else (vs,):
        try:
            check_id(part)
        except ValueError as reason:
            raise argparse.ArgumentTypeError(f"{text!r}: {part!r} {reason}") from None
    return (vs, batch)


def _batch_target(text: str) -> Target:
    """``VS/BATCH``: one batch (``retry`` has no use for a whole store)."""
    vs, batch = _target(text)
    if not batch:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not VECTOR_STORE_ID/BATCH_ID (e.g. vs_abc123/vsfb_abc123)"
        )
    return (vs, batch)


def _query(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return (key, value)


def _add_logging(parser: argparse.ArgumentParser, *, from_config: bool = False) -> None:
    """``from_config``: the configuration file decides unless the flag is given."""
    fields = LogConfig.model_fields
    for name, choices in (("format", get_args(LogFormat)), ("level", get_args(LogLevel))):
        field = fields[name]
        default = "the configuration's" if from_config else _shown(field.default)
        parser.add_argument(
            f"--log-{name}",
            choices=choices,
            default=None if from_config else field.default,
            help=f"{field.description} (default: {default})",
        )


def _add_watch(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    watch = sub.add_parser(
        "watch",
        help="watch batches until each ends, then report (for CI)",
        description=(
            "Watch batches until each one ends (a bare VECTOR_STORE_ID: until no file of the "
            "store is in progress; its failed files are the store's); print its result; exit 0 "
            "if all completed with no failed file, 1 on failures, 2 on bad usage, 3 if a "
            "deadline passed, 4 if the API refused us (bad key, batch not found). The API key is "
            "read from OPENAI_API_KEY, never from the command line; OPENAI_ORG_ID and "
            "OPENAI_PROJECT_ID are sent if set."
        ),
    )
    watch.add_argument("targets", nargs="+", type=_target, metavar="VECTOR_STORE_ID[/BATCH_ID]")
    _add_watch_options(watch)


def _add_watch_options(watch: argparse.ArgumentParser) -> None:
    for setting in _WATCH_SETTINGS:
        options: dict[str, Any] = {"metavar": setting.metavar} if setting.metavar else {}
        if setting.key == "auth":
            options["choices"] = get_args(AuthStyle)
        help_text = setting.help()
        if setting is _BASE_URL:
            default = f"$OPENAI_BASE_URL or {DEFAULTS.api.base_url}"
            help_text = f"{setting.field.description} (default: {default})"
        watch.add_argument(setting.flag, type=setting.parse, help=help_text, **options)
    watch.add_argument(
        "--cancel-on-timeout",
        action="store_true",
        help=f"{PollConfig.model_fields['cancel_on_timeout'].description} (with --timeout)",
    )
    watch.add_argument(
        "--query",
        type=_query,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra query parameter on every request, repeatable, e.g. "
        "api-version=2025-04-01-preview (default: none)",
    )
    watch.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="text: a summary and the failed files once all end; json: one JSON line per batch "
        "as it ends (default: text)",
    )
    watch.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="live progress bars on stderr; auto: when stderr is a terminal (default: auto)",
    )
    _add_logging(watch)


def _add_retry(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    retry = sub.add_parser(
        "retry",
        help="send a batch's failed files again as new batches",
        description=(
            "List the batch's failed files (only those whose last_error.code is one of --code, "
            "if given), read each one's attributes and chunking strategy from its vector store, "
            "and create new batches of them (at most 2,000 files each), detaching a file the "
            "API says is still attached. Prints one line per new batch; --watch then watches "
            "them as `watch` does, with its exit statuses. Exit 4 if the API refused us."
        ),
    )
    retry.add_argument("target", type=_batch_target, metavar="VECTOR_STORE_ID/BATCH_ID")
    retry.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="CODE",
        help="only the failed files with this last_error.code, repeatable (default: all)",
    )
    retry.add_argument(
        "--dry-run", action="store_true", help="print the requests it would send; send none"
    )
    retry.add_argument(
        "--watch", action="store_true", help="then watch the new batches until each ends"
    )
    _add_watch_options(retry)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batch-watcher",
        description="Watch OpenAI vector-store file batches until they finish.",
    )
    parser.add_argument("--version", action="version", version=f"batch-watcher {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_watch(sub)
    _add_retry(sub)

    run = sub.add_parser(
        "run",
        help="run the daemon: watch, export metrics, serve the control API",
        description="Run the daemon with a TOML configuration (see config.example.toml).",
    )
    run.add_argument("--config", type=Path, help="the TOML file (default: all defaults)")
    _add_logging(run, from_config=True)

    check = sub.add_parser(
        "check-config",
        help="validate a configuration and print it as it takes effect (secrets masked)",
        description=(
            "Validate a configuration and print it as it takes effect, secrets by source only. "
            "Exit 2 on any problem, or when no API key is found for an API that is not on "
            "this machine."
        ),
    )
    check.add_argument("--config", type=Path, help="the TOML file (default: all defaults)")
    _add_logging(check, from_config=True)

    listen = ServerConfig.model_fields["listen"]
    demo = sub.add_parser(
        "demo",
        help="run the daemon against the built-in simulator (no key, no network)",
        description=(
            "Start the built-in simulator with a handful of batches (clean, failed files over "
            "several pages, failed, cancelled, stalled, flaky) and run the daemon against it: "
            "its status page, metrics and control API are served until Ctrl-C. Needs no API "
            "key and no network."
        ),
    )
    demo.add_argument(
        "--listen",
        type=_Setting("--listen", "server", "listen", "HOST:PORT").parse,
        default=listen.default,
        metavar="HOST:PORT",
        help=f"{listen.description} (default: {listen.default})",
    )
    demo.add_argument("--state-dir", type=Path, help="keep the state here (default: a temp dir)")
    _add_logging(demo)
    return parser


def _from_environ(environ: Mapping[str, str], variable: str, section: str, key: str) -> object:
    """A key's value from a variable the ``watch`` command honours, checked by the key's rule."""
    text = environ[variable]
    try:
        return field_value(section, key, text)
    except ValueError as reason:
        raise ConfigError(f"{variable}: {text!r} {reason}") from None


def _watch_command(args: argparse.Namespace, environ: Mapping[str, str]) -> WatchCommand:
    api: dict[str, object] = {"query": dict(args.query)}
    poll: dict[str, object] = {
        "stall_after_seconds": 0.0 if args.stall_after is None else args.stall_after,
        "cancel_on_timeout": args.cancel_on_timeout,
    }
    for variable, key in (
        ("OPENAI_BASE_URL", "base_url"),
        ("OPENAI_ORG_ID", "organization"),
        ("OPENAI_PROJECT_ID", "project"),
    ):
        if environ.get(variable):
            api[key] = _from_environ(environ, variable, "api", key)
    for setting in _WATCH_SETTINGS:
        value = getattr(args, setting.flag.removeprefix("--").replace("-", "_"))
        if value is not None and setting is not _STALL_AFTER:
            (api if setting.section == "api" else poll)[setting.key] = value
    if args.interval is not None:
        # The interval asked for wins over the default bounds around it.
        poll["min_interval_seconds"] = min(DEFAULTS.poll.min_interval_seconds, args.interval)
        poll["max_interval_seconds"] = max(DEFAULTS.poll.max_interval_seconds, args.interval)
    # Only the API key comes from the environment: no BATCH_WATCHER_* override applies here.
    secrets_only = {k: v for k, v in environ.items() if k == DEFAULTS.api.api_key_env}
    config = config_from_mapping({"api": api, "poll": poll}, secrets_only)
    register_secret(config.api.api_key)
    progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    return WatchCommand(
        targets=getattr(args, "targets", ()),
        client=client_settings(config),
        engine=engine_settings(config),
        output=args.output,
        progress=progress,
    )


def _watch(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    command = _watch_command(args, environ)
    tune_collector()
    return int(anyio.run(run_watch, command))


def _retry(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    command = RetryCommand(
        target=args.target,
        watch=_watch_command(args, environ),
        codes=tuple(dict.fromkeys(args.code)),
        dry_run=args.dry_run,
        then_watch=args.watch,
    )
    return int(anyio.run(run_retry, command))


def _load(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    if args.config is None:
        config = config_from_mapping({}, environ)
    else:
        config = load_config(args.config, environ)
    configure(args.log_format or config.log.format, args.log_level or config.log.level)
    return config


def _run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    daemon = Daemon(_load(args, environ))
    tune_collector()
    return anyio.run(daemon.serve)


def _check_config(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = _load(args, environ)
    require_api_key(config)
    print(render_effective(config), end="")
    return 0


def _demo(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from .demo_command import main as demo_main

    return demo_main(args.listen, args.state_dir, environ)


COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    "watch": _watch,
    "retry": _retry,
    "run": _run,
    "check-config": _check_config,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.log_level is not None:
            configure(args.log_format, args.log_level)
        return COMMANDS[args.command](args, environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"batch-watcher: {problem}", file=sys.stderr)
        return ExitStatus.USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
