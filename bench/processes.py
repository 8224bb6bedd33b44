"""The processes a benchmark runs: the simulator, the daemon and the baseline clients.

Each is its own OS process, so that the CPU time and memory the OS reports for one of them is
that client's alone. Nothing here measures; :mod:`bench.scenarios` does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import tomli_w

T = TypeVar("T")

PYTHON = sys.executable
#: The key every client sends; the simulator does not check it (it is not a secret).
API_KEY = "sk-bench-not-a-secret"


class BenchError(RuntimeError):
    """A process did not start, or stopped, or never got where the benchmark waits for it."""


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise BenchError(f"timed out after {timeout:g}s waiting for {what}")


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCH_WATCHER_", "OPENAI_"))}
    env.update(extra or {})
    return env


class Process:
    """A child process we started and will stop (SIGTERM, then SIGKILL)."""

    def __init__(self, proc: subprocess.Popen[Any]) -> None:
        self.proc = proc
        self.ps = psutil.Process(proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process (all its threads), from the OS."""
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def pause(self) -> None:
        """Stop the process (SIGSTOP) until :meth:`resume`: it uses no CPU meanwhile."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def check_alive(self, name: str) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{name} exited with status {self.proc.returncode}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class SimulatorProcess(Process):
    """``python -m watcher.simulator``; ``url`` ends in ``/v1``."""

    def __init__(self, args: Sequence[str]) -> None:
        proc = subprocess.Popen(
            [PYTHON, "-m", "watcher.simulator", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_env(),
        )
        super().__init__(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening "):
            self.stop()
            raise BenchError(f"the simulator did not start: {line!r}")
        self.url = line.removeprefix("listening ")
        self.root = self.url.removesuffix("/v1")
        self._http = httpx.Client(base_url=f"{self.root}/_sim/", timeout=60.0)

    def control(self, method: str, path: str) -> Any:
        response = self._http.request(method, path)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return self.control("GET", "stats?per_batch=0")  # type: ignore[no-any-return]

    def reset_stats(self) -> None:
        self.control("POST", "stats/reset")

    def batches(self) -> list[dict[str, Any]]:
        """Every batch's truth (without the failed-file lists)."""
        return self.control("GET", "batches?failed_files=0")["data"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        super().stop()
        if hasattr(self, "_http"):
            self._http.close()


def render_config(
    sections: Mapping[str, Mapping[str, object]], watches: Sequence[tuple[str, str]]
) -> str:
    """The daemon's TOML: ``sections`` of scalars, then one ``[[watch]]`` per (store, batch)."""
    document: dict[str, object] = {name: dict(keys) for name, keys in sections.items()}
    document["watch"] = [{"vector_store_id": vs, "batch_id": batch} for vs, batch in watches]
    return tomli_w.dumps(document)


class DaemonProcess(Process):
    """``batch-watcher run`` with a config written into ``workdir``, logging JSON to a file."""

    def __init__(
        self,
        workdir: Path,
        sections: Mapping[str, Mapping[str, object]],
        watches: Sequence[tuple[str, str]],
        *,
        name: str = "daemon",
        start_timeout: float = 120.0,
        source: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``source``: a directory holding another checkout's ``watcher`` package, to run that
        code instead of this one's (the daemon runs in ``workdir``, so PYTHONPATH decides)."""
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / f"{name}.toml"
        config.write_text(render_config(sections, watches), encoding="utf-8")
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("wb") as log:
            proc = subprocess.Popen(
                [PYTHON, "-m", "watcher", "run", "--config", str(config), "--log-format", "json"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(
                    {
                        "OPENAI_API_KEY": API_KEY,
                        **({"PYTHONPATH": str(source)} if source else {}),
                        **(env or {}),
                    }
                ),
                cwd=workdir,
            )
        super().__init__(proc)
        self._read = 0
        self._pending = b""
        #: Every JSON log line read so far, oldest first.
        self.entries: list[dict[str, Any]] = []
        self.started_at = time.time()
        try:
            listen = wait_for(self._listen, start_timeout, "the daemon to start")
        except BenchError:
            self.stop()
            raise
        self.url = f"http://{listen}"
        self._http = httpx.Client(base_url=self.url, timeout=60.0)

    def _listen(self) -> str | None:
        self.check_alive("the daemon")
        for entry in self.read_log():
            if entry.get("event") == "daemon_started":
                return str(entry["listen"])
        return None

    def read_log(self) -> list[dict[str, Any]]:
        """The JSON log lines written since the last call (also kept in :attr:`entries`)."""
        with self.log_path.open("rb") as log:
            log.seek(self._read)
            data = self._pending + log.read()
            self._read = log.tell()
        *lines, self._pending = data.split(b"\n")
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        self.entries += entries
        return entries

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        response = self._http.get(path, headers=headers)
        response.raise_for_status()
        return response

    def stop(self) -> None:
        super().stop()
        if hasattr(self, "_http"):
            self._http.close()


def log_time(entry: Mapping[str, Any]) -> float:
    """The Unix time of a log line (structlog's ISO timestamp)."""
    return datetime.fromisoformat(str(entry["timestamp"])).timestamp()


class BaselineProcess(Process):
    """``python -m bench.baselines KIND``: a raw httpx loop or the openai SDK at a fixed rate."""

    def __init__(
        self,
        kind: str,
        base_url: str,
        vector_store_id: str,
        ids_file: Path,
        rate: float,
        concurrency: int,
        log_path: Path,
    ) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "bench.baselines",
                    kind,
                    "--base-url",
                    base_url,
                    "--vector-store-id",
                    vector_store_id,
                    "--ids-file",
                    str(ids_file),
                    "--rate",
                    repr(rate),
                    "--concurrency",
                    str(concurrency),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=_env({"OPENAI_API_KEY": API_KEY}),
            )
        super().__init__(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            self.stop()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"the {kind} baseline did not start: {line!r} {tail}")
