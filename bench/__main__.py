"""``python -m bench``: run the benchmark and write ``docs/benchmarks.md``.

    python -m bench                 # N = 1,000 and 10,000 (about 20 minutes on 2 cores)
    python -m bench --n 1000        # one size
    python -m bench --smoke         # N = 200 in about a minute; checks correctness, not timing

Each run also runs the adaptive-polling benchmark (``python -m bench.adaptive``, virtual time,
seconds), small under ``--smoke``.

Exit status: 0, or 1 when a correctness check failed (a batch never reported ended, a 429 under
the server's limit, more requests in a second than the budget allows).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import adaptive
from .adaptive.report import console as adaptive_console
from .adaptive.report import write_markdown as write_adaptive
from .processes import BenchError
from .report import SizeResult, checks, machine, summary_rows, to_json, write_markdown
from .scenarios import plan_for, run_detection, run_steady

SMOKE_N = 200


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1_000, 10_000], help="sizes")
    parser.add_argument(
        "--smoke", action="store_true", help=f"N = {SMOKE_N}, short; writes no docs"
    )
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--json", type=Path, help="also write every number as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep configs and logs here")
    parser.add_argument("--commit", help="the commit measured (default: asked of git here)")
    args = parser.parse_args(argv)
    sizes = [SMOKE_N] if args.smoke else args.n

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = args.workdir or Path(tmp)
        results = []
        try:
            for n in sizes:
                plan = plan_for(n)
                workdir = root / f"n{n}"
                workdir.mkdir(parents=True, exist_ok=True)
                steady = run_steady(plan, workdir, _say)
                detection = run_detection(plan, workdir, _say)
                results.append(SizeResult(steady, detection))
        except BenchError as exc:
            _say(f"failed: {exc}")
            return 1

    info = machine()
    if args.commit:
        info["commit"] = args.commit
    header = ["", *(f"N={r.plan.n:,}" for r in results), "target"]
    rows = [header, *([what, *values, target] for what, values, target in summary_rows(results))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if args.json:
        args.json.write_text(to_json(results, info), encoding="utf-8")
    polling = adaptive.run(adaptive.SMOKE if args.smoke else adaptive.Settings())
    print(adaptive_console(polling))
    if not args.smoke:
        write_markdown(args.output, results, info)
        write_adaptive(args.output, polling, info)
        _say(f"wrote {args.output}")
    problems = checks(results) + polling.problems
    for problem in problems:
        _say(f"FAILED: {problem}")
    if not problems:
        _say("correctness checks passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
