"""The dashboard in a real browser: `ledger dashboard` as a subprocess on a seeded SQLite ledger, driven by Debian's
headless Chromium through Playwright. Screenshots for review go to test-artifacts/dashboard/ at the repository root.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ledger.store.ledger import open_ledger
from tests.test_dashboard import seed
from tests.test_store import tamper

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                                    "(scripts/test installs it)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ledger_command() -> list[str]:
    script = Path(sys.executable).with_name("ledger")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from ledger.cli import run; run()"]


@pytest.fixture
def dashboard(ledger_home, tmp_path):
    """A seeded ledger and `ledger dashboard` serving it on a free port; yields (base URL, seeded runs)."""
    url = f"sqlite:///{ledger_home / 'ledger.db'}"
    runs = seed(open_ledger(url))
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    env = {**os.environ, "LEDGER_DB_URL": url}
    server = subprocess.Popen([*ledger_command(), "dashboard", "--port", str(port)], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the dashboard did not start:\n{(tmp_path / 'dashboard.log').read_text()}")
            time.sleep(0.3)
        yield base, runs
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # only the group `ledger dashboard` (now Streamlit) started
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    server_log = (tmp_path / "dashboard.log").read_text()
    assert "Traceback" not in server_log, server_log


def test_runs_table_selection_and_compare_in_chromium(dashboard):
    from playwright.sync_api import expect, sync_playwright

    base, runs = dashboard
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Every wait is for what the page renders, with time to spare on a busy 2-core machine (the default is 5 s).
    expect.set_options(timeout=60_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(60_000)

            # Runs: the table, with every run
            page.goto(f"{base}/")
            grid = page.locator('[data-testid="stDataFrame"]').first
            expect(grid).to_be_visible()
            expect(page.get_by_text("Showing 1–9 of 9 matching runs")).to_be_visible()
            page.wait_for_timeout(800)  # the grid draws on a canvas after it appears
            page.screenshot(path=ARTIFACTS / "runs.png")

            # a text filter (a tag) narrows it
            search = page.get_by_label("Search job name, run id and tags")
            search.fill("team=pricing")
            search.press("Enter")
            expect(page.get_by_text("Showing 1–2 of 2 matching runs")).to_be_visible()
            page.wait_for_timeout(500)
            page.screenshot(path=ARTIFACTS / "runs-filtered.png")
            search.fill("")
            search.press("Enter")
            expect(page.get_by_text("Showing 1–9 of 9 matching runs")).to_be_visible()

            # select two rows by their checkboxes, then Compare
            page.wait_for_timeout(800)
            box = grid.bounding_box()
            for row in (4, 5):
                page.mouse.click(box["x"] + 14, box["y"] + 35 + 17 + row * 35)
                expect(page.get_by_text("selected", exact=False).first).to_be_visible()
                page.wait_for_timeout(700)
            compare = page.get_by_role("button", name="Compare 2 runs")
            expect(compare).to_be_enabled()
            page.screenshot(path=ARTIFACTS / "runs-selected.png")
            compare.click()

            # Compare: side by side, differences highlighted, bars, lines, parallel coordinates
            page.set_viewport_size({"width": 1500, "height": 2900})
            expect(page).to_have_url(re.compile(r"/compare\?runs=\w+"))
            expect(page.get_by_text("Side by side")).to_be_visible()
            expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
            expect(page.locator(".js-plotly-plot")).to_have_count(3)
            expect(page.get_by_text(re.compile(r"Pins: \d+ of \d+ differ"))).to_be_visible()
            page.wait_for_timeout(1500)
            page.screenshot(path=ARTIFACTS / "compare.png")
            page.get_by_text("Only differences").click()
            page.get_by_role("tab", name=re.compile("Pins")).click()
            page.wait_for_timeout(1200)
            page.screenshot(path=ARTIFACTS / "compare-only-differences.png")

            # Run, Lineage and Integrity, for the record
            page.set_viewport_size({"width": 1500, "height": 1500})
            page.goto(f"{base}/run?run={runs['gappy'].run_id}")
            expect(page.get_by_text("could not be pinned").first).to_be_visible()
            expect(page.get_by_text(f"ledger reproduce {runs['gappy'].run_id}", exact=False).first).to_be_visible()
            page.wait_for_timeout(800)
            page.screenshot(path=ARTIFACTS / "run.png")
            if importlib.util.find_spec("ledger.audit"):  # the audit report, made when the button is pressed
                with page.expect_download() as download:
                    page.get_by_role("button", name="Audit report (HTML)").click()
                saved = ARTIFACTS / "audit-report.html"
                download.value.save_as(saved)
                assert runs["gappy"].run_id in saved.read_text()
            page.goto(f"{base}/lineage?uri=s3://ml-data/abalone/v2/train/abalone-train.csv&version=train-v9")
            expect(page.get_by_text("Runs that read it")).to_be_visible()
            page.wait_for_timeout(800)
            page.screenshot(path=ARTIFACTS / "lineage.png")
            page.goto(f"{base}/integrity")
            expect(page.get_by_text("Intact:", exact=False)).to_be_visible()
            page.screenshot(path=ARTIFACTS / "integrity.png")

            # someone edits a recorded hyperparameter behind the ledger's back: the page names the entry
            book = open_ledger()
            third = book.entries()[2]
            tamper(str(book.engine.url), ("UPDATE entries SET body = :b WHERE seq = 3",
                                          {"b": third.body.replace('"max_depth":"5"', '"max_depth":"9"')}))
            page.get_by_role("button", name="Verify again").click()
            expect(page.get_by_text(f"TAMPERED at entry 3 (run {third.run_id})", exact=False)).to_be_visible()
            page.wait_for_timeout(800)
            page.screenshot(path=ARTIFACTS / "integrity-tampered.png")
        finally:
            browser.close()
    for name in ("runs", "runs-filtered", "runs-selected", "compare", "compare-only-differences", "run", "lineage",
                 "integrity", "integrity-tampered"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000, name
