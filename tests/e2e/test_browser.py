"""The pages as a person sees them: Debian's Chromium, driven by Playwright, against the real
daemon watching the demo's batches on the simulator (plus one that stalls and one never seen).

Chromium comes from Debian (``apt-get install chromium``): Playwright's own browser download is
not used. Without it these tests are skipped, and under ``CI`` they fail. Screenshots go to
``test-output/`` (the README's pictures are taken from there).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import DaemonProcess, SimulatorProcess, start_daemon, start_simulator

pytestmark = pytest.mark.e2e

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO = ("clean", "failures", "failed", "cancelled", "slow", "flaky")
VS = "vs_demo"
#: A label that would be markup if the page did not escape it.
HOSTILE = '<img src=x onerror="document.title=1">'


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is not None:
        return path
    if os.environ.get("CI"):
        pytest.fail("chromium is required in CI (apt-get install chromium) to test the pages")
    pytest.skip("chromium is not installed (apt-get install chromium): no browser to test with")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright."""
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is required in CI (the test extra) to test the pages")
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """The daemon watching the demo's six batches, one that stalls and one whose every
    retrieve fails; yields once the demo's batches (but the slow one) have ended."""
    workdir = tmp_path_factory.mktemp("browser")
    sim: SimulatorProcess = start_simulator(["--scenario", "demo"])
    daemon: DaemonProcess | None = None
    try:
        sim.control(
            "POST",
            "batches",
            {
                "vector_store_id": VS,
                "batch_id": "vsfb_stuck",
                "total_files": 40,
                "duration_seconds": 600,
                "stall_after_files": 3,
                "stall_seconds": 600,
            },
        )
        sim.control(
            "POST",
            "batches",
            {
                "vector_store_id": VS,
                "batch_id": "vsfb_unseen",
                "total_files": 10,
                "duration_seconds": 600,
                "faults": [{"kind": "server_error", "endpoint": "retrieve", "status": 503}],
            },
        )
        watches: list[dict[str, Any]] = [
            {"vector_store_id": VS, "batch_id": f"vsfb_demo_{n}", "labels": {"scenario": n}}
            for n in DEMO
        ]
        watches.append(
            {"vector_store_id": VS, "batch_id": "vsfb_stuck", "labels": {"scenario": "stuck"}}
        )
        # Polled every minute (its first poll at once): it reads as stale only after three
        # minutes, however long a busy machine takes to get to the page.
        watches.append(
            {
                "vector_store_id": VS,
                "batch_id": "vsfb_unseen",
                "labels": {"scenario": "unseen"},
                "interval_seconds": 60,
            }
        )
        config = {
            # Every failed file kept is named with a request of its own (150 here): a budget
            # that lets the demo settle well within the 30 s after which a watch never seen
            # reads as stale.
            "api": {"base_url": sim.url, "max_requests_per_minute": 6000},
            "poll": {
                "interval_seconds": 0.5,
                "min_interval_seconds": 0.2,
                "stall_after_seconds": 4,
            },
            "watch": watches,
        }
        daemon = start_daemon(workdir, config)

        def settled() -> bool:
            by_id = {
                w["batch_id"]: w for w in daemon.request("GET", "/v1/watches").json()["watches"]
            }
            ended = all(by_id[f"vsfb_demo_{n}"]["result"] is not None for n in DEMO if n != "slow")
            return (
                ended
                and by_id["vsfb_stuck"]["stalled"]
                and by_id["vsfb_unseen"]["consecutive_failures"] >= 2
            )

        # About 40 s on a quiet machine; beside stress-ng and the three-replica fleet test on
        # the other worker it took over 90 s once. The unseen watch cannot turn stale meanwhile
        # (it is polled every minute).
        daemon.wait_until(settled, timeout=300, what="the demo's batches to end")
        yield daemon
    finally:
        if daemon is not None:
            daemon.stop()
        sim.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 760})
    yield context.new_page()
    context.close()


def _shot(page: Any, name: str, **options: Any) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / name), **options)


def _row(page: Any, batch_id: str) -> Any:
    return page.locator(f'#batches tbody tr[data-batch="{VS}/{batch_id}"]')


def test_the_status_page_shows_each_batch_and_its_trouble(page: Any, demo: DaemonProcess) -> None:
    """Every watched batch is a row; failed, stalled and never-seen batches are marked by colour
    and in words; a cancelled batch shows its cancelled files; a stalled one has no ETA; each
    row links to the batch's page."""
    page.goto(demo.url + "/")
    rows = page.locator("#batches tbody tr")
    assert rows.count() == len(DEMO) + 2

    failed = _row(page, "vsfb_demo_failed")
    assert "row-failed" in failed.get_attribute("class")
    status = failed.locator(".st")
    assert status.inner_text() == "failed"
    assert status.evaluate("e => getComputedStyle(e).color") == "rgb(183, 28, 28)"  # red
    assert "20 failed files" in failed.inner_text()

    failures = _row(page, "vsfb_demo_failures")
    assert failures.get_attribute("data-state") == "completed"
    assert "130 failed files" in failures.locator(".badge.b-failed").inner_text()

    cancelled = _row(page, "vsfb_demo_cancelled")
    assert "row-cancelled" in cancelled.get_attribute("class")
    assert "50 cancelled" in cancelled.locator(".counts").inner_text()

    stuck = _row(page, "vsfb_stuck")
    assert "row-stalled" in stuck.get_attribute("class")
    assert stuck.locator(".badge.b-stalled").inner_text() == "stalled: no progress"
    assert stuck.locator(".eta").inner_text() == "—"
    badge = stuck.locator(".badge.b-stalled")
    assert badge.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(255, 244, 204)"

    unseen = _row(page, "vsfb_unseen")
    assert unseen.get_attribute("data-state") == "not_seen"
    assert unseen.locator(".st").inner_text() == "not yet seen"
    assert "failed poll" in unseen.locator(".badge.b-failing").inner_text()
    assert "server error 503" in unseen.locator(".error").inner_text()

    links = page.locator("#batches a.batch")
    hrefs = {links.nth(i).get_attribute("href") for i in range(links.count())}
    assert f"/batches/{VS}/vsfb_demo_failures" in hrefs
    assert all(h.startswith(f"/batches/{VS}/") for h in hrefs)
    assert page.locator('a[href^="/v1/"]').count() == 0
    assert "api" in page.locator("#api").inner_text().lower()
    _shot(page, "status-page.png")


def test_filters_and_pages_work_in_the_browser(page: Any, demo: DaemonProcess) -> None:
    """Choosing a status in the form keeps only those rows; a label link filters by it; with
    two rows a page, "next" turns the page."""
    page.goto(demo.url + "/")
    page.select_option("select[name=status]", "trouble")
    page.click("form.filters button")
    assert "status=trouble" in page.url
    states = page.locator("#batches tbody tr").evaluate_all("rs => rs.map(r => r.dataset.batch)")
    assert f"{VS}/vsfb_demo_clean" not in states
    assert {f"{VS}/vsfb_demo_failed", f"{VS}/vsfb_stuck", f"{VS}/vsfb_unseen"} <= set(states)

    page.goto(demo.url + "/")
    _row(page, "vsfb_demo_slow").locator("a.label").click()
    assert "label=scenario%3Dslow" in page.url
    assert page.locator("#batches tbody tr").count() == 1

    page.goto(demo.url + "/?per_page=2")
    assert "rows 1–2 of 8" in page.locator(".pager").first.inner_text()
    page.locator('.pager a[rel="next"]').first.click()
    assert "page=2" in page.url
    assert "rows 3–4 of 8" in page.locator(".pager").first.inner_text()


def test_a_batchs_page_shows_its_failed_files_and_progress(page: Any, demo: DaemonProcess) -> None:
    """Following a row's link opens the batch's page: its counts, each failed file with code
    and message, failed files by code, and the progress drawn as a line."""
    page.goto(demo.url + "/")
    _row(page, "vsfb_demo_failures").locator("a.batch").click()
    assert page.url == f"{demo.url}/batches/{VS}/vsfb_demo_failures"
    assert "250/250 finished: 120 completed, 130 failed" in page.locator("#facts").inner_text()
    assert page.locator("#failed-files tbody tr").count() == 130
    first = page.locator("#failed-files tbody tr").first.inner_text()
    assert first.startswith("file-vsfb_demo_failures-")
    codes = page.locator("#codes tbody tr").evaluate_all("rs => rs.map(r => r.cells[0].innerText)")
    assert "parsing_timeout" in codes
    points = page.locator("#chart polyline").get_attribute("points")
    assert len(points.split()) >= 2
    box = page.locator("#chart").bounding_box()
    assert box["width"] > 300
    assert box["height"] > 100
    _shot(page, "batch-page.png")

    page.goto(f"{demo.url}/batches/{VS}/vsfb_unseen")
    assert page.locator("#state .st").inner_text() == "not yet seen"
    assert int(page.locator("#failures").inner_text()) >= 2
    assert "server error 503" in page.locator("#last-error").inner_text()
    assert page.locator("#chart-none").count() == 1

    missing = page.goto(f"{demo.url}/batches/{VS}/vsfb_nobody")
    assert missing.status == 404
    assert "not watching" in page.locator("#problem").inner_text()


def test_a_refused_key_turns_the_header_into_a_warning(
    page: Any,
    simulator_factory: Any,
    daemon_factory: Any,
) -> None:
    """While the API refuses the key, the header is a red warning that says so and every active
    row says "key refused" with how old its counts are; a label holding markup shows as text."""
    sim = simulator_factory(
        "--scenario", "empty", "--api-key-env", "SIM_KEY", env={"SIM_KEY": "sk-good-key-123"}
    )
    sim.control(
        "POST",
        "batches",
        {"vector_store_id": VS, "batch_id": "vsfb_k", "total_files": 10, "duration_seconds": 600},
    )
    daemon = daemon_factory(
        {
            "api": {"base_url": sim.url},
            "poll": {"interval_seconds": 0.5},
            "watch": [{"vector_store_id": VS, "batch_id": "vsfb_k", "labels": {"note": HOSTILE}}],
        },
        env={"OPENAI_API_KEY": "sk-good-key-123"},
    )
    daemon.wait_until(
        lambda: daemon.request("GET", f"/v1/watches/{VS}/vsfb_k").json()["api_status"],
        what="a first answer",
    )
    sim.set_api_key("sk-another-key-456")
    daemon.wait_until(
        lambda: daemon.request("GET", "/readyz").status_code == 503, what="the key refused"
    )

    def refused() -> bool:
        page.goto(daemon.url + "/")
        return page.locator("#api.refused").count() == 1

    daemon.wait_until(refused, what="the warning")
    banner = page.locator("#api")
    assert banner.inner_text().startswith("The API refuses the key: ")
    assert banner.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(253, 226, 225)"
    row = _row(page, "vsfb_k")
    assert row.get_attribute("data-state") == "refused"
    assert row.locator(".badge.b-refused").inner_text() == "key refused"
    assert row.locator(".age").inner_text().startswith("as of ")
    assert row.locator(".label").inner_text() == f"note={HOSTILE}"
    assert page.locator("img").count() == 0
    assert page.title() == "batch-watcher"
    assert "sk-good-key-123" not in page.content()
    _shot(page, "status-page-refused.png")
