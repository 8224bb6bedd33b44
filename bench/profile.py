"""``python -m bench.profile``: where a client's CPU goes in the steady run, by py-spy.

    python -m bench.profile --n 1000 --seconds 30            # the daemon
    python -m bench.profile --n 1000 --client raw            # the raw httpx baseline

Starts the simulator and the client as in the benchmark's steady run, samples the client with
``py-spy record`` (which must be installed: ``pip install py-spy``), writes the collapsed stacks
(for any flame-graph tool, or https://www.speedscope.app), and prints the share of samples by
package and the hottest functions, by self time and by inclusive time.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .processes import BaselineProcess, DaemonProcess, Process, SimulatorProcess, wait_for
from .scenarios import (
    STEADY_DURATION,
    STEADY_FILES,
    VECTOR_STORE_ID,
    daemon_sections,
    plan_for,
    sim_args,
)

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def _package(path: str) -> str:
    """The package a frame's file belongs to, from the path py-spy shows (``httpx/_client.py``,
    ``asyncio/events.py``; a lone ``selectors.py`` is a module of the standard library)."""
    parts = Path(path).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    if len(parts) > 1 and not Path(path).is_absolute():
        return parts[0]
    return "other (stdlib modules, interpreter)"


def _frame(text: str) -> tuple[str, str]:
    match = _FRAME.match(text)
    if not match:
        return text, ""
    return match["func"], match["file"]


def summarize(collapsed: str, top: int = 30, polls: int = 0) -> str:
    """Shares of samples by package (self time) and the hottest functions; with ``polls``, the
    samples per 1,000 polls too, to compare clients polling at the same rate."""
    total = 0
    self_by_func: Counter[str] = Counter()
    incl_by_func: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        func, path = frames[-1]
        name = f"{func} ({Path(path).name})"
        self_by_func[name] += count
        by_package[_package(path)] += count
        for fname in {f"{f} ({Path(p).name})" for f, p in frames}:
            incl_by_func[fname] += count
    if not total:
        return "no samples"
    out = [f"{total} samples" + (f", {1000 * total / polls:.0f} per 1,000 polls" if polls else "")]
    out += ["", "self time by package" + (" (samples per 1,000 polls):" if polls else ":")]
    out += [
        f"  {n / total:6.1%}  {pkg}" + (f"  ({1000 * n / polls:.0f})" if polls else "")
        for pkg, n in by_package.most_common()
    ]
    out += ["", "hottest functions, self time:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in self_by_func.most_common(top)]
    out += ["", "hottest functions, inclusive time:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in incl_by_func.most_common(top)]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--n", type=int, default=1_000)
    parser.add_argument("--client", choices=("daemon", "raw", "sdk"), default="daemon")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--output", type=Path, default=Path("profile.collapsed"))
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    plan = plan_for(args.n)
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        workdir = Path(tmp)
        sim = SimulatorProcess(
            sim_args(plan, files=STEADY_FILES, duration=STEADY_DURATION, jitter=0)
        )
        client: Process | None = None
        try:
            ids = [b["id"] for b in sim.batches()]
            if args.client == "daemon":
                client = DaemonProcess(
                    workdir,
                    daemon_sections(plan, sim, plan.steady_interval),
                    [(VECTOR_STORE_ID, b) for b in ids],
                )
                wait_for(
                    lambda: sim.stats()["requests"] >= plan.n,
                    plan.n / plan.rate * 3 + 60,
                    "the first sweep",
                )
            else:
                ids_file = workdir / "ids.txt"
                ids_file.write_text("\n".join(ids), encoding="utf-8")
                client = BaselineProcess(
                    args.client,
                    sim.url,
                    VECTOR_STORE_ID,
                    ids_file,
                    plan.rate,
                    plan.concurrency,
                    workdir / "client.log",
                )
            time.sleep(plan.warmup_seconds)
            before = sim.stats()["requests"]
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(client.pid),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    str(args.rate),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(args.output),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            polls = sim.stats()["requests"] - before
        finally:
            if client is not None:
                client.stop()
            sim.stop()
    print(f"collapsed stacks: {args.output}; {polls} polls while sampling")
    print(summarize(args.output.read_text(encoding="utf-8"), polls=polls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
