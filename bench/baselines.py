"""The two baselines the watcher is measured against, each run as its own process.

``raw``: a minimal ``httpx.AsyncClient`` loop: GET the batch, read the JSON. The floor for any
httpx-based client. ``sdk``: the official ``openai`` SDK's
``AsyncOpenAI().vector_stores.file_batches.retrieve``, what users write today.

Both cycle through the batches with ``--concurrency`` requests in flight at most and start one
request every ``1 / --rate`` seconds, the way the watcher's request budget spaces its requests.
The process prints ``ready`` once the client exists, then polls until SIGTERM or SIGINT.

    python -m bench.baselines raw --base-url URL --vector-store-id VS --ids-file F --rate 200
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

Fetch = Callable[[str], Awaitable[object]]


class Pacer:
    """One turn every ``spacing`` seconds, shared by every worker."""

    def __init__(self, rate: float) -> None:
        self.spacing = 1.0 / rate
        self._next = float("-inf")
        self._lock = asyncio.Lock()

    async def turn(self) -> None:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            start = max(now, self._next)
            self._next = start + self.spacing
            if start > now:
                await asyncio.sleep(start - now)


async def _worker(pacer: Pacer, ids: Iterator[str], fetch: Fetch) -> None:
    while True:
        await pacer.turn()
        try:
            await fetch(next(ids))
        except Exception as exc:  # a failed request is counted by the server; keep going
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)


async def _run_raw(args: argparse.Namespace, ids: Iterator[str]) -> None:
    import importlib

    # httpx2 (pydantic's fork, which the openai SDK uses) has the same API.
    httpx = importlib.import_module("httpx2" if args.kind == "raw-httpx2" else "httpx")

    headers = {
        "Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', '')}",
        "OpenAI-Beta": "assistants=v2",
    }
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers, limits=limits) as client:
        prefix = f"/vector_stores/{args.vector_store_id}/file_batches/"

        async def fetch(batch_id: str) -> object:
            response = await client.get(prefix + batch_id)
            response.raise_for_status()
            return response.json()

        await _serve(args, ids, fetch)


async def _run_sdk(args: argparse.Namespace, ids: Iterator[str]) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=args.base_url) as client:
        retrieve = client.vector_stores.file_batches.retrieve

        async def fetch(batch_id: str) -> object:
            return await retrieve(batch_id, vector_store_id=args.vector_store_id)

        await _serve(args, ids, fetch)


async def _serve(args: argparse.Namespace, ids: Iterator[str], fetch: Fetch) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    pacer = Pacer(args.rate)
    workers = [asyncio.create_task(_worker(pacer, ids, fetch)) for _ in range(args.concurrency)]
    print("ready", flush=True)
    await stop.wait()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    parser.add_argument("kind", choices=("raw", "raw-httpx2", "sdk"))
    parser.add_argument("--base-url", required=True, help="the API's base URL, ending in /v1")
    parser.add_argument("--vector-store-id", required=True)
    parser.add_argument("--ids-file", type=Path, required=True, help="batch ids, one a line")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    batch_ids = args.ids_file.read_text(encoding="utf-8").split()
    ids = itertools.cycle(batch_ids)
    run = _run_sdk if args.kind == "sdk" else _run_raw
    asyncio.run(run(args, ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
