"""The experiment queue end to end, as a researcher and a coordinator do it: the dashboard
served beyond loopback (`dashboard --host 0.0.0.0`), opened in headless Chromium.

Before logging in no page shows a result, a download or the submission form; after
logging in, the researcher submits on the Submit page, the coordinator approves on the
CLI and `coordinator queue run-next` runs it on a real SuperLink with two SuperNodes; the
leaderboard the researcher is still looking at then ranks the run under their name.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.accounts import add_researcher, log_in
from tests.federation import cli
from tests.test_dashboard_browser import CHROMIUM, PAGES, browser_or_skip, dashboard_server

pytestmark = pytest.mark.e2e

EXPERIMENT = "browser-small"
WAIT_MS = 180_000  # a page's first run imports Flower and torch: slow on a loaded 2-core machine
NUMBERS = {"Image size (px)": "32", "Rounds": "1", "Batch size": "8", "Seed": "1"}


def coordinator(*args: str, db: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return cli("server.cli", *args, "--db", db, timeout=timeout)


def wait_idle(page) -> None:
    """Until Streamlit's "running" indicator is gone (a widget change reruns the page)."""
    time.sleep(0.4)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and page.locator('[data-testid="stStatusWidget"]').count():
        time.sleep(0.2)


def assert_locked(page, url: str) -> None:
    """Only the login form: no result, no download button, no submission form."""
    page.goto(url, wait_until="domcontentloaded", timeout=60_000)
    page.get_by_role("button", name="Log in").first.wait_for(timeout=WAIT_MS)
    wait_idle(page)
    text = page.inner_text("body")
    assert EXPERIMENT not in text and "AUROC" not in text, f"{url} shows results before a login"
    assert not page.locator('[data-testid="stDownloadButton"]').count(), f"{url} offers a download"
    assert not page.get_by_role("button", name="Submit for review").count(), f"{url} shows the form"


def fill_submission(page) -> None:
    """The Submit page's form, as a person fills it: type, pick, press Tab to commit
    (by role: a field with a help tooltip shares its label with the tooltip's button)."""
    name = page.get_by_role("textbox", name="Experiment name", exact=True)
    name.fill(EXPERIMENT)
    name.press("Tab")
    wait_idle(page)
    page.get_by_role("combobox", name="Backbone").click()
    page.get_by_role("option", name="resnet18", exact=True).click()
    wait_idle(page)
    for label, value in NUMBERS.items():
        box = page.get_by_role("spinbutton", name=label, exact=True)
        box.fill(value)
        box.press("Tab")
        wait_idle(page)


@pytest.mark.timeout(900)
def test_log_in_submit_in_the_browser_approve_run_and_rank(tmp_path: Path, federation) -> None:
    from radfed.demo_data import write_clinic

    sync_playwright = browser_or_skip()
    db = f"sqlite:///{tmp_path / 'radfed.db'}"
    secret = add_researcher(db, "alice")
    with dashboard_server(db, tmp_path / "dashboard.log", "--host", "0.0.0.0") as base:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            try:
                for path in [*PAGES, "submit"]:
                    assert_locked(page, f"{base}/{path}")

                page.goto(base, wait_until="domcontentloaded", timeout=60_000)
                log_in(page, "alice", secret)
                page.get_by_role("link", name="Submit an experiment").click()
                page.get_by_role("button", name="Submit for review").wait_for(timeout=WAIT_MS)
                wait_idle(page)
                fill_submission(page)
                page.get_by_role("button", name="Submit for review").click()
                page.get_by_text(f"({EXPERIMENT}); waiting for the coordinator's review").wait_for(timeout=WAIT_MS)
                shot = tmp_path / "submitted.png"
                page.screenshot(path=str(shot), full_page=True)

                (row,) = json.loads(coordinator("queue", "list", "--json", db=db).stdout)
                assert row["name"] == EXPERIMENT and row["status"] == "pending"
                spec = json.loads(coordinator("queue", "show", str(row["id"]), db=db).stdout)["spec"]
                assert (spec["backbone"], spec["image_size"], spec["rounds"], spec["batch_size"]) == (
                    "resnet18",
                    32,
                    1,
                    8,
                ), spec
                approved = coordinator("queue", "approve", str(row["id"]), db=db)
                assert approved.returncode == 0, approved.stderr
                for i in (1, 2):
                    write_clinic(tmp_path / f"clinic-{i}", clinic_index=i - 1, n_patients=6, prevalence=0.5, seed=i)
                    federation.start_clinic(f"clinic-{i}", tmp_path / f"clinic-{i}")
                run = coordinator(
                    "queue", "run-next", "--control", federation.control, "--insecure", db=db, timeout=420
                )
                assert run.returncode == 0, run.stderr[-3000:] + federation.logs()
                (done,) = json.loads(coordinator("queue", "list", "--json", db=db).stdout)
                assert done["status"] == "completed" and done["run"]

                # still logged in (client-side navigation keeps the session): the leaderboard
                page.get_by_role("link", name="Leaderboard").click()
                # not get_by_text(EXPERIMENT): the Submit page's own confirmation names it too,
                # so wait until the leaderboard's table itself is on the page
                page.wait_for_function("() => document.body.innerText.includes('Submitted by')", timeout=WAIT_MS)
                wait_idle(page)
                board = page.inner_text("body")
                assert "alice" in board and "Submitted by" in board, board[-2000:]
                page.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)
            except Exception:
                page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
                raise
            finally:
                browser.close()
