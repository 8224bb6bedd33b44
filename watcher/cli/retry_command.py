"""The ``batch-watcher retry`` command: send a batch's failed files again, as new batches.

It lists the batch's failed files (only those of some error codes, if asked), reads each one's
attributes and chunking strategy from its vector store, and creates new batches of at most
2,000 files, printing one line per new batch; ``--dry-run`` prints what it would send instead,
and ``--watch`` then watches the new batches as ``watch`` does.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, replace
from typing import Any, Literal, TextIO

from ..api.budget import RequestBudget
from ..api.client import APIClient
from ..core.retry import (
    RetryFile,
    create_retry_batch,
    failed_file_ids,
    idempotency_key,
    read_files,
    split,
)
from ..errors import APIError, AuthError, NotFound
from .report import ExitStatus
from .watch_command import Target, WatchCommand, run_watch


@dataclass(frozen=True, slots=True)
class RetryCommand:
    target: Target
    #: The ``watch`` settings (client, engine, output); its targets are the new batches.
    watch: WatchCommand
    codes: tuple[str, ...] = ()
    dry_run: bool = False
    then_watch: bool = False

    @property
    def output(self) -> Literal["text", "json"]:
        return self.watch.output


async def run_retry(command: RetryCommand, out: TextIO = sys.stdout) -> ExitStatus:
    vs, batch = command.target
    settings = command.watch.engine
    budget = RequestBudget(
        settings.max_requests_per_minute,
        settings.max_concurrency,
        max_pause=settings.poll.max_interval,
    )
    # One invocation is one attempt: its requests, sent again, make no second batch.
    attempt = uuid.uuid4().hex
    made: list[str] = []
    async with APIClient(command.watch.client, budget=budget) as client:
        try:
            ids = await failed_file_ids(
                client, vs, batch, codes=command.codes, max_pages=settings.max_file_pages
            )
            if not ids:
                if command.output == "text":
                    wanted = f" with code {', '.join(command.codes)}" if command.codes else ""
                    out.write(f"{vs}/{batch}: no failed files{wanted} to retry\n")
                return ExitStatus.OK
            for part, chunk in enumerate(split(ids)):
                files = [f async for f in read_files(client, vs, chunk)]
                if command.dry_run:
                    _write_plan(command, files, out)
                    continue
                key = idempotency_key(vs, batch, attempt, part)
                created = await create_retry_batch(client, vs, files, key=key)
                made.append(created.id)
                _write_made(command, created.id, files, out)
        except APIError as exc:
            out.flush()
            print(f"batch-watcher: retrying {vs}/{batch} failed: {exc}", file=sys.stderr)
            refused = isinstance(exc, AuthError | NotFound) or type(exc) is APIError
            return ExitStatus.REFUSED if refused else ExitStatus.FAILURES
    out.flush()
    if command.then_watch and made:
        return await run_watch(replace(command.watch, targets=[(vs, b) for b in made]), out)
    return ExitStatus.OK


def _write_made(command: RetryCommand, batch_id: str, files: list[RetryFile], out: TextIO) -> None:
    vs, batch = command.target
    if command.output == "json":
        line = {
            "vector_store_id": vs,
            "batch_id": batch_id,
            "retry_of": batch,
            "files": [f.file_id for f in files],
        }
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
    else:
        out.write(f"{vs}/{batch_id}: retries {len(files)} failed files of {vs}/{batch}\n")
    out.flush()


def _write_plan(command: RetryCommand, files: list[RetryFile], out: TextIO) -> None:
    vs, batch = command.target
    request: dict[str, Any] = {"files": [f.as_request() for f in files]}
    if command.output == "json":
        line = {
            "vector_store_id": vs,
            "batch_id": None,
            "retry_of": batch,
            "dry_run": True,
            "request": request,
        }
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
        return
    out.write(
        f"would create a batch of {len(files)} files in {vs} (a retry of {batch}): "
        f"POST /vector_stores/{vs}/file_batches\n"
    )
    for f in files:
        detach = "" if f.attached else " (no longer in the store: sent without attributes)"
        out.write(f"  {json.dumps(f.as_request(), separators=(',', ':'))}{detach}\n")
