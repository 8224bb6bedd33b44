"""``python -m bench.adaptive.loopback``: the virtual-time model checked against the real engine.

The same batches twice: watched by the real :class:`~watcher.core.engine.Engine` over loopback
HTTP against the real simulator on the wall clock (adaptive and fixed polling side by side,
each on its own copy of the batches), and by the discrete-event model of
:mod:`.simulation`. Short batches (20–90 s by default) keep it to about two minutes; the
figures of the two should agree but for the request's own time and timer jitter.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

import anyio

from watcher.api.settings import ClientSettings
from watcher.core.engine import Engine
from watcher.core.policy import PollSettings
from watcher.core.settings import EngineSettings
from watcher.simulator import Simulator, serve_simulator

from .report import _table
from .simulation import Batches, Figures, figures, percentile, pollers, run_alone


async def _engine_run(batches: Batches, adaptive: bool, interval: float) -> Figures:
    """Every batch watched by one engine, from the moment it is added to the simulator."""
    prefix = "adaptive" if adaptive else "fixed"
    specs = [
        dataclasses.replace(spec, batch_id=f"{prefix}_{spec.batch_id}")
        for _, spec in batches.specs()
    ]
    sim = Simulator()
    poll = PollSettings(interval=interval, slow_down=False, adaptive=adaptive)
    settings = EngineSettings(poll=poll, max_requests_per_minute=60_000, stall_after_seconds=None)
    async with serve_simulator(sim) as base_url, anyio.create_task_group() as tg:
        engine = Engine.create(ClientSettings(base_url=base_url, timeout_seconds=10.0), settings)
        await tg.start(engine.run)
        sim.add_batches(specs)
        for spec in specs:
            engine.add(spec.vector_store_id, spec.batch_id)
        await engine.wait_idle()
        tg.cancel_scope.cancel()
    latencies = sorted(
        truth["seen_terminal_at"] - truth["terminal_at"]
        for truth in (sim.truth(spec.batch_id, failed_files=False) for spec in specs)
    )
    retrieves = sum(sim.stats.requests_for(spec.batch_id, "retrieve") for spec in specs)
    name = f"engine over loopback, {'adaptive' if adaptive else f'fixed {interval:g} s'}"
    return Figures(
        name,
        len(specs),
        retrieves,
        percentile(latencies, 0.5),
        percentile(latencies, 0.9),
        percentile(latencies, 0.99),
        latencies[-1],
    )


async def _both(batches: Batches, interval: float) -> list[Figures]:
    results: dict[bool, Figures] = {}

    async def one(adaptive: bool) -> None:
        results[adaptive] = await _engine_run(batches, adaptive, interval)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, True)
        tg.start_soon(one, False)
    return [results[True], results[False]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.adaptive.loopback", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-duration", type=float, default=20.0)
    parser.add_argument("--max-duration", type=float, default=90.0)
    args = parser.parse_args(argv)
    batches = Batches(
        args.batches,
        seed=args.seed,
        min_duration=args.min_duration,
        max_duration=args.max_duration,
    )
    real = anyio.run(_both, batches, args.interval)
    model = [
        figures(f"virtual-time model, {name}", run_alone(batches, poller))
        for name, poller in list(pollers(args.interval).items())[:2]  # adaptive, fixed
    ]
    print(batches.describe())
    print("\n".join(_table([real[0], model[0], real[1], model[1]])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
