"""``python -m watcher.simulator``: the scenarios it describes, and the batches it lists."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from watcher.simulator import BatchSpec, Simulator
from watcher.simulator.__main__ import LISTED, SCENARIOS, build_simulator, main, served
from watcher.simulator.__main__ import _parser as parser


def test_list_scenarios_names_and_describes_each(capsys: pytest.CaptureFixture[str]) -> None:
    """``--list-scenarios`` prints every scenario with what it serves, and exits 0."""
    assert main(["--list-scenarios"]) == 0
    out = capsys.readouterr().out
    for name in SCENARIOS:
        assert f"\n{name}\n" in f"\n{out}"
    assert "stragglers" in out
    assert "vs_demo" in out


def test_help_describes_the_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` ends with the scenarios and what each serves."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--clock-from-first-poll" in out
    assert "scenarios:\n  demo\n" in out
    assert "130" in out  # the demo's failed files, as its description says


def test_listing_shows_each_batch_as_a_watch_target() -> None:
    """Each batch is listed as ``vector_store_id/batch_id``, the first LISTED of them, then a
    count of the rest and where to read them all."""
    sim = build_simulator(parser().parse_args(["--scenario", "template", "--batches", "25"]))
    lines = served(sim, "http://127.0.0.1:1/v1", "template")
    assert lines[0].startswith("serving 25 batches (scenario template)")
    assert lines[1].split()[0] == "vs_load/vsfb_load_00000"
    assert len(lines) == 1 + LISTED + 1
    assert lines[-1] == "  ... and 5 more: GET http://127.0.0.1:1/_sim/batches"


def test_listing_an_empty_simulator_says_how_to_add_batches() -> None:
    """With nothing to serve, the listing says where batches are added."""
    lines = served(Simulator(), "http://127.0.0.1:1/v1", "empty")
    assert lines == [
        "serving 0 batches (scenario empty); their clocks start when each is added",
        "  add batches with POST http://127.0.0.1:1/_sim/batches",
    ]


def test_ingestion_scenario_gives_each_batch_its_own_curve() -> None:
    """``--scenario ingestion`` serves template batches on seeded, distinct curves."""
    args = parser().parse_args(["--scenario", "ingestion", "--batches", "3", "--seed", "2"])
    sim = build_simulator(args)
    seeds = [sim.batch(i).spec.curve_seed for i in sim.batch_ids()]
    assert seeds == [2_000_006, 2_000_007, 2_000_008]
    plain = build_simulator(parser().parse_args(["--scenario", "template", "--batches", "1"]))
    assert plain.batch(plain.batch_ids()[0]).spec == BatchSpec(
        "vs_load", "vsfb_load_00000", total_files=100, duration_seconds=60.0
    )


@pytest.mark.e2e
def test_the_process_lists_what_it_serves_and_starts_clocks_at_first_poll() -> None:
    """After its ``listening`` line the process lists its batches; with
    ``--clock-from-first-poll`` a batch has not moved until it is first asked for."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher.simulator", "--scenario", "ingestion", "--batches",
         "3", "--duration", "0.5", "--clock-from-first-poll"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().removeprefix("listening ")
        listing = [proc.stdout.readline().rstrip("\n") for _ in range(4)]
        assert "at each one's first poll" in listing[0]
        targets = [line.split()[0] for line in listing[1:]]
        assert targets == [f"vs_load/vsfb_load_0000{n}" for n in range(3)]
        root = url.removesuffix("/v1")
        # Whatever the time since the start, the batch has not ended: nobody asked for it yet.
        truth = httpx.get(f"{root}/_sim/batches/vsfb_load_00000").json()
        assert truth["started"] is False
        reply = httpx.get(f"{url}/vector_stores/vs_load/file_batches/vsfb_load_00000").json()
        assert reply["status"] == "in_progress"
        assert httpx.get(f"{root}/_sim/batches/vsfb_load_00000").json()["started"] is True
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == 0
