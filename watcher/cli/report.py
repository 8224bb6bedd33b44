"""How finished watches are told to a person or a pipeline, and what the exit status is."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..core.results import BatchResult, FileName
from ..core.states import State
from ..core.wording import duration_text

#: Endings in which the API refused us, whatever the batch did.
_REFUSED = frozenset({State.NOT_FOUND, State.REJECTED, State.AUTH_FAILED})


class ExitStatus(IntEnum):
    """The ``watch`` command's exit status, most serious last."""

    OK = 0  # every batch completed with no failed file
    FAILURES = 1  # a batch ended failed or cancelled, or has failed files
    USAGE = 2  # bad command line or configuration
    DEADLINE = 3  # a deadline passed first
    REFUSED = 4  # the API refused us: bad key, batch not found, request rejected


def exit_status(results: Iterable[BatchResult]) -> ExitStatus:
    """The most serious outcome wins: refused, then deadline, then failures."""
    worst = ExitStatus.OK
    for result in results:
        if result.status in _REFUSED:
            status = ExitStatus.REFUSED
        elif result.status == State.TIMED_OUT:
            status = ExitStatus.DEADLINE
        elif not result.clean:
            status = ExitStatus.FAILURES
        else:
            status = ExitStatus.OK
        worst = max(worst, status, key=_rank)
    return worst


def _rank(status: ExitStatus) -> int:
    return {ExitStatus.OK: 0, ExitStatus.FAILURES: 1, ExitStatus.DEADLINE: 2}.get(status, 3)


def json_line(result: BatchResult) -> str:
    return json.dumps(result.as_dict(), separators=(",", ":"), ensure_ascii=False)


def write_text_summary(results: Sequence[BatchResult], out: TextIO) -> None:
    """A readable summary per batch, then one table of every failed file kept."""
    # Piped output (CI logs) has no width to learn; ids must never be broken across lines.
    width = None if out.isatty() else 200
    # Server text is never markup: no ``[link=…]`` tags (markup=False below), no ``:emoji:`` codes.
    console = Console(file=out, highlight=False, emoji=False, soft_wrap=True, width=width)
    for r in results:
        counts = r.file_counts
        target = f"{r.vector_store_id}/{r.batch_id}" if r.batch_id else r.vector_store_id
        line = f"{target}: {r.status}"
        if counts is not None:
            line += (
                f" — {counts.completed} completed, {counts.failed} failed, "
                f"{counts.cancelled} cancelled, {counts.in_progress} in progress "
                f"of {counts.total}"
            )
        # The watch's time, from its first answer to the end: not how long the batch took.
        line += f" (watched for {duration_text(r.elapsed_seconds)})"
        console.print(line, markup=False)
        if r.failed_by_code:
            codes = ", ".join(f"{code}: {n}" for code, n in sorted(r.failed_by_code.items()))
            console.print(f"  failed files by code: {codes}", markup=False)
        if r.failed_files_truncated:
            console.print(
                f"  listed {r.failed_files_listed} failed files; "
                f"the table shows the first {len(r.failed_files)}",
                markup=False,
            )
        if r.note:
            console.print(f"  note: {r.note}", markup=False)
        if r.stuck_files:
            quiet = duration_text(max(f.stalled_seconds for f in r.stuck_files))
            console.print(
                f"  {len(r.stuck_files)} files still in progress, no progress for {quiet}:",
                markup=False,
            )
            for s in r.stuck_files:
                console.print(f"    {s.id} ({file_name_text(s.name)})", markup=False)
    rows = [(r, f) for r in results for f in r.failed_files]
    if not rows:
        return
    table = Table(title="Failed files", show_lines=False)
    for column in ("vector store", "batch", "file", "name", "code"):
        table.add_column(column, no_wrap=True)
    table.add_column("message", overflow="fold")
    for r, f in rows:
        code = f.last_error.code if f.last_error else "unknown"
        message = f.last_error.message if f.last_error else ""
        table.add_row(
            Text(r.vector_store_id),
            Text(r.batch_id),
            Text(f.id),
            Text(file_name_text(f.name)),
            Text(code),
            Text(message),
        )
    console.print(table)


def file_name_text(name: FileName) -> str:
    """A file's name as a person reads it; a name that could not be looked up says so."""
    if name.filename is not None:
        return name.filename
    return "name unknown" if name.error is None else "name unknown: " + name.error[:80]
