"""What a simulated batch does over time: the frozen spec, and its progress as pure functions.

A batch's files finish one by one, in index order, over ``duration_seconds`` after
``start_delay_seconds``: at an even rate (optionally pausing for ``stall_seconds`` once
``stall_after_files`` are done), or along a seeded ingestion curve (:mod:`.curves`). Failures
are spread evenly over the processed files, so any prefix of the batch holds its share of them.
Nothing here reads a clock: every function takes ``elapsed``, the seconds since the batch was
added to the simulator (or since its first poll: see :class:`.simulator.Simulator`).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from ..api.models import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, FileCounts, LastError
from .curves import ingestion_curve
from .faults import Fault

FinalStatus = Literal["completed", "failed", "cancelled"]
CANCELLING: Final = "cancelling"

#: The codes the API documents for ``last_error``, with plausible messages.
REAL_ERRORS: Final = (
    LastError("server_error", "The server had an error while processing the file."),
    LastError("unsupported_file", "The file type is not supported for retrieval."),
    LastError("invalid_file", "The file could not be parsed."),
)

# Guards against float rounding in `processed_at` (k * d / P * P / d may land just below k).
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class BatchSpec:
    """Everything the simulator needs to play one batch from start to end."""

    vector_store_id: str
    batch_id: str
    total_files: int
    duration_seconds: float
    start_delay_seconds: float = 0.0
    final_status: FinalStatus = "completed"
    #: Files that end ``failed``, spread evenly over the processed files.
    failed_files: int = 0
    #: Files still unprocessed when a ``cancelled`` batch ends; they end ``cancelled``.
    cancelled_files: int = 0
    #: ``last_error`` of the failed files, in turn.
    errors: tuple[LastError, ...] = REAL_ERRORS
    #: Once this many files are done, progress stops for ``stall_seconds``.
    stall_after_files: int | None = None
    stall_seconds: float = 0.0
    #: ``openai-poll-after-ms`` on this batch's replies; None uses the simulator's setting.
    poll_after_ms: int | None = None
    #: Unix seconds; None means the moment the batch is added.
    created_at: int | None = None
    #: Faults armed for this batch when it is added.
    faults: tuple[Fault, ...] = ()
    #: None: files finish at an even rate. A seed: they follow that ingestion curve, with
    #: changing rates, pauses and a slow tail (:func:`.curves.ingestion_curve`).
    curve_seed: int | None = None

    def __post_init__(self) -> None:
        problems = _spec_problems(self)
        if problems:
            raise ValueError(f"batch {self.batch_id!r}: " + "; ".join(problems))

    @property
    def processable_files(self) -> int:
        """Files that get processed (completed or failed) if nobody cancels the batch."""
        return self.total_files - self.cancelled_files

    @property
    def stalls(self) -> bool:
        return (
            self.stall_after_files is not None and self.stall_after_files < self.processable_files
        )

    def finishes_after(self) -> float:
        """Seconds after the batch was added at which it reaches its final status by itself."""
        stall = self.stall_seconds if self.stalls else 0.0
        return self.start_delay_seconds + self.duration_seconds + stall


def _spec_problems(spec: BatchSpec) -> list[str]:
    problems = [
        f"{name}: {getattr(spec, name)!r} is not an integer"
        for name in ("total_files", "failed_files", "cancelled_files")
        if not _is_int(getattr(spec, name))
    ]
    problems += [
        f"{name}: {getattr(spec, name)!r} is not a number"
        for name in ("duration_seconds", "start_delay_seconds", "stall_seconds")
        if not _is_number(getattr(spec, name))
    ]
    optional_ints = (spec.stall_after_files, spec.poll_after_ms, spec.created_at, spec.curve_seed)
    if not all(_is_int(v) for v in optional_ints if v is not None):
        problems.append(
            "stall_after_files, poll_after_ms, created_at and curve_seed must be integers or null"
        )
    ids: tuple[object, ...] = (spec.vector_store_id, spec.batch_id)  # JSON may hold anything
    if not all(isinstance(i, str) for i in ids):
        problems.append("vector_store_id and batch_id must be strings")
    if problems:
        return problems
    if not spec.vector_store_id or not spec.batch_id:
        problems.append("vector_store_id and batch_id must be non-empty")
    if "/" in spec.batch_id or "/" in spec.vector_store_id:
        problems.append("ids must not contain '/'")
    if spec.total_files < 0:
        problems.append(f"total_files: {spec.total_files} is not >= 0")
    for name in ("duration_seconds", "start_delay_seconds", "stall_seconds"):
        value = getattr(spec, name)
        if not math.isfinite(value) or value < 0:
            problems.append(f"{name}: {value} is not a finite number >= 0")
    if spec.final_status not in get_args(FinalStatus):
        problems.append(
            f"final_status: {spec.final_status!r} is not one of {get_args(FinalStatus)}"
        )
    if spec.cancelled_files and spec.final_status != CANCELLED:
        problems.append("cancelled_files: only a batch whose final_status is 'cancelled' has them")
    if not 0 <= spec.cancelled_files <= spec.total_files:
        problems.append(f"cancelled_files: {spec.cancelled_files} is not in 0..total_files")
    if not 0 <= spec.failed_files <= max(0, spec.processable_files):
        problems.append(f"failed_files: {spec.failed_files} is not in 0..processed files")
    if spec.failed_files and not spec.errors:
        problems.append("errors: failed files need at least one error")
    if spec.stall_after_files is not None and spec.stall_after_files < 0:
        problems.append(f"stall_after_files: {spec.stall_after_files} is not >= 0")
    if spec.curve_seed is not None and spec.stall_after_files is not None:
        problems.append("stall_after_files: an ingestion curve has pauses of its own")
    if spec.poll_after_ms is not None and spec.poll_after_ms < 0:
        problems.append(f"poll_after_ms: {spec.poll_after_ms} is not >= 0")
    return problems


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Progress:
    """A batch at one moment. Files ``0 .. processed-1`` are done; the rest are in progress, or
    cancelled once ``cancelled`` says so."""

    status: str
    processed: int
    failed: int
    cancelled: int
    total: int

    @property
    def completed(self) -> int:
        return self.processed - self.failed

    @property
    def in_progress(self) -> int:
        return self.total - self.processed - self.cancelled

    @property
    def file_counts(self) -> FileCounts:
        return FileCounts(
            in_progress=self.in_progress,
            completed=self.completed,
            failed=self.failed,
            cancelled=self.cancelled,
            total=self.total,
        )


def processed_at(spec: BatchSpec, elapsed: float) -> int:
    """How many files are done (completed or failed) ``elapsed`` seconds after the start."""
    processable = spec.processable_files
    active = elapsed - spec.start_delay_seconds
    if active < 0 or processable == 0:
        return 0
    if spec.duration_seconds == 0:
        return processable
    if spec.curve_seed is not None:
        return ingestion_curve(spec.curve_seed, processable, spec.duration_seconds).files_at(active)
    if spec.stalls:
        assert spec.stall_after_files is not None
        stall_begins = spec.stall_after_files * spec.duration_seconds / processable
        if active >= stall_begins:
            active = max(stall_begins, active - spec.stall_seconds)
    done = math.floor(processable * active / spec.duration_seconds + _EPSILON)
    return min(processable, done)


def failed_among(spec: BatchSpec, processed: int) -> int:
    """How many of the first ``processed`` files failed."""
    processable = spec.processable_files
    return processed * spec.failed_files // processable if processable else 0


def progress_at(
    spec: BatchSpec,
    elapsed: float,
    *,
    cancel_requested: float | None = None,
    cancel_seconds: float = 0.0,
) -> Progress:
    """The batch ``elapsed`` seconds after its start. ``cancel_requested`` is when (in the same
    terms) a client asked to cancel it; it is then ``cancelling`` for ``cancel_seconds``."""
    total = spec.total_files
    natural_end = spec.finishes_after()
    if cancel_requested is not None and cancel_requested < natural_end:
        done = processed_at(spec, cancel_requested)
        failed = failed_among(spec, done)
        if elapsed < cancel_requested + cancel_seconds:
            return Progress(CANCELLING, done, failed, 0, total)
        return Progress(CANCELLED, done, failed, total - done, total)
    if elapsed >= natural_end:
        done = spec.processable_files
        return Progress(spec.final_status, done, spec.failed_files, total - done, total)
    done = processed_at(spec, elapsed)
    return Progress(IN_PROGRESS, done, failed_among(spec, done), 0, total)


def terminal_after(
    spec: BatchSpec, *, cancel_requested: float | None = None, cancel_seconds: float = 0.0
) -> float:
    """Seconds after the start at which the batch becomes terminal."""
    natural_end = spec.finishes_after()
    if cancel_requested is not None and cancel_requested < natural_end:
        return cancel_requested + cancel_seconds
    return natural_end


def is_failed_file(spec: BatchSpec, index: int) -> bool:
    """Whether file ``index`` fails once processed (failures spread evenly, Bresenham-style)."""
    processable = spec.processable_files
    if index >= processable:
        return False
    return (index + 1) * spec.failed_files // processable > index * spec.failed_files // processable


def failed_file_index(spec: BatchSpec, ordinal: int) -> int:
    """The index of the ``ordinal``-th (0-based) failing file."""
    return -(-(ordinal + 1) * spec.processable_files // spec.failed_files) - 1


def file_error(spec: BatchSpec, index: int) -> LastError:
    """``last_error`` of failing file ``index``: the spec's errors, in turn."""
    ordinal = index * spec.failed_files // spec.processable_files
    return spec.errors[ordinal % len(spec.errors)]


def file_status(spec: BatchSpec, progress: Progress, index: int) -> str:
    if index < progress.processed:
        return FAILED if is_failed_file(spec, index) else COMPLETED
    return CANCELLED if progress.cancelled else IN_PROGRESS


def expand_template(
    template: BatchSpec,
    count: int,
    *,
    prefix: str,
    vector_store_id: str | None = None,
    start_jitter_seconds: float = 0.0,
    duration_jitter: float = 0.0,
    seed: int = 0,
) -> list[BatchSpec]:
    """``count`` copies of ``template`` with ids ``<prefix>00000``…; each start is delayed by up
    to ``start_jitter_seconds`` and each duration scaled by up to ±``duration_jitter``. With a
    ``curve_seed``, copy ``n`` follows the curve of ``curve_seed + n``."""
    if count < 0:
        raise ValueError(f"count: {count} is not >= 0")
    if start_jitter_seconds < 0 or not 0 <= duration_jitter < 1:
        raise ValueError("start_jitter_seconds must be >= 0 and duration_jitter in [0, 1)")
    rng = random.Random(seed)
    width = max(5, len(str(count - 1)))
    specs = []
    for n in range(count):
        delay = template.start_delay_seconds
        duration = template.duration_seconds
        if start_jitter_seconds:
            delay += rng.uniform(0, start_jitter_seconds)
        if duration_jitter:
            duration *= 1 + rng.uniform(-duration_jitter, duration_jitter)
        specs.append(
            dataclasses.replace(
                template,
                batch_id=f"{prefix}{n:0{width}d}",
                vector_store_id=vector_store_id or template.vector_store_id,
                start_delay_seconds=delay,
                duration_seconds=duration,
                curve_seed=None if template.curve_seed is None else template.curve_seed + n,
            )
        )
    return specs


def spec_from_json(obj: object) -> BatchSpec:
    """A spec from its JSON form (the field names; ``errors`` as ``[{code, message}]``,
    ``faults`` as fault objects). Raises ``ValueError`` naming the problem."""
    if not isinstance(obj, Mapping):
        raise ValueError("a batch spec must be a JSON object")
    known = {f.name for f in dataclasses.fields(BatchSpec)}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ValueError(f"unknown batch spec fields: {unknown}")
    fields: dict[str, Any] = dict(obj)
    if "errors" in fields:
        errors = fields["errors"]
        if not isinstance(errors, list) or not all(
            isinstance(e, Mapping) and isinstance(e.get("code"), str) for e in errors
        ):
            raise ValueError("errors: must be a list of {code, message} objects")
        fields["errors"] = tuple(LastError(e["code"], str(e.get("message", ""))) for e in errors)
    if "faults" in fields:
        faults = fields["faults"]
        if not isinstance(faults, list):
            raise ValueError("faults: must be a list of fault objects")
        fields["faults"] = tuple(Fault.from_json(f) for f in faults)
    try:
        return BatchSpec(**fields)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def spec_to_json(spec: BatchSpec) -> dict[str, Any]:
    out: dict[str, Any] = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    out["errors"] = [e.as_dict() for e in spec.errors]
    out["faults"] = [f.as_json() for f in spec.faults]
    return out
