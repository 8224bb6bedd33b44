"""``python -m bench.adaptive``: adaptive polling against fixed-interval polling and the SDK's
1 s poller, on virtual time; writes its section of ``docs/benchmarks.md``.

    python -m bench.adaptive            # 2,000 batches alone, 10,000 under a budget (seconds)
    python -m bench.adaptive --smoke    # small; prints, checks correctness, writes nothing

Exit status: 0, or 1 when a correctness check failed (a batch never seen ended, or seen ended
before it ended) or, in a full run, a target was missed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..report import machine
from .report import console, missed, write_markdown
from .simulation import SMOKE, Settings, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.adaptive", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="small sizes; writes no docs")
    parser.add_argument("--seed", type=int, default=1, help="seed of the batches (default 1)")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    settings = replace(SMOKE if args.smoke else Settings(), seed=args.seed)
    result = run(settings)
    print(console(result))
    problems = list(result.problems)
    if not args.smoke:
        write_markdown(args.output, result, machine())
        print(f"bench.adaptive: wrote {args.output}", file=sys.stderr)
        problems += [f"target missed: {m}" for m in missed(result)]
    for problem in problems:
        print(f"bench.adaptive: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
