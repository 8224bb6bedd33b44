"""``python -m watcher.simulator``: the simulator as its own process.

Prints ``listening <base URL>`` as its first line once it accepts connections, then what it
serves (each batch as ``vector_store_id/batch_id``, the first ``LISTED`` of them), then serves
until SIGTERM or SIGINT (exit status 0; a second signal during shutdown ends it at once). The
API key, if any, comes from an environment variable, never from the command line.
``--list-scenarios`` prints the scenarios with what each serves, and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from typing import Final

import anyio

from .batch import UnknownBatch
from .demo import demo_scenario
from .faults import Fault
from .ratelimit import RateLimit
from .scenario import BatchSpec
from .server import serve_simulator
from .simulator import Simulator

#: The scenarios, with what each serves: ``--list-scenarios`` and ``--help`` print these.
SCENARIOS: Final = {
    "demo": "the six batches 'batch-watcher demo' watches, in vector store vs_demo: clean, 130 "
    "failed files over several pages, ending failed, cancelled, slow with a stall (about 3.5 "
    "minutes), and flaky (transient faults); all but the slow one end within 30 s",
    "template": "--batches copies of one batch (--files, --failed-files, --duration, "
    "--final-status) at an even rate, ids <prefix>00000, <prefix>00001, ...: for load tests "
    "and benchmarks",
    "ingestion": "like template, but each batch follows its own seeded ingestion curve (--seed): "
    "rates that change, pauses, and a slow tail of stragglers, as real ingestion goes",
    "empty": "no batches: add them with POST /_sim/batches",
}
#: Batches listed at the start; the rest are counted (``GET /_sim/batches`` lists them all).
LISTED: Final = 20


def scenario_help(indent: str = "") -> str:
    """Each scenario's name, then what it serves, wrapped to 79 columns."""
    return "\n".join(
        f"{indent}{name}\n"
        + textwrap.fill(text, 79, initial_indent=indent + "    ", subsequent_indent=indent + "    ")
        for name, text in SCENARIOS.items()
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m watcher.simulator",
        description="Serve a fake OpenAI vector-store file-batch API on loopback, and list the "
        "batches it serves.",
        epilog="scenarios:\n"
        + scenario_help(indent="  ")
        + "\n\nThe truth about every batch: GET <root>/_sim/batches.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument(
        "--scenario", choices=tuple(SCENARIOS), default="demo", help="what to serve (see below)"
    )
    p.add_argument("--list-scenarios", action="store_true", help="print the scenarios and exit")
    p.add_argument(
        "--clock-from-first-poll",
        action="store_true",
        help="start each batch's clock at the first request for it, not at the start, so that "
        "no batch has ended before a client watches it",
    )
    g = p.add_argument_group("template and ingestion scenarios")
    g.add_argument("--batches", type=int, default=100, help="how many batches (default 100)")
    g.add_argument("--files", type=int, default=100, help="files per batch (default 100)")
    g.add_argument("--failed-files", type=int, default=0, help="failed files per batch")
    g.add_argument("--duration", type=float, default=60.0, help="seconds per batch (default 60)")
    g.add_argument("--start-jitter", type=float, default=0.0, help="spread starts over S seconds")
    g.add_argument("--duration-jitter", type=float, default=0.0, help="scale durations by ±F")
    g.add_argument(
        "--final-status", choices=("completed", "failed", "cancelled"), default="completed"
    )
    g.add_argument("--vector-store-id", default="vs_load")
    g.add_argument("--prefix", default="vsfb_load_", help="batch id prefix")
    p.add_argument("--api-key-env", metavar="VAR", help="require the key held in this variable")
    p.add_argument(
        "--require-query",
        metavar="NAME[=VALUE]",
        action="append",
        default=[],
        help="a query parameter every API request must carry (e.g. api-version)",
    )
    p.add_argument("--poll-after-ms", type=int, help="send openai-poll-after-ms on batch replies")
    p.add_argument("--rate-limit", metavar="N/SECONDS", help="at most N requests per window")
    p.add_argument(
        "--cancel-seconds",
        type=float,
        default=0.5,
        help="how long a cancelled batch stays 'cancelling'",
    )
    p.add_argument(
        "--created-batch-seconds",
        type=float,
        default=2.0,
        help="how long a batch made by POST .../file_batches takes (default 2)",
    )
    p.add_argument(
        "--created-batch-failures",
        type=float,
        default=0.0,
        help="the share of a created batch's files that fail, 0 to 1 (default 0)",
    )
    p.add_argument(
        "--fault",
        metavar="JSON",
        action="append",
        default=[],
        help='arm a fault, e.g. \'{"kind": "server_error", "probability": 0.05}\'',
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed for jitter, fault draws and ingestion curves"
    )
    return p


def build_simulator(args: argparse.Namespace) -> Simulator:
    """The simulator the arguments describe. Raises ``ValueError`` naming the bad argument."""
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ValueError(f"--api-key-env: the variable {args.api_key_env} is empty or unset")
    required = {}
    for item in args.require_query:
        name, sep, value = item.partition("=")
        if not name:
            raise ValueError(f"--require-query: {item!r} has no name")
        required[name] = value if sep else None
    rate_limit = None
    if args.rate_limit:
        requests, _, window = args.rate_limit.partition("/")
        try:
            rate_limit = RateLimit(int(requests), float(window or 60))
        except ValueError as exc:
            raise ValueError(f"--rate-limit: {args.rate_limit!r}: {exc}") from None
    sim = Simulator(
        api_key=api_key,
        required_query=required,
        poll_after_ms=args.poll_after_ms,
        cancel_seconds=args.cancel_seconds,
        rate_limit=rate_limit,
        seed=args.seed,
        clock_from_first_poll=args.clock_from_first_poll,
        created_batch_seconds=args.created_batch_seconds,
        created_batch_failures=args.created_batch_failures,
    )
    if args.scenario == "demo":
        sim.add_batches(demo_scenario())
    elif args.scenario in ("template", "ingestion"):
        template = BatchSpec(
            args.vector_store_id,
            "template",
            total_files=args.files,
            duration_seconds=args.duration,
            failed_files=args.failed_files,
            final_status=args.final_status,
            cancelled_files=args.files // 2 if args.final_status == "cancelled" else 0,
            curve_seed=args.seed * 1_000_003 if args.scenario == "ingestion" else None,
        )
        sim.add_template(
            args.batches,
            template,
            args.prefix,
            start_jitter_seconds=args.start_jitter,
            duration_jitter=args.duration_jitter,
            seed=args.seed,
        )
    for raw in args.fault:
        try:
            fields = json.loads(raw)
        except ValueError:
            raise ValueError(f"--fault: {raw!r} is not JSON") from None
        batch_id = fields.pop("batch_id", None) if isinstance(fields, dict) else None
        try:
            if batch_id is not None:
                sim.batch(batch_id)
            sim.inject(Fault.from_json(fields), batch_id)
        except (ValueError, UnknownBatch) as exc:
            raise ValueError(f"--fault: {raw!r}: {exc}") from None
    return sim


def served(sim: Simulator, url: str, scenario: str) -> list[str]:
    """What the simulator serves, as lines to print: each batch as ``vector_store_id/batch_id``
    (the form ``batch-watcher watch`` takes) with its files and duration, the first ``LISTED``
    of them, and where to find the rest."""
    ids = sim.batch_ids()
    clock = "at each one's first poll" if sim.clock_from_first_poll else "when each is added"
    lines = [f"serving {len(ids):,} batches (scenario {scenario}); their clocks start {clock}"]
    specs = [sim.batch(batch_id).spec for batch_id in ids[:LISTED]]
    targets = [f"{spec.vector_store_id}/{spec.batch_id}" for spec in specs]
    width = max(map(len, targets), default=0)
    for target, spec in zip(targets, specs, strict=True):
        lines.append(
            f"  {target:{width}}  {spec.total_files:,} files, "
            f"ends {spec.final_status} after {spec.finishes_after():g} s"
        )
    root = url.removesuffix("/v1")
    if len(ids) > LISTED:
        lines.append(f"  ... and {len(ids) - LISTED:,} more: GET {root}/_sim/batches")
    elif not ids:
        lines.append(f"  add batches with POST {root}/_sim/batches")
    return lines


async def _serve(sim: Simulator, host: str, port: int, scenario: str) -> None:
    async with serve_simulator(sim, host, port) as url:
        # Signals are ours only until the first one: a second one during shutdown gets the
        # default treatment, and ends the process at once.
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            # "listening" first: scripts read that one line and may read no more (the listing
            # is bounded, so it never fills a pipe nobody reads).
            print(f"listening {url}", flush=True)
            print("\n".join(served(sim, url, scenario)), flush=True)
            async for _ in signals:
                break


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list_scenarios:
        print(scenario_help())
        return 0
    try:
        sim = build_simulator(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        anyio.run(_serve, sim, args.host, args.port, args.scenario)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
