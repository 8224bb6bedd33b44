"""``batch-watcher demo``: the daemon against the built-in simulator. No key, no network.

The simulator serves a handful of batches (clean, failed files over several pages, failed,
cancelled, slow with a stall, flaky) on a loopback port; the daemon watches them exactly as it
would watch OpenAI, and serves its status page and metrics until Ctrl-C.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import anyio

from ..config import config_from_mapping
from ..daemon.service import Daemon
from ..simulator import Simulator, demo_scenario, serve_simulator


def demo_config(base_url: str, listen: str, state_path: Path) -> Mapping[str, object]:
    specs = demo_scenario()
    return {
        "api": {"base_url": base_url, "max_concurrency": 4},
        "poll": {"interval_seconds": 1.0, "stall_after_seconds": 20.0},
        "server": {"listen": listen},
        "state": {"path": str(state_path)},
        "watch": [
            {
                "vector_store_id": spec.vector_store_id,
                "batch_id": spec.batch_id,
                "labels": {"scenario": spec.batch_id.removeprefix("vsfb_demo_")},
            }
            for spec in specs
        ],
    }


async def run_demo(listen: str, state_dir: Path | None, environ: Mapping[str, str]) -> int:
    sim = Simulator(demo_scenario())
    with tempfile.TemporaryDirectory(prefix="batch-watcher-demo-") as tmp:
        state_path = (state_dir or Path(tmp)) / "demo-state.sqlite3"
        async with serve_simulator(sim) as base_url:
            # The demo's simulator needs no key; an OPENAI_API_KEY in the environment stays unused.
            env = {k: v for k, v in environ.items() if not k.startswith("BATCH_WATCHER_")}
            env.pop("OPENAI_API_KEY", None)
            config = config_from_mapping(demo_config(base_url, listen, state_path), env)

            def banner(listen: str) -> None:
                print(
                    f"batch-watcher demo: simulator at {base_url}\n"
                    f"  status page  http://{listen}/\n"
                    f"  metrics      http://{listen}/metrics\n"
                    f"  watches      http://{listen}/v1/watches\n"
                    "Ctrl-C to stop.",
                    file=sys.stderr,
                    flush=True,
                )

            daemon = Daemon(config, on_listening=banner)
            return await daemon.serve()


def main(listen: str, state_dir: Path | None, environ: Mapping[str, str]) -> int:
    return anyio.run(run_demo, listen, state_dir, environ)
