"""The batches ``batch-watcher demo`` watches: one of each thing that can happen to a batch."""

from __future__ import annotations

from typing import Final

from ..api.models import LastError
from .faults import Fault, FaultKind
from .scenario import REAL_ERRORS, BatchSpec

DEMO_VECTOR_STORE: Final = "vs_demo"

#: The documented codes, plus one no enum has ever listed: a watcher must keep it as it came.
DEMO_ERRORS: Final = (
    *REAL_ERRORS,
    LastError("parsing_timeout", "Parsing the file took longer than allowed."),
)


def demo_scenario(vector_store_id: str = DEMO_VECTOR_STORE) -> tuple[BatchSpec, ...]:
    """Six batches: clean, many failed files over several pages, ending ``failed``, ending
    ``cancelled``, slow with a stall (about 3.5 minutes), and one whose retrieves hit transient
    faults. All but the slow one are over within 30 seconds."""
    vs = vector_store_id
    return (
        BatchSpec(vs, "vsfb_demo_clean", total_files=40, duration_seconds=12),
        BatchSpec(
            vs,
            "vsfb_demo_failures",
            total_files=250,
            duration_seconds=25,
            start_delay_seconds=1,
            failed_files=130,
            errors=DEMO_ERRORS,
        ),
        BatchSpec(
            vs,
            "vsfb_demo_failed",
            total_files=30,
            duration_seconds=15,
            start_delay_seconds=2,
            final_status="failed",
            failed_files=20,
        ),
        BatchSpec(
            vs,
            "vsfb_demo_cancelled",
            total_files=80,
            duration_seconds=18,
            start_delay_seconds=1,
            final_status="cancelled",
            cancelled_files=50,
        ),
        BatchSpec(
            vs,
            "vsfb_demo_slow",
            total_files=120,
            duration_seconds=150,
            stall_after_files=60,
            stall_seconds=60,
            failed_files=3,
        ),
        BatchSpec(
            vs,
            "vsfb_demo_flaky",
            total_files=60,
            duration_seconds=20,
            failed_files=2,
            faults=(
                Fault(FaultKind.SERVER_ERROR, endpoint="retrieve", status=503, times=2),
                Fault(FaultKind.RATE_LIMIT, endpoint="retrieve", retry_after_seconds=2, times=1),
                Fault(FaultKind.TRUNCATED_JSON, endpoint="retrieve", times=1),
                Fault(
                    FaultKind.SERVER_ERROR,
                    endpoint="retrieve",
                    status=502,
                    times=3,
                    probability=0.2,
                ),
                Fault(FaultKind.RATE_LIMIT_BARE, endpoint="retrieve", times=1, probability=0.2),
            ),
        ),
    )
