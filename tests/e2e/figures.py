"""The reliability suite's measured figures, and the table in ``docs/reliability.md``.

Each whole-process reliability test calls :func:`record` with what it measured. The figures are
always written under the test's temporary directory; with ``BATCH_WATCHER_WRITE_FIGURES=1`` they
are also merged into ``docs/reliability.json``, and ``docs/reliability.md`` is rendered again from
it, so a full run of the suite leaves the table holding the numbers of that run::

    BATCH_WATCHER_WRITE_FIGURES=1 python -m pytest tests/e2e/test_faults.py ...  (see render())
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[2] / "docs"
ENV = "BATCH_WATCHER_WRITE_FIGURES"

#: The table's columns: key in a scenario's figures, and heading.
COLUMNS = (
    ("faults_injected", "faults injected"),
    ("requests", "requests made"),
    ("batches_finished", "batches finished"),
    ("watches_lost", "watches lost"),
    ("duplicates", "duplicates"),
    ("secrets_leaked", "secrets leaked"),
)

#: Scenarios in the order the table lists them, with what each one does.
SCENARIOS = {
    "fault_matrix": "Every simulator fault, one per batch (429 with and without Retry-After, "
    "5xx bursts, HTML pages, truncated JSON, dropped connections, cut bodies, replies past the "
    "timeout, an unknown status, a vanished batch, pagination loops, empty pages)",
    "rate_limit_and_key_flip": "A global rate limit on the simulator, and the API key refused "
    "mid-run, then accepted again",
    "restarts": "`kill -9` mid-poll, mid-listing of failed files and at random points while "
    "watches are being written, then restart, with a webhook receiver",
    "hostile_server_daemon": "The daemon against an independent hostile server (raw asyncio, "
    "hand-written HTTP): garbage chunks, huge headers, trickled replies, 10^6-deep JSON, NaN, "
    "gzip bombs, redirect loops, control characters, lying lengths",
    "hostile_server_watch": "`batch-watcher watch` against the same hostile server",
    "secrets": "Daemon, `watch` and `check-config` with a recognisable key, control token and "
    "webhook secret, against a server that echoes the key everywhere",
    "soak": "Waves of batches through the control API, with random 5xx and 429, finished "
    "watches pruned",
}


def record(tmp_path: Path, scenario: str, **figures: Any) -> dict[str, Any]:
    """Note a scenario's measured figures; returns them as written."""
    entry = {"scenario": scenario, **figures}
    (tmp_path / f"figures-{scenario}.json").write_text(json.dumps(entry, indent=2) + "\n")
    if os.environ.get(ENV) == "1":
        # Tests run in parallel workers: one merge at a time, or one would undo another's.
        with (Path(tempfile.gettempdir()) / "batch-watcher-figures.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = DOCS / "reliability.json"
            data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
            data.setdefault("scenarios", {})[scenario] = figures
            data["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            data["platform"] = f"Python {sys.version.split()[0]}, {platform.system()}"
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            (DOCS / "reliability.md").write_text(render(data))
    return entry


def _cell(value: object) -> str:
    return "—" if value is None else str(value)


def _attacks(rows: list[Mapping[str, Any]]) -> str:
    """The table of attack classes, kept by hand in ``reliability.json``: what the tests send,
    what the code before the fix did with it, and how much of it holds now."""
    if not rows:
        return ""
    lines = [
        "## Attacks on the daemon's HTTP server, control API and webhook",
        "",
        "Each class with what its tests send, what the code before the fix did (as the attack "
        "report in issue 16 found it, or as the same test saw it where it was run on that code), "
        "and how many of the inputs hold now: answered as the documentation says, with "
        "`/healthz` and polling going on and no traceback in the log.",
        "",
        "| class of attack | inputs the tests send | before the fix | held after | tests |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['attack']} | {row['inputs']} | {row['before']} "
            f"| {row['held_after']} of {row['count']} | {row['tests']} |"
        )
    return "\n".join(lines) + "\n\n"


def render(data: Mapping[str, Any]) -> str:
    """``docs/reliability.md`` for the figures in ``data``."""
    scenarios: Mapping[str, Mapping[str, Any]] = data.get("scenarios", {})
    names = [s for s in SCENARIOS if s in scenarios] + sorted(set(scenarios) - set(SCENARIOS))
    head = "| scenario | " + " | ".join(h for _, h in COLUMNS) + " |"
    rule = "| --- |" + " ---: |" * len(COLUMNS)
    rows = [
        f"| {name} | " + " | ".join(_cell(scenarios[name].get(k)) for k, _ in COLUMNS) + " |"
        for name in names
    ]
    totals = ["**total**"]
    for key, _ in COLUMNS:
        values = [scenarios[n].get(key) for n in names if scenarios[n].get(key) is not None]
        totals.append(f"**{sum(values)}**" if values else "—")
    rows.append("| " + " | ".join(totals) + " |")
    described = "\n".join(f"- **{n}**: {SCENARIOS.get(n, '')}" for n in names)
    soak = scenarios.get("soak", {})
    memory = ""
    if soak.get("rss_start_mib") is not None:
        memory = (
            f"\nThe soak ran {soak.get('duration_seconds')} s. The daemon's resident memory "
            f"(the mean of three samples, each taken once a wave had ended and been pruned) was "
            f"{soak['rss_start_mib']} MiB after warm-up and {soak['rss_end_mib']} MiB at the "
            f"end, with {soak.get('batches_finished')} batches watched to their end on the way."
            "\n"
        )
    attacks = _attacks(data.get("attacks", []))
    return f"""# Reliability figures

Measured by the reliability suite (`tests/e2e/test_faults.py`, `test_restarts.py`,
`test_hostile_server.py`, `test_secrets.py`, `test_soak.py`) on {data.get("measured_at", "?")}
({data.get("platform", "?")}). Every number comes from that run. The suite asserts that watches
lost, duplicates and secrets leaked are 0, so a run that leaked a secret, for example, fails
instead of writing a non-zero number here.

| column | what is counted |
| --- | --- |
| faults injected | faults the simulator fired (with the 429s and 401s of its rate limit and key \
check), tricks the hostile or echoing server played, or `kill -9`s |
| requests made | API requests the server received |
| batches finished | batches the watcher saw to an end (each counted once, across restarts) |
| watches lost | watches acknowledged (configured, or answered 201) but missing later |
| duplicates | finished batches announced more than once (the `batch_<status>` log event) |
| secrets leaked | 12-character pieces of the key, control token or webhook secret found anywhere |

{head}
{rule}
{chr(10).join(rows)}
{memory}
What each scenario does:

{described}

{attacks}## Regenerating

```sh
BATCH_WATCHER_WRITE_FIGURES=1 python -m pytest tests/e2e/test_faults.py \\
    tests/e2e/test_restarts.py tests/e2e/test_hostile_server.py tests/e2e/test_secrets.py \\
    tests/e2e/test_soak.py
```

Each test merges its scenario into `docs/reliability.json` and renders this file again from
it. Without the variable, the figures go only to each test's temporary directory.
"""
