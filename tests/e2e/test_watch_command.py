"""The real ``batch-watcher watch`` process against a simulator process: its JSON and text
output, its exit statuses, the faults it rides out, and the requests it never makes."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import pytest
from harness import PYTHON, SimulatorProcess, _env, iter_json_lines, run_command, start_simulator

from watcher.simulator.files import file_object

pytestmark = pytest.mark.e2e

VS = "vs_cmd"
KEY = "sk-cmd-RIGHTKEY-4f6c0d1e9b8a7f65"
WRONG_KEY = "sk-cmd-WRONGKEY-0a1b2c3d4e5f6789"
REQUIRED_KEYS = {
    "vector_store_id",
    "batch_id",
    "status",
    "file_counts",
    "failed_files",
    "elapsed_seconds",
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    """One simulator process for the module, requiring KEY; every test adds its own batches."""
    process = start_simulator(
        ["--scenario", "empty", "--api-key-env", "SIM_KEY"], env={"SIM_KEY": KEY}
    )
    yield process
    process.stop()


def add(sim: SimulatorProcess, batch_id: str, **spec: Any) -> str:
    """Add a batch to the simulator (20 files over 0.4 s unless told)."""
    body = {"vector_store_id": VS, "batch_id": batch_id, "total_files": 20, "duration_seconds": 0.4}
    sim.control("POST", "batches", {**body, **spec})
    return batch_id


def watch(
    sim: SimulatorProcess,
    batch_ids: Sequence[str],
    *args: str,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``batch-watcher watch`` on these batches; the key it was given never shows."""
    targets = [f"{VS}/{b}" for b in batch_ids]
    result = run_command(
        ["watch", *targets, "--base-url", sim.url, "--interval", "0.1", *args],
        env={"OPENAI_API_KEY": KEY, **(env or {})},
        timeout=60,
    )
    for secret in (KEY, WRONG_KEY):
        assert secret not in result.stdout
        assert secret not in result.stderr
    assert "Traceback" not in result.stderr
    return result


def results(stdout: str) -> dict[str, dict[str, Any]]:
    """The JSON lines of ``--output json``, by batch id; each batch appears once."""
    lines = list(iter_json_lines(stdout))
    by_batch = {line["batch_id"]: line for line in lines}
    assert len(by_batch) == len(lines)
    for line in lines:
        assert set(line) >= REQUIRED_KEYS
        assert line["vector_store_id"] == VS
        assert isinstance(line["elapsed_seconds"], int | float)
        assert line["elapsed_seconds"] >= 0
        for failed in line["failed_files"]:
            named = {"id", "filename", "bytes", "last_error"}
            assert named <= set(failed) <= named | {"filename_error"}
            assert set(failed["last_error"]) == {"code", "message"}
    return by_batch


def assert_matches_truth(truth: Mapping[str, Any], line: Mapping[str, Any]) -> None:
    """The line says what the simulator knows: status, counts, every failed file and its error."""
    assert line["batch_id"] == truth["id"]
    assert line["status"] == truth["status"]
    assert line["file_counts"] == truth["file_counts"]
    named = {f["id"]: file_object(f["id"], 0) for f in truth["failed_files"]}
    assert line["failed_files"] == [
        {
            "id": f["id"],
            "filename": named[f["id"]]["filename"],
            "bytes": named[f["id"]]["bytes"],
            "last_error": {"code": f["code"], "message": f["message"]},
        }
        for f in truth["failed_files"]
    ]
    assert line["failed_files_complete"] is True


def assert_no_poll_after_terminal(sim: SimulatorProcess, batch_ids: Sequence[str]) -> None:
    stats = sim.stats()
    after = stats["retrieves_after_terminal_by_batch"]
    assert {b: after.get(b, 0) for b in batch_ids} == dict.fromkeys(batch_ids, 0)
    assert stats["max_limit"] <= 100


def list_queries(sim: SimulatorProcess, batch_id: str) -> list[dict[str, str]]:
    records = sim.control("GET", f"requests?limit=0&batch_id={batch_id}")["data"]
    return [
        {k: v[0] for k, v in parse_qs(r["query"]).items()}
        for r in records
        if r["endpoint"] == "list" and r["status"] == 200
    ]


# -- output and exit statuses -------------------------------------------------------------------


def test_clean_batches_print_one_json_object_each_and_exit_0(sim: SimulatorProcess) -> None:
    """Batches that complete with no failed file give one JSON object each and exit status 0."""
    ids = [add(sim, "vsfb_clean_1"), add(sim, "vsfb_clean_2", total_files=7)]
    result = watch(sim, ids, "--output", "json")
    assert result.returncode == 0, result.stderr
    lines = results(result.stdout)
    assert sorted(lines) == sorted(ids)
    truths = sim.truth()
    for line in lines.values():
        assert line["status"] == "completed"
        assert line["failed_files"] == []
        assert_matches_truth(truths[line["batch_id"]], line)
    assert_no_poll_after_terminal(sim, ids)


def test_150_failed_files_over_two_pages_are_listed_once_and_exit_1(
    sim: SimulatorProcess,
) -> None:
    """A batch with 150 failed files lists each once, read in two pages of at most 100, and the
    command exits 1."""
    batch = add(sim, "vsfb_150", total_files=300, failed_files=150, duration_seconds=0.3)
    result = watch(sim, [batch], "--output", "json")
    assert result.returncode == 1, result.stderr
    line = results(result.stdout)[batch]
    assert_matches_truth(sim.truth()[batch], line)
    ids = [f["id"] for f in line["failed_files"]]
    assert len(ids) == len(set(ids)) == 150
    assert sum(line["failed_files_by_code"].values()) == 150
    first, second = list_queries(sim, batch)
    assert first["limit"] == second["limit"] == "100"
    assert first["filter"] == second["filter"] == "failed"
    assert "after" not in first
    assert second["after"] == ids[99]
    assert_no_poll_after_terminal(sim, [batch])


def test_failed_and_cancelled_batches_exit_1(sim: SimulatorProcess) -> None:
    """A batch that ends failed and one that ends cancelled are reported so, with exit 1."""
    failed = add(sim, "vsfb_ends_failed", final_status="failed", failed_files=20)
    cancelled = add(sim, "vsfb_ends_cancelled", final_status="cancelled", cancelled_files=5)
    result = watch(sim, [failed, cancelled], "--output", "json")
    assert result.returncode == 1, result.stderr
    lines = results(result.stdout)
    assert lines[failed]["status"] == "failed"
    assert lines[cancelled]["status"] == "cancelled"
    assert lines[cancelled]["file_counts"]["cancelled"] == 5
    truths = sim.truth()
    for line in lines.values():
        assert_matches_truth(truths[line["batch_id"]], line)
    assert_no_poll_after_terminal(sim, [failed, cancelled])


def test_text_output_has_a_summary_and_the_failed_files_table(sim: SimulatorProcess) -> None:
    """``--output text`` prints a line per batch and a table with every failed file's error."""
    with_failures = add(sim, "vsfb_text_failed", total_files=30, failed_files=3)
    clean = add(sim, "vsfb_text_clean")
    result = watch(sim, [with_failures, clean], "--output", "text")
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert f"{VS}/{with_failures}: completed — 27 completed, 3 failed" in out
    assert f"{VS}/{clean}: completed — 20 completed, 0 failed" in out
    assert "failed files by code: invalid_file: 1, server_error: 1, unsupported_file: 1" in out
    assert "Failed files" in out
    truth = sim.control("GET", f"batches/{with_failures}")["failed_files"]
    table = out[out.index("Failed files") :]
    for failed in truth:
        row = next(line for line in table.splitlines() if failed["id"] in line)
        assert failed["code"] in row
        assert failed["message"] in row
    assert not out.lstrip().startswith("{")


def test_progress_always_draws_bars_on_stderr_and_leaves_stdout_json(
    sim: SimulatorProcess,
) -> None:
    """``--progress always`` draws a bar per batch on stderr while stdout stays JSON lines."""
    batch = add(sim, "vsfb_progress", total_files=30, failed_files=3, duration_seconds=0.6)
    result = watch(sim, [batch], "--output", "json", "--progress", "always")
    assert result.returncode == 1, result.stderr
    lines = results(result.stdout)
    assert all(line.startswith("{") for line in result.stdout.splitlines() if line)
    assert_matches_truth(sim.truth()[batch], lines[batch])
    bar = [line for line in result.stderr.splitlines() if f"{VS}/{batch}" in line and "━" in line]
    assert bar
    assert "30/30" in bar[-1]
    assert "completed" in bar[-1]


def run_on_terminal(args: Sequence[str], env: Mapping[str, str], width: int) -> str:
    """``batch-watcher ARGS`` with stdout and stderr on one pseudo-terminal; all it wrote."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 200, width, 0, 0))
    proc = subprocess.Popen(
        [PYTHON, "-m", "watcher", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=_env({"TERM": "xterm-256color", **env}),
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if select.select([leader], [], [], 0.1)[0]:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif proc.poll() is not None:
                break
    finally:
        os.close(leader)
        proc.kill()
        proc.wait(10)
    return b"".join(chunks).decode("utf-8", errors="replace")


_CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07]*\x07|[\r\n]")


def screen_rows(output: str, width: int) -> list[str]:
    """The rows a terminal shows after ``output``: enough of a VT100 for rich's live display
    (cursor up, erase line, carriage return, line feed; colours ignored)."""
    rows: list[list[str]] = [[]]
    row = col = 0
    pos = 0
    for match in [*_CONTROL.finditer(output), None]:
        text = output[pos : match.start() if match else len(output)]
        for char in text:
            line = rows[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = char
            col += 1
            assert col <= width, "a row wrapped: widen the terminal"
        if match is None:
            break
        pos = match.end()
        token = match.group(0)
        if token == "\r":
            col = 0
        elif token == "\n":
            row += 1
            if row == len(rows):
                rows.append([])
        elif match.group(2) == "A":
            row = max(0, row - int(match.group(1) or 1))
        elif match.group(2) == "K" and match.group(1) in ("2", ""):
            rows[row] = [] if match.group(1) == "2" else rows[row][:col]
    return ["".join(r).rstrip() for r in rows]


def test_json_lines_survive_the_live_bars_on_a_terminal(sim: SimulatorProcess) -> None:
    """On a terminal (progress bars on by default), a JSON line printed while the bars are live
    stays on the screen whole, on its own row, and is not drawn over."""
    quick = add(sim, "vsfb_tty_quick", total_files=10, duration_seconds=0.3)
    slow = add(sim, "vsfb_tty_slow", total_files=40, duration_seconds=2.5)
    width = 1000
    output = run_on_terminal(
        [
            "watch",
            f"{VS}/{quick}",
            f"{VS}/{slow}",
            "--base-url",
            sim.url,
            "--interval",
            "0.1",
            "--output",
            "json",
            "--log-level",
            "error",
        ],
        {"OPENAI_API_KEY": KEY},
        width,
    )
    assert "━" in output  # the bars were drawn live
    assert KEY not in output
    rows = screen_rows(output, width)
    shown = [json.loads(r)["batch_id"] for r in rows if r.startswith("{")]
    assert sorted(shown) == sorted([quick, slow])
    assert not [r for r in rows if "━" in r and "{" in r]
    bars = [r for r in rows if "━" in r]
    assert len(bars) == 2
    assert "10/10" in bars[0]
    assert "40/40" in bars[1]


# -- exit 2: bad usage --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["vs_cmd/a/b"], {}, "'vs_cmd/a/b' is not VECTOR_STORE_ID/BATCH_ID or VECTOR_STORE_ID"),
        (["vs/b", "--interval", "-1"], {}, "argument --interval: '-1' is not > 0"),
        (["vs/b", "--interval", "soon"], {}, "argument --interval: 'soon' is not a number"),
        (["vs/b", "--base-url", "not a url"], {}, "--base-url: 'not a url'"),
        (["vs/b", "--base-url", "ftp://host/v1"], {}, "--base-url: 'ftp://host/v1' is not an"),
        (["vs/b", "--base-url", "http://127.0.0.1:99999/v1"], {}, "Port out of range"),
        (["vs/b", "--base-url", "http://127.0.0.1:abc/v1"], {}, "--base-url: 'http://127"),
        (["vs/b"], {"OPENAI_BASE_URL": "localhost:8080"}, "OPENAI_BASE_URL: 'localhost:8080'"),
    ],
    ids=[
        "two-slashes",
        "negative-interval",
        "word-interval",
        "no-url",
        "ftp",
        "port-range",
        "port-word",
        "env-url",
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(
    args: list[str], env: dict[str, str], message: str
) -> None:
    """A bad target, interval or URL stops the command at once with exit 2, naming the problem."""
    result = run_command(
        ["watch", *args, "--timeout", "2"], env={"OPENAI_API_KEY": KEY, **env}, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


# -- exit 3 and 4 -------------------------------------------------------------------------------


def test_deadline_exits_3_and_cancels_only_when_asked(sim: SimulatorProcess) -> None:
    """A batch still running at ``--timeout`` ends timed_out with exit 3, which outranks a
    failed batch; ``--cancel-on-timeout`` cancels it through the API."""
    # An hour: still running at every --timeout, however slowly a busy machine starts each watch.
    slow = add(sim, "vsfb_deadline_slow", duration_seconds=3600)
    left = add(sim, "vsfb_deadline_left", duration_seconds=3600)
    failed = add(sim, "vsfb_deadline_failed", final_status="failed", failed_files=2)
    result = watch(sim, [slow, failed], "--output", "json", "--timeout", "1", "--cancel-on-timeout")
    assert result.returncode == 3, result.stderr
    lines = results(result.stdout)
    assert lines[slow]["status"] == "timed_out"
    assert "cancelled" in lines[slow]["note"]
    assert lines[failed]["status"] == "failed"
    assert sim.control("GET", f"batches/{slow}")["cancel_requested"] is True
    plain = watch(sim, [left], "--output", "json", "--timeout", "0.5")
    assert plain.returncode == 3, plain.stderr
    assert results(plain.stdout)[left]["status"] == "timed_out"
    assert sim.control("GET", f"batches/{left}")["cancel_requested"] is False
    assert sim.stats()["by_batch"][left].get("cancel", 0) == 0


def test_timeout_names_the_stuck_files_and_failed_files_by_name(sim: SimulatorProcess) -> None:
    """``--timeout`` ends with exit 3 and the summary names the files still in progress; the
    failed files' table and JSON carry each file's name from ``GET /files/{id}``."""
    # An hour: every one of its files is still in progress at the second watch, however slowly
    # a busy machine started the first (over 60 s, two had finished by then beside stress-ng).
    slow = add(sim, "vsfb_stuck_text", total_files=5, duration_seconds=3600)
    failed = add(sim, "vsfb_named_text", final_status="failed", failed_files=2)
    text = watch(sim, [slow, failed], "--timeout", "1")
    assert text.returncode == 3, text.stderr
    assert "5 files still in progress, no progress for" in text.stdout
    for i in range(5):
        assert f"file-{slow}-{i:06d} (document-" in text.stdout
    assert text.stdout.count("document-") >= 7  # 5 stuck, 2 failed in the table
    again = watch(sim, [slow], "--output", "json", "--timeout", "0.5")
    [line] = iter_json_lines(again.stdout)
    assert [f["id"] for f in line["stuck_files"]] == [f"file-{slow}-{i:06d}" for i in range(5)]
    assert all(f["filename"] and f["stalled_seconds"] >= 0 for f in line["stuck_files"])
    named = watch(sim, [failed], "--output", "json")
    [done] = iter_json_lines(named.stdout)
    assert all(f["filename"].startswith("document-") for f in done["failed_files"])


@pytest.mark.parametrize("output", ["json", "text"])
def test_wrong_key_exits_4_and_is_never_printed(sim: SimulatorProcess, output: str) -> None:
    """A key the server refuses ends every watch with exit 4, and the key is in no output."""
    ids = [add(sim, f"vsfb_wrong_key_{output}_1"), add(sim, f"vsfb_wrong_key_{output}_2")]
    result = watch(
        sim, ids, "--output", output, "--log-level", "debug", env={"OPENAI_API_KEY": WRONG_KEY}
    )
    assert result.returncode == 4, result.stderr
    assert "auth_failed" in result.stderr
    if output == "json":
        lines = results(result.stdout)
        assert {b: line["status"] for b, line in lines.items()} == dict.fromkeys(ids, "auth_failed")
    else:
        assert f"{VS}/{ids[0]}: auth_failed" in result.stdout


def test_missing_and_vanished_batches_exit_4(sim: SimulatorProcess) -> None:
    """A batch that does not exist, or that vanishes, ends not_found with exit 4, which
    outranks a clean batch."""
    vanishing = add(sim, "vsfb_vanishing", duration_seconds=60)
    sim.inject({"kind": "vanish", "times": 1}, vanishing)
    clean = add(sim, "vsfb_beside_missing")
    result = watch(sim, ["vsfb_never_was", vanishing, clean], "--output", "json")
    assert result.returncode == 4, result.stderr
    lines = results(result.stdout)
    assert lines["vsfb_never_was"]["status"] == "not_found"
    assert lines[vanishing]["status"] == "not_found"
    assert lines[clean]["status"] == "completed"


# -- faults -------------------------------------------------------------------------------------

FAULTS: dict[str, dict[str, Any]] = {
    "rate_limit": {"kind": "rate_limit", "retry_after_seconds": 0.2},
    "rate_limit_bare": {"kind": "rate_limit_bare"},
    "server_500": {"kind": "server_error", "status": 500},
    "server_502": {"kind": "server_error", "status": 502},
    "server_503": {"kind": "server_error", "status": 503},
    "html": {"kind": "html_error"},
    "truncated": {"kind": "truncated_json"},
    "drop": {"kind": "drop"},
    "cut": {"kind": "cut_body"},
    "slow": {"kind": "slow", "delay_seconds": 0.3},
    "odd_status": {"kind": "unknown_status", "value": "paused"},
    "list_500": {"kind": "server_error", "endpoint": "list"},
    "list_truncated": {"kind": "truncated_json", "endpoint": "list"},
    "list_drop": {"kind": "drop", "endpoint": "list"},
}


def test_every_fault_still_ends_with_the_right_json(sim: SimulatorProcess) -> None:
    """Each batch meets one kind of fault twice, and still ends with the JSON the simulator's
    truth calls for, without a poll after it was seen terminal."""
    ids = [
        add(
            sim,
            f"vsfb_fault_{name}",
            total_files=30,
            failed_files=3,
            duration_seconds=1.5,
            faults=[{**fault, "times": 2}],
        )
        for name, fault in FAULTS.items()
    ]
    result = watch(sim, ids, "--output", "json", "--max-requests-per-minute", "6000")
    assert result.returncode == 1, result.stderr
    lines = results(result.stdout)
    assert sorted(lines) == sorted(ids)
    truths = sim.truth()
    for line in lines.values():
        assert_matches_truth(truths[line["batch_id"]], line)
    armed = {f["batch_id"] for f in sim.control("GET", "faults")["data"]}
    assert armed.isdisjoint(ids)  # every fault fired both times
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    failed_polls = [e for e in logged if e.get("event") == "poll_failed"]
    assert {e["batch_id"] for e in failed_polls} >= {
        f"vsfb_fault_{n}" for n in FAULTS if n not in ("slow", "odd_status")
    }
    assert all(e["request_id"] for e in failed_polls if e["http_status"] not in (None, 502))
    assert_no_poll_after_terminal(sim, ids)
