"""The dashboard in a real browser: every page of `dashboard --db URL`, served against the
database of a real small federation (`coordinator demo`), loaded by headless Chromium
through Playwright at 1100 and 1600 px.

AppTest (tests/test_dashboard.py) checks what each page says; only a browser shows what
a person sees: a table wider than its column that scrolls sideways, a chart or legend
wider than the screen, Streamlit's own "Deploy" button. Each page is screenshotted under
the test's tmp folder (look at them when a layout changes).

Needs Debian's Chromium (/usr/bin/chromium) and the `playwright` package (no browser of
its own is downloaded). Skipped with the reason when either is missing, unless
RADFED_REQUIRE_BROWSER=1 (CI), where that fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.federation import cli, spawn
from tests.test_dashboard import free_port, wait_healthy

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("RADFED_CHROMIUM", "/usr/bin/chromium")
WIDTHS = (1100, 1600)
# url path -> (title, a phrase the page must show for the demo's one finished run)
PAGES = {
    "": ("Leaderboard", "Trust the pooled AUROC"),
    "compare": ("Compare runs", "Settings side by side"),
    "sweeps": ("RadImageNet vs ImageNet", "No sweep yet"),
    "live": ("Live progress", "No run in progress"),
    "run": ("Run details", "Learning curves"),
    "clinics": ("Per clinic", "Local training"),
    "diagnostics": ("ROC and calibration", "Threshold:"),
    "audit": ("Audit trail", "events, newest first"),
    "register": ("Clinic register", "active: may connect"),
}
UNWANTED = re.compile(r"\bNone\b|\bNaN\b|\bnan\b")
# every element a layout can push past its column: tables (st.dataframe's grid, st.table),
# charts (Vega's canvas or svg, legends included) and the page itself
OVERFLOW_JS = """() => {
  const cut = [];
  const vw = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > vw + 1) cut.push(`page ${document.documentElement.scrollWidth} > ${vw}`);
  const tables = '[data-testid="stDataFrame"] .dvn-scroller, [data-testid="stTable"], [data-testid="stTable"] > div';
  for (const el of document.querySelectorAll(tables)) {
    if (el.scrollWidth > el.clientWidth + 1) cut.push(`table ${el.scrollWidth} > ${el.clientWidth}`);
  }
  for (const box of document.querySelectorAll('[data-testid="stVegaLiteChart"]')) {
    const outer = box.getBoundingClientRect();
    for (const svg of box.querySelectorAll('svg')) {
      const r = svg.getBoundingClientRect();
      if (r.right > outer.right + 1 || r.right > vw + 1) cut.push(`chart ${r.right} > ${Math.min(outer.right, vw)}`);
      // Vega draws into an svg that clips: a legend entry, label or title past its edge is
      // cut (4 px of slack: a rotated title's box includes the font's ascent, not glyphs)
      for (const text of svg.querySelectorAll('text')) {
        const t = text.getBoundingClientRect();
        if (!text.textContent.trim() || t.width === 0) continue;
        if (t.right > r.right + 4 || t.left < r.left - 4 || t.top < r.top - 4 || t.bottom > r.bottom + 4)
          cut.push(`chart text "${text.textContent}" outside its chart`);
      }
    }
  }
  return cut;
}"""


def browser_or_skip():
    """Playwright's sync API, or skip (fail under RADFED_REQUIRE_BROWSER=1) with the reason."""
    missing = None
    if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = missing or "the playwright package is not installed (pip install playwright)"
    if missing:
        if os.environ.get("RADFED_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RADFED_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    return sync_playwright


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real small federation, as a user runs it: 2 clinics, 2 rounds (about 2-5 min)."""
    browser_or_skip()
    work = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "RADFED_HOME": str(work / "home"), "FLWR_HOME": str(work / "home" / "flwr")}
    env.pop("DATABASE_URL", None)
    proc = cli(
        "server.cli",
        "demo",
        "--clinics",
        "2",
        "--rounds",
        "2",
        "--patients",
        "8",
        "--image-size",
        "32",
        "--backbone",
        "resnet18",
        "--workdir",
        str(work / "w"),
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return f"sqlite:///{work / 'w' / 'radfed.db'}"


@contextmanager
def dashboard_server(db_url: str, log: Path, *extra: str) -> Iterator[str]:
    """`dashboard --db URL [extra]` on a free port, its loopback URL; SIGTERM afterwards."""
    port = free_port()
    proc = spawn("dashboard.cli", "--db", db_url, "--port", str(port), *extra, log=log)
    try:
        wait_healthy(port, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def dashboard_url(demo_database: str, tmp_path_factory: pytest.TempPathFactory):
    """The dashboard on loopback, as `dashboard --db URL` serves it."""
    with dashboard_server(demo_database, tmp_path_factory.mktemp("dashboard") / "dashboard.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser(demo_database: str):
    sync_playwright = browser_or_skip()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium"), headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


HEIGHT_JS = """() => Math.max(document.body.scrollHeight,
  ...[...document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"], '
                                   + '[data-testid="stSidebarContent"]')]
     .map(e => e.scrollHeight))"""


def full_height(page, width: int) -> None:
    """Streamlit scrolls inside its main area, not the document: make the window as tall
    as the page so the screenshot shows all of it (at the same width)."""
    page.set_viewport_size({"width": width, "height": min(int(page.evaluate(HEIGHT_JS)) + 40, 16_000)})
    time.sleep(1.0)


def settle(page, title: str, phrase: str) -> str:
    """Wait for the page's title and phrase, then for Streamlit to stop running and the
    charts to draw; the page's visible text."""
    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
    page.get_by_text(phrase).first.wait_for(timeout=60_000)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and page.locator('[data-testid="stStatusWidget"]').count():
        time.sleep(0.25)
    time.sleep(1.5)  # Vega draws after the data arrives
    return page.inner_text("body")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("path", list(PAGES), ids=[p or "leaderboard" for p in PAGES])
def test_page_in_browser(browser, dashboard_url: str, path: str, width: int, tmp_path: Path) -> None:
    title, phrase = PAGES[path]
    page = browser.new_page(viewport={"width": width, "height": 1000})
    try:
        page.goto(f"{dashboard_url}/{path}", wait_until="domcontentloaded", timeout=60_000)
        text = settle(page, title, phrase)
        full_height(page, width)
        shot = tmp_path / f"{path or 'leaderboard'}-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        assert not UNWANTED.findall(text), [line for line in text.splitlines() if UNWANTED.search(line)]
        assert not re.search(r"\d{16,}", text), "a Flower run or node id is shown"  # runs are "EXPERIMENT · run N"
        assert "/tmp/" not in text and str(Path.home()) not in text, "a server path is shown"
        assert "Traceback" not in text and not page.locator('[data-testid="stException"]').count()
        assert not page.get_by_role("button", name="Deploy").count(), "Streamlit's Deploy button is shown"
        if path in ("", "run"):
            assert "demo-resnet18-2clinics · run 1" in text
        cut = page.evaluate(OVERFLOW_JS)
        assert not cut, f"cut off at {width} px: {cut} (see {shot})"
    finally:
        page.close()


@pytest.mark.timeout(300)
def test_live_page_refreshes_itself(browser, dashboard_url: str) -> None:
    """The Live page's fragment reruns by itself (st.fragment(run_every=5)): its
    "Updated HH:MM:SS UTC" line changes without a click or a reload."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    try:
        page.goto(f"{dashboard_url}/live", wait_until="domcontentloaded", timeout=60_000)
        stamp = page.get_by_text(re.compile(r"Updated \d\d:\d\d:\d\d UTC")).first
        stamp.wait_for(timeout=60_000)
        first = stamp.inner_text()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and stamp.inner_text() == first:
            time.sleep(0.5)
        assert stamp.inner_text() != first, "the Live page did not refresh by itself within 30 s"
    finally:
        page.close()
