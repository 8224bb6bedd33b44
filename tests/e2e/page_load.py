"""Clients that reload pages as fast as they can, in a process of their own (so that their work
never delays the test's own measurements). Bounded in time and in requests; loopback only.

    python tests/e2e/page_load.py http://127.0.0.1:PORT --clients 16 --seconds 15 / /?page=2

Prints ``loading`` once every client has had its first answer, then one JSON object: requests
made, by status, and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx


async def hammer(
    base: str, paths: list[str], clients: int, seconds: float, max_requests: int
) -> dict[str, object]:
    host = urlsplit(base).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"page_load only loads loopback servers, not {host}")
    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    made = 0
    answered = 0  # clients that have had their first answer

    async def client(index: int) -> None:
        nonlocal made, answered
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            turn = index
            while time.monotonic() < deadline and made < max_requests:
                made += 1
                path = paths[turn % len(paths)]
                turn += 1
                try:
                    response = await http.get(path)
                    statuses[str(response.status_code)] += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                if turn == index + 1:
                    answered += 1
                    if answered == clients:
                        print("loading", flush=True)

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return {
        "requests": made,
        "seconds": round(time.monotonic() - started, 2),
        "statuses": dict(statuses),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    args = parser.parse_args()
    result = asyncio.run(
        hammer(args.base, args.paths, args.clients, args.seconds, args.max_requests)
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
