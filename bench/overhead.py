"""``python -m bench.overhead``: the watcher's own CPU per poll, without the network.

    python -m bench.overhead --n 1000 --polls 20000

Both sides run in this process over the same ``httpx.MockTransport``, which answers at once with
a batch like the simulator's (its counts move on every reply): a raw ``httpx.AsyncClient`` loop
(GET, ``.json()``), and the daemon's engine with everything the daemon hangs on it (metrics,
the JSON log at info level, the SQLite state store). With no socket, no server and no other
process, the difference is the watcher's own work per poll, steady enough to compare one commit
with the next on a busy machine. It also counts the event-loop steps (task wake-ups) per poll.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from asyncio import base_events
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

_steps = 0


def _count_steps() -> None:
    """Count the callbacks (task steps) the asyncio loop runs."""
    original: Callable[[Any], None] = base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]

    def run_once(self: Any) -> None:
        global _steps
        _steps += len(self._ready)
        original(self)

    base_events.BaseEventLoop._run_once = run_once  # type: ignore[attr-defined]


def _handler() -> Callable[[httpx.Request], httpx.Response]:
    """Replies like the simulator's to a retrieve, rate-limit headers included."""
    served = itertools.count()

    def handle(request: httpx.Request) -> httpx.Response:
        done = next(served)
        body = {
            "id": request.url.path.rsplit("/", 1)[1],
            "object": "vector_store.file_batch",
            "created_at": 1795391002,
            "vector_store_id": "vs_bench",
            "status": "in_progress",
            "file_counts": {
                "in_progress": 10**9 - done,
                "completed": done,
                "failed": 0,
                "cancelled": 0,
                "total": 10**9,
            },
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        return httpx.Response(
            200,
            content=raw,
            headers=[
                ("content-type", "application/json"),
                ("content-length", str(len(raw))),
                ("x-request-id", "req_28625d3787f49f508278e32328f00728"),
                ("x-ratelimit-limit-requests", "100000"),
                ("x-ratelimit-remaining-requests", "99000"),
                ("x-ratelimit-reset-requests", "1s"),
            ],
        )

    return handle


def _ids(n: int) -> list[str]:
    return [f"vsfb_bench_{i:05d}" for i in range(n)]


async def raw_loop(n: int, polls: int, concurrency: int) -> tuple[float, float]:
    """CPU seconds and loop steps per poll of a raw httpx loop."""
    transport = httpx.MockTransport(_handler())
    headers = {"Authorization": "Bearer sk-bench", "OpenAI-Beta": "assistants=v2"}
    ids: Iterator[str] = itertools.cycle(_ids(n))
    async with httpx.AsyncClient(
        base_url="http://sim/v1", transport=transport, headers=headers
    ) as client:
        done = 0

        async def worker() -> None:
            nonlocal done
            while done < polls:
                response = await client.get(f"/vector_stores/vs_bench/file_batches/{next(ids)}")
                response.raise_for_status()
                response.json()
                done += 1

        steps, cpu = _steps, time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return (time.process_time() - cpu) / done, (_steps - steps) / done


async def _until(predicate: Callable[[], bool]) -> None:
    # A look at a counter now and then: an event set by an observer would add to every poll.
    while not predicate():  # noqa: ASYNC110
        await anyio.sleep(0.02)


async def watcher_loop(
    n: int, polls: int, concurrency: int, without: frozenset[str] = frozenset()
) -> tuple[float, float]:
    """CPU seconds and loop steps per poll of the daemon's engine, after its first sweep.
    ``without`` leaves parts out, to see what they cost: ``store``, ``log``, ``metrics``."""
    from watcher.config import config_from_mapping
    from watcher.config.settings import client_settings, engine_settings
    from watcher.core.engine import Engine
    from watcher.daemon.service import Daemon
    from watcher.logs import configure, log_event
    from watcher.runtime import tune_collector

    configure("json", "info")
    tune_collector()  # as `run` does
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        config = config_from_mapping(
            {
                "api": {
                    "base_url": "http://sim/v1",
                    "max_requests_per_minute": 10**9,
                    "max_concurrency": concurrency,
                },
                "poll": {
                    "interval_seconds": 0.5,
                    "adaptive": False,
                    "slow_down": False,
                    "stall_after_seconds": 0.0,
                },
                "state": {"path": str(Path(tmp) / "state.sqlite3"), "max_watches": n},
                "watch": [{"vector_store_id": "vs_bench", "batch_id": b} for b in _ids(n)],
            },
            environ={"OPENAI_API_KEY": "sk-bench"},
        )
        daemon = Daemon(config)
        # The daemon's own wiring (see Daemon.__post_init__), over the mock transport.
        sinks = [] if "log" in without else [log_event]
        if "metrics" not in without:
            sinks.append(daemon.metrics.on_event)
        daemon.engine = engine = Engine.create(
            client_settings(config),
            engine_settings(config),
            observer=None if "metrics" in without else daemon.metrics.on_exchange,
            sinks=sinks,
            store=None if "store" in without else daemon.store,
            transport=httpx.MockTransport(_handler()),
        )
        await daemon.restore()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(engine.run)
                tg.start_soon(daemon.store.run)
                await _until(lambda: engine.polls >= n)
                first, steps, cpu = engine.polls, _steps, time.process_time()
                await _until(lambda: engine.polls >= first + polls)
                made = engine.polls - first
                result = (time.process_time() - cpu) / made, (_steps - steps) / made
                tg.cancel_scope.cancel()
        finally:
            await daemon.store.aclose()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__)
    parser.add_argument("--n", type=int, default=1_000, help="watches (default 1000)")
    parser.add_argument("--polls", type=int, default=20_000, help="measured polls per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--without",
        default="",
        help="comma-separated parts of the daemon to leave out: store, log, metrics",
    )
    args = parser.parse_args(argv)
    without = frozenset(filter(None, args.without.split(",")))
    _count_steps()
    raw = [asyncio.run(raw_loop(args.n, args.polls, args.concurrency)) for _ in range(args.repeat)]
    ours = [
        anyio.run(watcher_loop, args.n, args.polls, args.concurrency, without)
        for _ in range(args.repeat)
    ]
    raw_cpu, raw_steps = min(raw)
    our_cpu, our_steps = min(ours)
    print(f"raw httpx loop: {raw_cpu * 1e6:7.1f} µs CPU per poll, {raw_steps:.2f} loop steps")
    label = f"watcher{' without ' + ', '.join(sorted(without)) if without else ''}:"
    print(f"{label:16s}{our_cpu * 1e6:7.1f} µs CPU per poll, {our_steps:.2f} loop steps")
    print(f"watcher - raw:  {(our_cpu - raw_cpu) * 1e6:7.1f} µs per poll")
    print("all runs (µs): raw " + ", ".join(f"{c * 1e6:.0f}" for c, _ in raw), end="; ")
    print("watcher " + ", ".join(f"{c * 1e6:.0f}" for c, _ in ours))
    return 0


if __name__ == "__main__":
    sys.exit(main())
