"""The watch engine on virtual time, against the simulator's app in process: concurrency, the
watch list, how watches end, stalls, vanished batches, refused keys, 429s, retries, and the
requests it never makes. The rules themselves are tested with plain values in test_lifecycle."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from factories import virtual_time, virtual_wall

from watcher.api.settings import ClientSettings
from watcher.core.engine import Engine
from watcher.core.events import (
    AuthFailed,
    AuthRecovered,
    BatchCancelRequested,
    BatchFinished,
    BatchProgressed,
    BatchResumed,
    BatchRetried,
    BatchStalled,
    Event,
    FileFailedEvent,
    PollFailed,
    StatusUnknown,
    StuckFilesListed,
    WatchRemoved,
)
from watcher.core.policy import PollSettings
from watcher.core.results import BatchResult
from watcher.core.retry import RetryPolicy
from watcher.core.settings import EngineSettings
from watcher.core.states import Phase
from watcher.core.watch import Watch, WatchOptions
from watcher.credentials import Secret
from watcher.errors import TooManyWatches
from watcher.logs import log_event
from watcher.simulator import BatchSpec, Fault, FaultKind, Simulator, SimulatorApp

VS = "vs_engine"
KEY = "sk-engine-test-key-0123456789"
E = TypeVar("E", bound=Event)

FAST_POLL = PollSettings(interval=0.05, min_interval=0.01, max_interval=1.0)
FAST = EngineSettings(
    poll=FAST_POLL,
    max_requests_per_minute=60_000,
    stall_after_seconds=None,
    auth_retry_seconds=0.3,
)


class Recorder:
    """An engine sink keeping every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[E], batch_id: str | None = None) -> list[E]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (batch_id is None or e.batch_id == batch_id)
        ]

    def result(self, batch_id: str) -> BatchResult:
        [finished] = self.of(BatchFinished, batch_id)
        return finished.result


@pytest.fixture
def sim(logs: list[dict[str, Any]]) -> Iterator[Simulator]:
    """A simulator on the virtual clock; no test may poll a batch already shown terminal."""
    simulator = Simulator(clock=anyio.current_time, wall_clock=virtual_wall, cancel_seconds=0.1)
    yield simulator
    assert simulator.stats.retrieves_after_terminal == 0


@pytest.fixture
def make_engine(sim: Simulator) -> Callable[..., tuple[Engine, Recorder]]:
    """An engine of the simulator's app (in process, on virtual time) with fast settings, and
    the recorder of its events."""

    def make(
        settings: EngineSettings = FAST,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        **kwargs: Any,
    ) -> tuple[Engine, Recorder]:
        recorder = Recorder()
        client = ClientSettings(
            base_url="http://simulator.test/v1",
            api_key=Secret(api_key) if api_key else None,
            timeout_seconds=5.0,
        )
        sinks = [recorder, *kwargs.pop("sinks", ())]
        engine = Engine.create(
            client,
            settings,
            transport=transport or httpx.ASGITransport(SimulatorApp(sim)),
            sinks=sinks,
            wall=virtual_wall,
            clock=anyio.current_time,
            **kwargs,
        )
        return engine, recorder

    return make


MakeEngine = Callable[..., tuple[Engine, Recorder]]


@asynccontextmanager
async def running(engine: Engine) -> AsyncIterator[Engine]:
    """The engine running in a task group, cancelled on the way out."""
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        try:
            yield engine
        finally:
            tg.cancel_scope.cancel()


async def until(predicate: Callable[[], object], what: str, within: float = 10.0) -> None:
    """Wait until ``predicate`` holds (it reads the simulator or the events, which signal
    nothing); ``within`` only guards against a hang."""
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


async def idle(engine: Engine, within: float = 10.0) -> None:
    with anyio.fail_after(within):
        await engine.wait_idle()


def spec(batch_id: str, **fields: Any) -> BatchSpec:
    fields.setdefault("total_files", 20)
    fields.setdefault("duration_seconds", 0.2)
    return BatchSpec(VS, batch_id, **fields)


def now(engine: Engine, batch_id: str) -> Watch:
    """The engine's record of the watch as it is now."""
    watch = engine.get(VS, batch_id)
    assert watch is not None
    return watch


def counts(sim: Simulator, batch_id: str) -> dict[str, int]:
    result: dict[str, int] = sim.truth(batch_id, failed_files=False)["file_counts"]
    return result


# -- many batches, a changing watch list -------------------------------------------------------


@virtual_time
async def test_many_batches_are_watched_concurrently(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """Twenty-five batches are polled side by side, and each ends once, as the server says."""
    ids = sim.add_template(25, spec("tpl", failed_files=2, duration_seconds=1.0), "vsfb_many_")
    engine, recorder = make_engine()
    async with running(engine):
        for batch_id in ids:
            engine.add(VS, batch_id)
        await idle(engine)
    finished = recorder.of(BatchFinished)
    assert sorted(e.batch_id for e in finished) == sorted(ids)
    for event in finished:
        assert event.result.status == "completed"
        assert event.result.file_counts is not None
        assert event.result.file_counts.as_dict() == counts(sim, event.batch_id)
        assert event.result.failed_files_listed == 2
    first_end = recorder.events.index(finished[0])
    seen_before_any_end = {
        e.batch_id for e in recorder.events[:first_end] if isinstance(e, BatchProgressed)
    }
    assert seen_before_any_end == set(ids)


@virtual_time
async def test_watches_are_added_and_removed_while_running(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A watch added to a running engine is polled; a removed one is never polled again."""
    sim.add_batch(spec("vsfb_long", duration_seconds=60))
    engine, recorder = make_engine()
    async with running(engine):
        engine.add(VS, "vsfb_long")
        await until(lambda: recorder.of(BatchProgressed, "vsfb_long"), "first poll")
        assert engine.remove(VS, "vsfb_long")
        polled = sim.stats.requests_for("vsfb_long")
        sim.add_batch(spec("vsfb_short"))
        engine.add(VS, "vsfb_short")
        await idle(engine)
        assert len(engine) == 1
        assert engine.get(VS, "vsfb_long") is None
        assert not engine.remove(VS, "vsfb_long")
    assert sim.stats.requests_for("vsfb_long") == polled
    assert [e.batch_id for e in recorder.of(WatchRemoved)] == ["vsfb_long"]
    assert [e.batch_id for e in recorder.of(BatchFinished)] == ["vsfb_short"]


@virtual_time
async def test_too_many_watches_are_refused(make_engine: MakeEngine) -> None:
    """Past ``max_watches`` a new watch is refused; an existing one is returned as it is."""
    engine, _ = make_engine(dataclasses.replace(FAST, max_watches=2))
    try:
        first, new = engine.add(VS, "vsfb_a")
        engine.add(VS, "vsfb_b")
        with pytest.raises(TooManyWatches, match="max_watches = 2"):
            engine.add(VS, "vsfb_c")
        again, new_again = engine.add(VS, "vsfb_a")
        assert (new, new_again) == (True, False)
        assert again is first
        engine.remove(VS, "vsfb_b")
        assert engine.add(VS, "vsfb_c")[1]
        assert len(engine) == 2
    finally:
        await engine.client.aclose()


async def test_the_watches_of_a_store_share_one_string_of_its_id(make_engine: MakeEngine) -> None:
    """Each watch of a store, and its key in the list, holds the one interned string of the
    store's id, not the copy it was added with (one per watch, 10,000 from a config file)."""
    engine, _ = make_engine()
    try:
        copies = ["".join(["vs_", "shared"]) for _ in range(3)]
        assert copies[0] is not copies[1]
        for n, vs in enumerate(copies):
            engine.add(vs, f"vsfb_{n}")
        held = [w.vector_store_id for w in engine.watches()]
        keys = [key[0] for key in engine._entries]
        assert len({id(s) for s in held + keys}) == 1
    finally:
        await engine.client.aclose()


@virtual_time
async def test_finished_watches_do_not_count_toward_max_watches(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A watch that ended waits for retention without taking a place among ``max_watches``."""
    sim.add_batches([spec("vsfb_done_1"), spec("vsfb_done_2")])
    engine, _ = make_engine(dataclasses.replace(FAST, max_watches=2))
    async with running(engine):
        engine.add(VS, "vsfb_done_1")
        engine.add(VS, "vsfb_done_2")
        with pytest.raises(TooManyWatches, match="2 unfinished"):
            engine.add(VS, "vsfb_third")
        await idle(engine)
        sim.add_batch(spec("vsfb_third"))
        assert engine.add(VS, "vsfb_third")[1]
        assert (len(engine), engine.unfinished) == (3, 1)


# -- how a watch ends --------------------------------------------------------------------------


@virtual_time
async def test_finished_batch_reports_each_failed_file(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A batch that ends with failed files gives one file_failed per file, then one
    BatchFinished with the counts and the failures by code."""
    sim.add_batch(spec("vsfb_fail30", total_files=250, failed_files=30))
    engine, recorder = make_engine()
    async with running(engine):
        engine.add(VS, "vsfb_fail30")
        await idle(engine)
    truth = sim.truth("vsfb_fail30")
    failed = recorder.of(FileFailedEvent, "vsfb_fail30")
    assert [e.file.id for e in failed] == [f["id"] for f in truth["failed_files"]]
    assert [e.file.last_error.code if e.file.last_error else None for e in failed] == [
        f["code"] for f in truth["failed_files"]
    ]
    result = recorder.result("vsfb_fail30")
    assert result.status == "completed"
    assert result.file_counts is not None
    assert result.file_counts.as_dict() == truth["file_counts"]
    assert dict(result.failed_by_code) == Counter(f["code"] for f in truth["failed_files"])
    assert result.failed_files_listed == 30
    assert (result.failed_files_complete, result.failed_files_truncated) == (True, False)
    assert not result.clean
    last_file_failed = max(recorder.events.index(e) for e in failed)
    assert recorder.events.index(recorder.of(BatchFinished)[0]) > last_file_failed


@virtual_time
async def test_clean_batch_is_not_listed_nor_polled_after_its_end(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A batch that completes with no failed file ends clean, without a file-list request, and
    no request for it follows while other watches go on."""
    sim.add_batches([spec("vsfb_clean"), spec("vsfb_goes_on", duration_seconds=60)])
    engine, recorder = make_engine()
    async with running(engine):
        engine.add(VS, "vsfb_clean")
        engine.add(VS, "vsfb_goes_on")
        await until(lambda: recorder.of(BatchFinished, "vsfb_clean"), "clean batch ended")
        ended = sim.stats.requests_for("vsfb_clean")
        other = sim.stats.requests_for("vsfb_goes_on")
        await until(lambda: sim.stats.requests_for("vsfb_goes_on") >= other + 5, "other polled")
        assert sim.stats.requests_for("vsfb_clean") == ended
    result = recorder.result("vsfb_clean")
    assert result.clean
    assert result.failed_files == ()
    assert sim.stats.requests_for("vsfb_clean", "list") == 0
    assert recorder.of(FileFailedEvent) == []


@pytest.mark.parametrize(
    ("final_status", "fields", "expected"),
    [
        ("failed", {"failed_files": 4}, {"failed": 4, "completed": 16, "cancelled": 0}),
        ("cancelled", {"cancelled_files": 5}, {"failed": 0, "completed": 15, "cancelled": 5}),
    ],
)
@virtual_time
async def test_failed_and_cancelled_batches_end_so(
    sim: Simulator,
    make_engine: MakeEngine,
    final_status: str,
    fields: dict[str, int],
    expected: dict[str, int],
) -> None:
    """A batch ending failed or cancelled ends its watch with that status and its counts."""
    sim.add_batch(spec("vsfb_end", final_status=final_status, **fields))
    engine, recorder = make_engine()
    async with running(engine):
        engine.add(VS, "vsfb_end")
        await idle(engine)
    result = recorder.result("vsfb_end")
    assert result.status == final_status
    assert result.file_counts is not None
    assert {k: result.file_counts.as_dict()[k] for k in expected} == expected
    assert result.failed_files_listed == expected["failed"]
    assert not result.clean
    assert now(engine, "vsfb_end").phase is Phase.FINISHED


@virtual_time
async def test_deadline_times_out_without_cancelling(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A batch still running at its deadline ends ``timed_out``, and is left alone."""
    sim.add_batch(spec("vsfb_slow", duration_seconds=60))
    engine, recorder = make_engine(dataclasses.replace(FAST, deadline_seconds=0.3))
    async with running(engine):
        engine.add(VS, "vsfb_slow")
        await idle(engine)
    result = recorder.result("vsfb_slow")
    assert result.status == "timed_out"
    assert "deadline" in result.note
    assert recorder.of(BatchCancelRequested) == []
    assert sim.stats.requests_for("vsfb_slow", "cancel") == 0
    assert sim.truth("vsfb_slow")["cancel_requested"] is False


@pytest.mark.parametrize("where", ["engine", "watch"])
@virtual_time
async def test_deadline_cancels_through_the_api_when_asked(
    sim: Simulator, make_engine: MakeEngine, where: str
) -> None:
    """With cancel_on_timeout (engine-wide or per watch), the deadline cancels the batch."""
    sim.add_batch(spec("vsfb_cancel_me", duration_seconds=60))
    settings = dataclasses.replace(FAST, deadline_seconds=0.3, cancel_on_timeout=where == "engine")
    options = WatchOptions(cancel_on_timeout=True) if where == "watch" else None
    engine, recorder = make_engine(settings)
    async with running(engine):
        engine.add(VS, "vsfb_cancel_me", options=options)
        await idle(engine)
    result = recorder.result("vsfb_cancel_me")
    assert result.status == "timed_out"
    assert "cancelled" in result.note
    assert [e.ok for e in recorder.of(BatchCancelRequested)] == [True]
    assert sim.stats.requests_for("vsfb_cancel_me", "cancel") == 1
    assert sim.truth("vsfb_cancel_me")["cancel_requested"] is True


@virtual_time
async def test_stalled_batch_is_flagged_then_unflagged(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A batch that stops progressing is flagged stalled once, and resumed when it moves."""
    sim.add_batch(spec("vsfb_stall", duration_seconds=0.4, stall_after_files=10, stall_seconds=0.8))
    engine, recorder = make_engine(dataclasses.replace(FAST, stall_after_seconds=0.25))
    async with running(engine):
        engine.add(VS, "vsfb_stall")
        await until(lambda: recorder.of(BatchStalled), "stalled")
        assert now(engine, "vsfb_stall").stalled
        assert now(engine, "vsfb_stall").state == "stalled"
        assert now(engine, "vsfb_stall").eta_seconds is None  # no ETA while stalled
        await idle(engine)
    [stalled] = recorder.of(BatchStalled)
    [resumed] = recorder.of(BatchResumed)
    assert stalled.stalled_seconds >= 0.25
    assert stalled.file_counts.completed == 10
    assert resumed.file_counts.completed > 10
    events = recorder.events
    assert (
        events.index(stalled) < events.index(resumed) < events.index(recorder.of(BatchFinished)[0])
    )
    assert not now(engine, "vsfb_stall").stalled
    assert recorder.result("vsfb_stall").status == "completed"


@virtual_time
async def test_vanished_batch_ends_not_found_after_a_second_look(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A batch that starts answering 404 ends ``not_found`` after the confirming poll, and is
    not polled again."""
    sim.add_batches(
        [spec("vsfb_gone", duration_seconds=60), spec("vsfb_other", duration_seconds=60)]
    )
    engine, recorder = make_engine()
    async with running(engine):
        engine.add(VS, "vsfb_gone")
        engine.add(VS, "vsfb_other")
        await until(lambda: recorder.of(BatchProgressed, "vsfb_gone"), "first poll")
        sim.vanish("vsfb_gone")
        before = sim.stats.requests_for("vsfb_gone")
        await until(lambda: recorder.of(BatchFinished, "vsfb_gone"), "not found")
        after = sim.stats.requests_for("vsfb_gone")
        other = sim.stats.requests_for("vsfb_other")
        await until(lambda: sim.stats.requests_for("vsfb_other") >= other + 5, "other polled")
        assert sim.stats.requests_for("vsfb_gone") == after
    assert after - before == 2
    result = recorder.result("vsfb_gone")
    assert result.status == "not_found"
    assert "not found" in result.note
    assert [e.error for e in recorder.of(PollFailed, "vsfb_gone")] == ["NotFound"]


@virtual_time
async def test_unknown_status_is_reported_once_and_not_terminal(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A status the API does not document is reported once, and the watch goes on."""
    sim.add_batch(
        spec("vsfb_odd", faults=(Fault(FaultKind.UNKNOWN_STATUS, value="paused", times=3),))
    )
    engine, recorder = make_engine()
    async with running(engine):
        engine.add(VS, "vsfb_odd")
        await idle(engine)
    assert [e.status for e in recorder.of(StatusUnknown)] == ["paused"]
    assert recorder.result("vsfb_odd").status == "completed"


@virtual_time
async def test_failed_file_cap_keeps_the_count_exact(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """Past ``max_failed_files`` files are counted but not kept, and the result says so."""
    sim.add_batch(spec("vsfb_many_failed", total_files=300, failed_files=150, duration_seconds=0))
    engine, recorder = make_engine(dataclasses.replace(FAST, max_failed_files=10))
    async with running(engine):
        engine.add(VS, "vsfb_many_failed")
        await idle(engine)
    result = recorder.result("vsfb_many_failed")
    assert result.failed_files_listed == 150
    assert len(result.failed_files) == 10
    assert result.failed_files_truncated
    assert result.failed_files_complete
    assert sum(result.failed_by_code.values()) == 150
    assert len(recorder.of(FileFailedEvent)) == 10
    assert sim.stats.requests_for("vsfb_many_failed", "list") == 2


@virtual_time
async def test_broken_file_list_ends_incomplete(sim: Simulator, make_engine: MakeEngine) -> None:
    """A file list whose pagination loops ends the watch with what it read, marked incomplete."""
    sim.add_batch(
        spec(
            "vsfb_loop",
            total_files=300,
            failed_files=150,
            duration_seconds=0,
            faults=(Fault(FaultKind.PAGINATION_LOOP),),
        )
    )
    engine, recorder = make_engine()
    async with running(engine):
        engine.add(VS, "vsfb_loop")
        await idle(engine)
    result = recorder.result("vsfb_loop")
    assert not result.failed_files_complete
    assert result.failed_files_listed == 100
    assert "incomplete" in result.note


def fresh_ids_forever(total: int, failed: int) -> tuple[httpx.MockTransport, Counter[str]]:
    """A server whose batch ended with ``failed`` of ``total`` files failed, and whose file
    list hands out a page of fresh ids forever (the simulator cannot: its ids are real)."""
    requests: Counter[str] = Counter()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/files"):
            requests["list"] += 1
            page = requests["list"]
            data = [
                {"id": f"file-{page}-{n}", "status": "failed", "last_error": None}
                for n in range(100)
            ]
            return httpx.Response(200, json={"object": "list", "data": data, "has_more": True})
        requests["retrieve"] += 1
        counts = {"completed": total - failed, "failed": failed, "total": total}
        body = {"id": "vsfb_endless", "status": "completed", "file_counts": counts}
        return httpx.Response(200, json={**body, "vector_store_id": VS})

    return httpx.MockTransport(handler), requests


@pytest.mark.parametrize(("total", "pages"), [(10, 6), (2_000, 27), (10_000_000, 40)])
@virtual_time
async def test_a_list_of_fresh_ids_forever_stops_at_what_the_batch_needs(
    make_engine: MakeEngine, total: int, pages: int
) -> None:
    """A failed-file list that hands out fresh ids forever stops at the pages the batch's file
    count needs plus a margin (at most ``max_file_pages``), marked incomplete, not at 10,000."""
    transport, requests = fresh_ids_forever(total, failed=3)
    engine, recorder = make_engine(
        dataclasses.replace(FAST, max_file_pages=40), transport=transport
    )
    async with running(engine):
        engine.add(VS, "vsfb_endless")
        await idle(engine)
    result = recorder.result("vsfb_endless")
    assert requests["list"] == pages
    assert not result.failed_files_complete
    assert result.failed_files_listed == pages * 100
    assert f"more than {pages} pages" in result.note


@virtual_time
async def test_eta_is_known_while_in_progress(sim: Simulator, make_engine: MakeEngine) -> None:
    """Once a batch has moved, its watch carries an ETA; a finished one has none."""
    sim.add_batch(spec("vsfb_eta", total_files=100, duration_seconds=1.0))
    engine, recorder = make_engine()
    async with running(engine):
        engine.add(VS, "vsfb_eta")
        await until(lambda: now(engine, "vsfb_eta").eta_seconds is not None, "an ETA")
        watch = now(engine, "vsfb_eta")
        assert watch.phase is Phase.WATCHING
        assert watch.eta_seconds is not None
        assert watch.eta_seconds > 0
        assert watch.as_dict()["eta_seconds"] is not None
        await idle(engine)
    in_progress = [e for e in recorder.of(BatchProgressed) if e.status == "in_progress"]
    assert any(e.eta_seconds is not None for e in in_progress)
    assert now(engine, "vsfb_eta").eta_seconds is None


@virtual_time
async def test_request_the_api_keeps_rejecting_ends_the_watch(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A retrieve the API rejects as a bad request, again and again, ends the watch instead of
    being retried for ever."""
    sim.add_batch(spec("vsfb_rejected", duration_seconds=60))
    sim.required_query = {"api-version": None}
    engine, recorder = make_engine(rng=lambda: 0.0)
    async with running(engine):
        engine.add(VS, "vsfb_rejected")
        await until(
            lambda: recorder.of(BatchFinished) or len(recorder.of(PollFailed)) >= 5, "rejections"
        )
    assert [e.http_status for e in recorder.of(PollFailed)][:1] == [400]
    assert recorder.result("vsfb_rejected").status == "rejected"
    assert len(recorder.of(PollFailed, "vsfb_rejected")) == 2  # the third rejection ends it


# -- refused keys, 429s, transient faults -------------------------------------------------------


@virtual_time
async def test_refused_key_holds_polling_to_one_probe_until_it_works(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A refused key is reported once; while it is refused the engine sends one probe per
    ``auth_retry_seconds`` for all watches; when the key works again it says so and every
    watch is polled again."""
    ids = ["vsfb_k1", "vsfb_k2", "vsfb_k3"]
    sim.add_batches([spec(b, duration_seconds=60) for b in ids])
    sim.set_api_key(KEY)
    retry = 0.4
    engine, recorder = make_engine(
        dataclasses.replace(FAST, max_concurrency=1, auth_retry_seconds=retry), api_key=KEY
    )

    def refused() -> tuple[list[Any], list[Any]]:
        """The 401s: those already under way when the key was refused, then the probes (half
        a probe period tells them apart)."""
        failures = [r for r in sim.stats.recent(0) if r.status == 401]
        if not failures:
            return [], []
        split = failures[0].at + retry / 2
        return [r for r in failures if r.at < split], [r for r in failures if r.at >= split]

    async with running(engine):
        for batch_id in ids:
            engine.add(VS, batch_id)
        await until(lambda: all(recorder.of(BatchProgressed, b) for b in ids), "first polls")
        sim.set_api_key("sk-engine-some-other-key-987")
        await until(lambda: recorder.of(AuthFailed), "auth_failed")
        await until(lambda: len(refused()[1]) >= 2, "two probes")
        sim.set_api_key(KEY)
        await until(lambda: recorder.of(AuthRecovered), "auth_recovered")
        polled = {b: sim.stats.requests_for(b) for b in ids}
        await until(lambda: all(sim.stats.requests_for(b) > polled[b] for b in ids), "polled again")
        assert engine.auth_error is None
    burst, probes = refused()
    # Requests already on their way when the key was refused: the one in flight, the next one.
    assert len(burst) <= 2
    assert len(probes) >= 2
    gaps = [b.at - a.at for a, b in zip([burst[-1], *probes], probes, strict=False)]
    assert min(gaps) >= retry - 0.01
    assert len(recorder.of(AuthFailed)) == 1
    assert len(recorder.of(AuthRecovered)) == 1


@virtual_time
async def test_refused_key_found_working_by_a_file_listing_is_recovered(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """When the probe that proves the key works again is a file listing, the engine says the
    credentials recovered at once instead of waiting for another probe."""
    sim.add_batch(spec("vsfb_lister", total_files=30, failed_files=3, duration_seconds=0))
    sim.set_api_key(KEY)

    class KeyFlipper(httpx.AsyncBaseTransport):
        """The simulator's app; once the lister's batch was shown terminal, the server's key
        changes, so that its file listing is refused."""

        def __init__(self) -> None:
            self.inner = httpx.ASGITransport(SimulatorApp(sim))
            self.flipped = False

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            if not self.flipped and request.url.path.endswith("/vsfb_lister"):
                self.flipped = True
                sim.set_api_key("sk-engine-some-other-key-987")
            return response

        async def aclose(self) -> None:
            await self.inner.aclose()

    auth_at_finish: list[object] = []
    engine: Engine | None = None

    def on_finish(event: Event) -> None:
        if isinstance(event, BatchFinished) and engine is not None:
            auth_at_finish.append(engine.auth_error)

    engine, recorder = make_engine(
        dataclasses.replace(FAST, max_concurrency=1, auth_retry_seconds=0.3),
        api_key=KEY,
        transport=KeyFlipper(),
        sinks=[on_finish],
    )
    async with running(engine):
        engine.add(VS, "vsfb_lister")
        await until(lambda: recorder.of(AuthFailed), "auth_failed")
        sim.set_api_key(KEY)
        await until(lambda: recorder.of(BatchFinished, "vsfb_lister"), "lister finished")
    assert auth_at_finish == [None]
    assert [e.batch_id for e in recorder.of(AuthRecovered)] == ["vsfb_lister"]
    assert recorder.result("vsfb_lister").failed_files_listed == 3


@virtual_time
async def test_429_pauses_every_watch(sim: Simulator, make_engine: MakeEngine) -> None:
    """After a 429 with a wait, no watch sends anything to the server before the wait is over."""
    ids = ["vsfb_r1", "vsfb_r2", "vsfb_r3"]
    sim.add_batches([spec(b, duration_seconds=60) for b in ids])
    engine, recorder = make_engine(dataclasses.replace(FAST, max_concurrency=1))
    async with running(engine):
        for batch_id in ids:
            engine.add(VS, batch_id)
        await until(lambda: all(recorder.of(BatchProgressed, b) for b in ids), "first polls")
        sim.inject(Fault(FaultKind.RATE_LIMIT, times=1, retry_after_seconds=0.4))
        await until(lambda: recorder.of(PollFailed), "the 429")
        [limited] = [r for r in sim.stats.recent(0) if r.status == 429]
        await until(
            lambda: len([r for r in sim.stats.recent(0) if r.at > limited.at]) >= 3, "polls"
        )
    [failed] = recorder.of(PollFailed)
    assert failed.error == "RateLimited"
    assert failed.http_status == 429
    assert failed.request_id == limited.request_id
    assert failed.retry_in >= 0.4
    later = [r for r in sim.stats.recent(0) if r.at > limited.at]
    assert {r.batch_id for r in later} >= set(ids) - {limited.batch_id}
    assert min(r.at for r in later) - limited.at >= 0.4 - 0.005


@virtual_time
async def test_transient_faults_are_retried_with_backoff_and_logged(
    sim: Simulator, make_engine: MakeEngine, logs: list[dict[str, Any]]
) -> None:
    """5xx replies are retried after growing waits, each logged with its request id, and the
    watch still ends as the batch did."""
    sim.add_batch(
        spec(
            "vsfb_flaky",
            duration_seconds=0.3,
            faults=(Fault(FaultKind.SERVER_ERROR, status=503, times=3),),
        )
    )
    engine, recorder = make_engine(rng=lambda: 0.999, sinks=[log_event])
    async with running(engine):
        engine.add(VS, "vsfb_flaky")
        await idle(engine)
    failed_ids = [r.request_id for r in sim.stats.recent(0) if r.status == 503]
    logged = [e for e in logs if e["event"] == "poll_failed"]
    assert [e["request_id"] for e in logged] == failed_ids
    assert len(logged) == 3
    assert {(e["error"], e["http_status"], e["log_level"]) for e in logged} == {
        ("Transient", 503, "warning")
    }
    assert [e["retry_in"] for e in logged] == [0.05, 0.1, 0.2]
    assert [e["event"] for e in logs if e["event"].startswith("batch_")][-1] == "batch_completed"
    assert recorder.result("vsfb_flaky").status == "completed"


@virtual_time
async def test_file_list_errors_are_retried_with_backoff(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A file list that fails is retried after a wait, even once the deadline has passed, and
    the failed files are still all reported (the first 502 goes to the stuck files' page)."""
    sim.add_batch(
        spec(
            "vsfb_list_flaky",
            total_files=40,
            failed_files=8,
            duration_seconds=0.2,
            stall_after_files=10,
            stall_seconds=60,
            faults=(Fault(FaultKind.SERVER_ERROR, status=502, endpoint="list", times=3),),
        )
    )
    engine, recorder = make_engine(
        dataclasses.replace(FAST, deadline_seconds=0.3), rng=lambda: 0.999
    )
    async with running(engine):
        engine.add(VS, "vsfb_list_flaky")
        await idle(engine)
    result = recorder.result("vsfb_list_flaky")
    assert result.status == "timed_out"
    assert result.failed_files_complete
    assert result.file_counts is not None
    assert result.failed_files_listed == result.file_counts.failed == 2
    assert "the stuck files could not be read" in result.note
    retries = recorder.of(PollFailed, "vsfb_list_flaky")
    assert [e.http_status for e in retries] == [502, 502]
    assert all(e.retry_in > 0 for e in retries)


# -- servers that do not behave as the spec says -------------------------------------------------


@virtual_time
async def test_a_server_ignoring_the_failed_filter_lists_only_failed_files(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """When the list ignores ``filter=failed`` and returns every file, only the files whose own
    status is failed count; the note says the others were left out."""
    sim.add_batch(
        spec(
            "vsfb_unfiltered",
            total_files=30,
            failed_files=4,
            faults=(Fault(FaultKind.IGNORE_FILTER),),
        )
    )
    engine, recorder = make_engine()
    async with running(engine):
        engine.add(VS, "vsfb_unfiltered")
        await idle(engine)
    result = recorder.result("vsfb_unfiltered")
    truth = sim.truth("vsfb_unfiltered")
    assert [f.id for f in result.failed_files] == [f["id"] for f in truth["failed_files"]]
    assert result.failed_files_listed == 4
    assert result.failed_files_complete
    assert "26 files that had not failed" in result.note


@virtual_time
async def test_a_reply_for_another_batch_ends_rejected(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A server that answers for another batch is not retried for ever: the watch ends
    ``rejected`` and says why."""
    sim.add_batch(spec("vsfb_asked", faults=(Fault(FaultKind.WRONG_ID),)))
    engine, recorder = make_engine()
    async with running(engine):
        engine.add(VS, "vsfb_asked")
        await idle(engine)
    result = recorder.result("vsfb_asked")
    assert result.status == "rejected"
    assert "vsfb_invented" in result.note
    assert sim.stats.requests_for("vsfb_asked") == FAST.rejections_to_end


@virtual_time
async def test_an_expired_batch_ends_expired(sim: Simulator, make_engine: MakeEngine) -> None:
    """A 400 saying the batch has expired ends the watch ``expired`` at the first answer."""
    sim.add_batch(spec("vsfb_old", faults=(Fault(FaultKind.EXPIRE),)))
    engine, recorder = make_engine()
    async with running(engine):
        engine.add(VS, "vsfb_old")
        await idle(engine)
    result = recorder.result("vsfb_old")
    assert result.status == "expired"
    assert "has expired" in result.note
    assert sim.stats.requests_for("vsfb_old") == 1


@virtual_time
async def test_a_gap_between_the_count_and_the_list_is_reported(make_engine: MakeEngine) -> None:
    """A batch that counts five failed files but lists two ends with the two, marked
    incomplete, and the note gives both numbers."""

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/files"):
            data = [{"id": f"file-{i}", "status": "failed", "last_error": None} for i in range(2)]
            return httpx.Response(200, json={"data": data, "has_more": False})
        counts = {"in_progress": 0, "completed": 5, "failed": 5, "cancelled": 0, "total": 10}
        body = {"id": "vsfb_gap", "status": "completed", "file_counts": counts}
        return httpx.Response(200, json={**body, "vector_store_id": VS})

    engine, recorder = make_engine(transport=httpx.MockTransport(server))
    async with running(engine):
        engine.add(VS, "vsfb_gap")
        await idle(engine)
    result = recorder.result("vsfb_gap")
    assert result.failed_files_listed == 2
    assert not result.failed_files_complete
    assert "counts 5 failed files but the list gave 2" in result.note
    assert [f.last_error for f in result.failed_files] == [None, None]


@virtual_time
async def test_a_403_holds_only_its_vector_store(sim: Simulator, make_engine: MakeEngine) -> None:
    """Access denied to one vector store holds its watches only; the others go on to their
    end, and the engine's key is not taken as refused."""

    class DenyOneStore(httpx.AsyncBaseTransport):
        """The simulator's app, but 403 for everything in ``vs_denied``."""

        def __init__(self) -> None:
            self.inner = httpx.ASGITransport(SimulatorApp(sim))

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if "/vs_denied/" in request.url.path:
                error = {"error": {"message": "No access to vector store vs_denied."}}
                return httpx.Response(403, json=error)
            return await self.inner.handle_async_request(request)

    sim.add_batches([spec("vsfb_free"), BatchSpec("vs_denied", "vsfb_denied", 20, 0.2)])
    engine, recorder = make_engine(
        dataclasses.replace(FAST, auth_retry_seconds=30.0), transport=DenyOneStore()
    )
    async with running(engine):
        engine.add(VS, "vsfb_free")
        engine.add("vs_denied", "vsfb_denied")
        await until(lambda: recorder.of(BatchFinished, "vsfb_free"), "the free batch ended")
        assert engine.auth_error is None
        assert set(engine.refusals.stores) == {"vs_denied"}
        assert [e.batch_id for e in recorder.of(AuthFailed)] == ["vsfb_denied"]
    assert recorder.result("vsfb_free").status == "completed"


@virtual_time
async def test_under_a_full_budget_a_watch_never_polled_goes_first(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """When more watches are due than the budget serves, a newly added watch is polled within
    the next few requests instead of waiting behind every watch already due."""
    ids = sim.add_template(8, spec("tpl", duration_seconds=3600), "vsfb_busy_")
    sim.add_batch(spec("vsfb_newcomer", duration_seconds=3600))
    settings = dataclasses.replace(
        FAST,
        poll=PollSettings(interval=0.5, min_interval=0.1, max_interval=5.0, adaptive=False),
        max_requests_per_minute=60,  # one a second: eight watches at 0.5 s want sixteen
        max_concurrency=1,
    )
    engine, _ = make_engine(settings)
    async with running(engine):
        for batch_id in ids:
            engine.add(VS, batch_id)
        await until(
            lambda: all(sim.stats.requests_for(b) >= 2 for b in ids), "two rounds", within=120
        )
        before = len(sim.stats.recent())
        engine.add(VS, "vsfb_newcomer")
        await until(
            lambda: sim.stats.requests_for("vsfb_newcomer") >= 1, "the newcomer", within=120
        )
    order = [r.batch_id for r in sim.stats.recent()[before:]]
    # In flight when it was added: the one the worker holds, the one being handed to it.
    assert order.index("vsfb_newcomer") <= 2, order


# -- file names and stuck files ------------------------------------------------------------------


@virtual_time
async def test_failed_files_are_named_once_each_within_the_budget(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """Each kept failed file gets its name from ``GET /files/{id}``, through the same client;
    a file that cannot be looked up keeps its id and says why; a name is asked for once."""
    sim.add_batch(spec("vsfb_named", total_files=30, failed_files=4))
    sim.inject(Fault(FaultKind.SERVER_ERROR, endpoint="file", times=1))
    engine, recorder = make_engine(dataclasses.replace(FAST, max_failed_files=3))
    async with running(engine):
        engine.add(VS, "vsfb_named")
        await idle(engine)
    result = recorder.result("vsfb_named")
    assert result.failed_files_listed == 4
    assert len(result.failed_files) == 3  # bounded by state.max_failed_files
    first, *rest = [f.as_dict() for f in result.failed_files]
    assert first["filename"] is None
    assert "server error 500" in first["filename_error"]
    assert all(f["filename"].startswith("document-") and f["bytes"] > 0 for f in rest)
    assert "filename_error" not in rest[0]
    assert sim.stats.by_endpoint["file"] == 3
    assert len(engine.names) == 2  # the failed lookup is not remembered


@virtual_time
async def test_a_stalled_batch_reports_its_stuck_files_by_name(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """When the stall is flagged, one page of the files in progress (at most 20) is read and
    named; the watch shows them with how long the batch has made no progress."""
    sim.add_batch(
        spec(
            "vsfb_stuck",
            total_files=40,
            duration_seconds=0.4,
            stall_after_files=10,
            stall_seconds=5.0,
        )
    )
    settings = dataclasses.replace(FAST, stall_after_seconds=1.0)
    engine, recorder = make_engine(settings)
    async with running(engine):
        engine.add(VS, "vsfb_stuck")
        await until(lambda: now(engine, "vsfb_stuck").stuck_files, "stuck files listed")
        stuck = now(engine, "vsfb_stuck").stuck_files
        assert len(stuck) == 20
        assert all(s.name.filename and s.stalled_seconds >= 1.0 for s in stuck)
        assert [e.stuck_files for e in recorder.of(StuckFilesListed, "vsfb_stuck")] == [stuck]
        await idle(engine)
    assert recorder.result("vsfb_stuck").stuck_files == ()  # it resumed and completed
    assert sim.stats.by_endpoint["file"] == 20


@virtual_time
async def test_a_deadline_names_the_stuck_files_in_the_result(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A batch still running at its deadline ends timed out, naming the files in progress."""
    sim.add_batch(spec("vsfb_late", total_files=10, duration_seconds=100.0))
    engine, recorder = make_engine(dataclasses.replace(FAST, deadline_seconds=2.0))
    async with running(engine):
        engine.add(VS, "vsfb_late")
        await idle(engine)
    result = recorder.result("vsfb_late")
    assert result.status == "timed_out"
    assert [s.id for s in result.stuck_files] == [
        f["id"] for f in _in_progress_files(sim, "vsfb_late")
    ]
    assert all(s.stalled_seconds >= 0 and s.name.filename for s in result.stuck_files)
    assert result.as_dict()["stuck_files"][0]["filename"].startswith("document-")


def _in_progress_files(sim: Simulator, batch_id: str) -> list[dict[str, Any]]:
    found = sim.batch(batch_id)
    progress = found.progress(sim.clock(), sim.cancel_seconds)
    done = progress.file_counts.completed + progress.file_counts.failed
    return [{"id": found.file_id(i)} for i in range(done, found.spec.total_files)]


# -- the automatic retry -------------------------------------------------------------------------


@virtual_time
async def test_a_retry_policy_sends_failed_files_again_and_watches_the_chain(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A batch that ends with failed files of the policy's codes is retried as a new batch the
    engine watches (linked both ways), and its own failures again, up to ``max_attempts``."""
    sim.created_batch_failures = 1.0  # every retried file fails again
    sim.created_batch_seconds = 0.2
    sim.add_batch(spec("vsfb_auto", total_files=12, failed_files=6))
    engine, recorder = make_engine()
    policy = RetryPolicy(codes=("server_error",), max_attempts=2)
    async with running(engine):
        engine.add(VS, "vsfb_auto", options=WatchOptions(retry=policy))
        await until(lambda: len(recorder.of(BatchFinished)) == 3, "the chain ended")
        await idle(engine)
    first = recorder.result("vsfb_auto")
    [second_id] = first.retried_as
    second = recorder.result(second_id)
    [third_id] = second.retried_as
    third = recorder.result(third_id)
    assert second.retry_of == "vsfb_auto"
    assert third.retry_of == second_id
    assert third.retried_as == ()  # two attempts, no more
    server_errors = [
        f for f in sim.truth("vsfb_auto")["failed_files"] if f["code"] == "server_error"
    ]
    assert second.file_counts is not None
    assert second.file_counts.total == len(server_errors)
    retried = recorder.of(BatchRetried)
    assert [(e.batch_id, e.attempt) for e in retried] == [("vsfb_auto", 1), (second_id, 2)]
    assert retried[0].files_by_code == {"server_error": len(server_errors)}
    assert now(engine, second_id).retry_attempt == 1


@virtual_time
async def test_a_retry_request_that_fails_is_sent_again_with_the_same_key(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """A 503 on the create, then a reply garbled on the way (the batch was made): the request
    goes out again with the same Idempotency-Key, and exactly one retry batch exists."""
    sim.add_batch(spec("vsfb_flaky_retry", total_files=9, failed_files=3, duration_seconds=0))
    for f in sim.truth("vsfb_flaky_retry")["failed_files"]:
        sim.detach(VS, f["id"])  # so that the first request to reach the endpoint makes it
    sim.inject(Fault(FaultKind.SERVER_ERROR, status=503, endpoint="create_batch", times=1))
    sim.inject(Fault(FaultKind.TRUNCATED_JSON, endpoint="create_batch", times=1))
    engine, recorder = make_engine()
    policy = RetryPolicy(codes=("server_error", "unsupported_file", "invalid_file"))
    async with running(engine):
        engine.add(VS, "vsfb_flaky_retry", options=WatchOptions(retry=policy))
        await until(lambda: recorder.of(BatchRetried), "the retry was made")
        await idle(engine)
    created = [b for b in sim.batch_ids() if b.startswith("vsfb_created")]
    assert len(created) == 1
    # A 503, made but its reply garbled, then the same batch again for the same key.
    assert sim.stats.by_endpoint["create_batch"] == 3
    assert [e.http_status for e in recorder.of(PollFailed, "vsfb_flaky_retry")] == [503, 200]
    assert recorder.result("vsfb_flaky_retry").retried_as == tuple(created)


@virtual_time
async def test_a_retry_reads_every_failed_file_when_the_listing_kept_fewer(
    sim: Simulator, make_engine: MakeEngine
) -> None:
    """With more failed files than ``max_failed_files`` keeps, the retry reads the list again
    and sends every one of the policy's codes; with all kept, it reads no list again."""
    sim.add_batch(spec("vsfb_many", total_files=30, failed_files=12))
    sim.add_batch(spec("vsfb_few", total_files=30, failed_files=3))
    engine, recorder = make_engine(dataclasses.replace(FAST, max_failed_files=4))
    policy = RetryPolicy(codes=("server_error", "invalid_file", "unsupported_file"))
    async with running(engine):
        for batch_id in ("vsfb_many", "vsfb_few"):
            engine.add(VS, batch_id, options=WatchOptions(retry=policy))
        await until(lambda: len(recorder.of(BatchRetried)) == 2, "both retried")
        await idle(engine)
    for batch_id, failed in (("vsfb_many", 12), ("vsfb_few", 3)):
        [made] = recorder.result(batch_id).retried_as
        assert sim.truth(made)["file_counts"]["total"] == failed
    assert sim.stats.requests_for("vsfb_many", "list") == 2  # the listing, then the retry's
    assert sim.stats.requests_for("vsfb_few", "list") == 1
