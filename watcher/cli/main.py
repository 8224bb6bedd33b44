"""The ``batch-watcher`` command line."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio

from .. import __version__
from ..api.client import DEFAULT_BASE_URL, ClientSettings, validate_base_url
from ..config import Config, config_from_mapping, load_config, render_effective
from ..core.policy import PollSettings
from ..core.settings import EngineSettings
from ..credentials import SecretSource
from ..daemon.service import Daemon
from ..errors import ConfigError
from ..logs import LEVELS, configure, register_secret
from .report import ExitStatus
from .watch_command import Target, WatchCommand, run_watch


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not > 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not >= 1")
    return value


def _target(text: str) -> Target:
    vs, sep, batch = text.partition("/")
    if not sep or not vs or not batch or "/" in batch:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not VECTOR_STORE_ID/BATCH_ID (e.g. vs_abc123/vsfb_abc123)"
        )
    for part in (vs, batch):
        if len(part) > 128 or not part.isprintable() or part.strip() != part or part == "..":
            raise argparse.ArgumentTypeError(f"{text!r}: {part!r} is not a valid id")
    return (vs, batch)


def _query(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return (key, value)


def _add_logging(parser: argparse.ArgumentParser, default: str | None = "info") -> None:
    """``default=None``: the configuration file decides unless the flag is given."""
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto" if default else None,
        help="log format on stderr (auto: console on a terminal, JSON otherwise)",
    )
    parser.add_argument("--log-level", choices=LEVELS, default=default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batch-watcher",
        description="Watch OpenAI vector-store file batches until they finish.",
    )
    parser.add_argument("--version", action="version", version=f"batch-watcher {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    watch = sub.add_parser(
        "watch",
        help="watch batches until each ends, then report (for CI)",
        description=(
            "Watch batches until each one ends; print its result; exit 0 if all completed with "
            "no failed file, 1 on failures, 2 on bad usage, 3 if a deadline passed, 4 if the API "
            "refused us (bad key, batch not found). The API key is read from OPENAI_API_KEY, "
            "never from the command line."
        ),
    )
    watch.add_argument("targets", nargs="+", type=_target, metavar="VECTOR_STORE_ID/BATCH_ID")
    watch.add_argument(
        "--base-url", help=f"API base URL (default: $OPENAI_BASE_URL or {DEFAULT_BASE_URL})"
    )
    watch.add_argument("--interval", type=_seconds, default=5.0, help="seconds between polls")
    watch.add_argument("--timeout", type=_seconds, help="deadline per batch, in seconds")
    watch.add_argument(
        "--cancel-on-timeout", action="store_true", help="cancel a batch whose deadline passed"
    )
    watch.add_argument("--output", choices=("text", "json"), default="text")
    watch.add_argument("--auth", choices=("bearer", "azure"), default="bearer")
    watch.add_argument(
        "--query",
        type=_query,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra query parameter on every request (e.g. api-version=2025-04-01-preview)",
    )
    watch.add_argument("--max-requests-per-minute", type=_positive_int, default=600)
    watch.add_argument("--stall-after", type=_seconds, help="flag a batch stalled after this")
    watch.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="live progress bars on stderr (auto: when stderr is a terminal)",
    )
    _add_logging(watch)

    run = sub.add_parser(
        "run",
        help="run the daemon: watch, export metrics, serve the control API",
        description="Run the daemon with a TOML configuration (see config.example.toml).",
    )
    run.add_argument("--config", type=Path, help="the TOML file (default: all defaults)")
    _add_logging(run, default=None)

    check = sub.add_parser(
        "check-config",
        help="validate a configuration and print it as it takes effect (secrets masked)",
    )
    check.add_argument("--config", type=Path, help="the TOML file (default: all defaults)")
    _add_logging(check, default=None)

    demo = sub.add_parser(
        "demo",
        help="run the daemon against the built-in simulator (no key, no network)",
    )
    demo.add_argument("--listen", default="127.0.0.1:9464", help="host:port of the daemon")
    demo.add_argument("--state-dir", type=Path, help="keep the state here (default: a temp dir)")
    _add_logging(demo, default="info")
    return parser


def _watch_command(args: argparse.Namespace, environ: Mapping[str, str]) -> WatchCommand:
    base_url = args.base_url or environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    # Name where the bad value came from: a user who never typed --base-url looks for it in vain.
    origin = "--base-url" if args.base_url else "OPENAI_BASE_URL"
    try:
        base_url = validate_base_url(base_url)
    except ValueError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    key = SecretSource(env="OPENAI_API_KEY", environ=environ)
    register_secret(key)
    client = ClientSettings(
        base_url=base_url,
        api_key=key,
        organization=environ.get("OPENAI_ORG_ID") or None,
        project=environ.get("OPENAI_PROJECT_ID") or None,
        auth=args.auth,
        query=dict(args.query),
    )
    interval = args.interval
    engine = EngineSettings(
        poll=PollSettings(
            interval=interval,
            min_interval=min(0.5, interval),
            max_interval=max(300.0, interval),
        ),
        max_requests_per_minute=args.max_requests_per_minute,
        stall_after_seconds=args.stall_after,
        deadline_seconds=args.timeout,
        cancel_on_timeout=args.cancel_on_timeout,
    )
    progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    return WatchCommand(
        targets=args.targets, client=client, engine=engine, output=args.output, progress=progress
    )


def _watch(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    return int(anyio.run(run_watch, _watch_command(args, environ)))


def _load(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    if args.config is None:
        config = config_from_mapping({}, environ)
    else:
        config = load_config(args.config, environ)
    configure(args.log_format or config.log.format, args.log_level or config.log.level)
    return config


def _run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    daemon = Daemon(_load(args, environ))
    return anyio.run(daemon.serve)


def _check_config(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    print(render_effective(_load(args, environ)), end="")
    return 0


def _demo(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from .demo_command import main as demo_main

    return demo_main(args.listen, args.state_dir, environ)


COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    "watch": _watch,
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
