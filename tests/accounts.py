"""Helpers for tests that need a logged-in researcher: an account, the login form, the
address Streamlit believes it serves on.

`log_in(page, name, secret)` fills the dashboard's login form in a browser test
(Playwright's Page: get_by_label / get_by_role); `log_in_app(at, name, secret)` does
the same for a Streamlit AppTest.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from radfed.researchers import Researchers
from radfed.store import Store


def add_researcher(db_url: str, name: str = "alice", kind: str = "password") -> str | None:
    """Create an account (as `coordinator researcher add NAME` does); returns its secret."""
    with Store(db_url) as store:
        return Researchers(store).add(name, kind=kind)


@contextmanager
def served_on(address: str | None):
    """Make the dashboard believe Streamlit listens on `address` (its --server.address)."""
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", address)
    try:
        yield
    finally:
        config.set_option("server.address", before)


def log_in(page: Any, name: str, secret: str) -> None:
    """Log in through the dashboard's form in a browser (Playwright), then wait for it to go."""
    page.get_by_label("Name").fill(name)
    page.get_by_label("Secret").fill(secret)
    page.get_by_role("button", name="Log in").click()
    page.get_by_text(f"Logged in as {name}").wait_for()


def log_in_app(at: Any, name: str, secret: str, form: str = "radfed-login") -> Any:
    """Log in through the login form of a Streamlit AppTest; returns it after the rerun."""
    at.text_input(key=f"{form}.name").input(name)
    at.text_input(key=f"{form}.secret").input(secret)
    next(b for b in at.button if b.label == "Log in").click()
    return at.run()
