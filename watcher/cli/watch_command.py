"""The one-shot ``batch-watcher watch`` command: watch some batches until each ends, then report.
A target with an empty batch id (``watch vs_abc``) is a whole vector store, watched until no file
of it is in progress.

Meant for CI pipelines: one JSON line per batch as it ends (``--output json``) or a readable
summary (``--output text``), and an exit status a pipeline can branch on.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

import anyio

from ..api.settings import ClientSettings
from ..core.engine import Engine
from ..core.events import AuthFailed, BatchFinished, Event, StoreFinished
from ..core.results import BatchResult
from ..core.settings import EngineSettings
from ..core.states import State
from ..core.watch import STORE, Watch
from ..logs import log_event
from .progress import ProgressDisplay
from .report import ExitStatus, exit_status, json_line, write_text_summary

Target = tuple[str, str]


@dataclass(frozen=True, slots=True)
class WatchCommand:
    targets: Sequence[Target]
    client: ClientSettings
    engine: EngineSettings
    output: Literal["text", "json"] = "text"
    progress: bool = False


async def run_watch(command: WatchCommand, out: TextIO = sys.stdout) -> ExitStatus:
    results: dict[Target, BatchResult] = {}
    refused: list[AuthFailed] = []

    def collect(event: Event) -> None:
        if isinstance(event, BatchFinished | StoreFinished):
            results[(event.vector_store_id, event.batch_id)] = event.result
            if command.output == "json":
                line = json_line(event.result)
                if display is not None and display.live and out.isatty():
                    # Bars and stdout share the terminal: a line written past the display lands
                    # in the bars' rows, and their next redraw erases it.
                    display.print_above(line)
                else:
                    out.write(line + "\n")
                    out.flush()
        elif isinstance(event, AuthFailed):
            refused.append(event)
            scope.cancel()

    display = ProgressDisplay() if command.progress else None
    sinks = [log_event, collect] + ([display] if display is not None else [])
    engine = Engine.create(command.client, command.engine, sinks=sinks)
    with display if display is not None else contextlib.nullcontext():
        async with anyio.create_task_group() as tg:
            scope = tg.cancel_scope
            await tg.start(engine.run)
            for vs, batch in dict.fromkeys(command.targets):
                engine.add(vs, batch, until_idle=batch == STORE)
            await engine.wait_idle()
            tg.cancel_scope.cancel()
    if refused:
        # The credentials were refused: no batch can be watched, and each one says so.
        for target in dict.fromkeys(command.targets):
            if target in results:
                continue
            watch = engine.get(*target)
            result = _refused_result(watch, target, refused[0])
            results[target] = result
            if command.output == "json":
                out.write(json_line(result) + "\n")
    if command.output == "text":
        write_text_summary([results[t] for t in dict.fromkeys(command.targets)], out)
    out.flush()
    return exit_status(results.values())


def _refused_result(watch: Watch | None, target: Target, error: AuthFailed) -> BatchResult:
    return BatchResult(
        vector_store_id=target[0],
        batch_id=target[1],
        status=State.AUTH_FAILED,
        file_counts=watch.file_counts if watch else None,
        failed_files=(),
        failed_by_code={},
        failed_files_listed=0,
        failed_files_truncated=False,
        failed_files_complete=False,
        elapsed_seconds=0.0,
        finished_at=time.time(),
        note=error.message,
    )
