"""radfed dashboard: the multipage entry. It opens the store, reads every run once for
this rerun (dashboard/context.py) and runs the page the researcher chose.

Started by `dashboard` (dashboard/cli.py) as `streamlit run app.py -- --db URL`; without
`--db` it reads DATABASE_URL or the default ~/.radfed/radfed.db. It only reads the store,
which holds clinic names, node ids and numbers: no patient data is ever shown.

Pages use Streamlit's own navigation (st.navigation / st.Page). Each page is a module of
this package that renders when Streamlit runs it as a page script (under `if __name__ ==
"__main__"`) and only defines functions when imported, so its tables are tested without
a browser. Two hooks wait for work done elsewhere: `dashboard.auth.require_login`, when
that module exists, guards every page; `dashboard/submit.py`, when it imports, is the
"Submit an experiment" page (its `submit_page()`, or the module as a page script).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from dashboard.context import load
from dashboard.words import count

HERE = Path(__file__).resolve().parent
# (section, page module, title, icon, url path)
PAGES = [
    ("Results", "leaderboard.py", "Leaderboard", ":material/leaderboard:", "leaderboard"),
    ("Results", "compare.py", "Compare runs", ":material/compare_arrows:", "compare"),
    ("Results", "sweeps.py", "RadImageNet vs ImageNet", ":material/balance:", "sweeps"),
    ("Results", "live.py", "Live progress", ":material/monitoring:", "live"),
    ("One run", "run.py", "Run details", ":material/description:", "run"),
    ("One run", "per_clinic.py", "Per clinic", ":material/local_hospital:", "clinics"),
    ("One run", "diagnostics.py", "ROC and calibration", ":material/ssid_chart:", "diagnostics"),
    ("Governance", "audit_trail.py", "Audit trail", ":material/history:", "audit"),
    ("Governance", "register.py", "Clinic register", ":material/badge:", "register"),
]
SUBMIT_MODULE = "dashboard.submit"


def logged_in() -> bool:
    """The login of dashboard/auth.py when it exists (it may stop the script itself);
    without it, everyone who reaches the dashboard may read it."""
    try:
        from dashboard.auth import require_login
    except ImportError:
        return True
    return require_login() is not False


def submit_page() -> st.Page | None:
    """The "Submit an experiment" page, when dashboard/submit.py imports: its
    `submit_page()` function, else the module run as a page script."""
    try:
        module = importlib.import_module(SUBMIT_MODULE)
    except ImportError:
        return None
    page = getattr(module, "submit_page", None)
    target = page if callable(page) else Path(module.__file__ or HERE / "submit.py")
    return st.Page(target, title="Submit an experiment", icon=":material/send:", url_path="submit")


def navigation() -> dict[str, list[st.Page]]:
    """Pages by section; the leaderboard first (the default page)."""
    sections: dict[str, list[st.Page]] = {}
    for i, (section, script, title, icon, url) in enumerate(PAGES):
        sections.setdefault(section, []).append(
            st.Page(HERE / script, title=title, icon=icon, url_path=url, default=i == 0)
        )
    submit = submit_page()
    if submit is not None:
        sections.setdefault("Experiments", []).append(submit)
    return sections


def sidebar_facts(context) -> None:
    """Which database, in words (no server path), and how many runs it holds."""
    from sqlalchemy.engine import make_url

    url = make_url(context.store.url)
    if url.get_backend_name() == "sqlite":
        where = f"SQLite file {Path(url.database or 'in memory').name}"
    else:
        where = f"PostgreSQL database {url.database} on {url.host}"
    with st.sidebar:
        st.caption(f"{where} · {count(len(context.finished))} finished and {count(len(context.running))} running runs")
        st.button("Refresh", key="refresh", help="Read the store again (the Live page refreshes by itself).")


def main(argv: Sequence[str]) -> None:
    st.set_page_config(page_title="radfed dashboard", page_icon=":material/hub:", layout="wide")
    if not logged_in():
        st.stop()
    context = load(argv)
    if context is None:
        return
    page = st.navigation(navigation())
    sidebar_facts(context)
    page.run()


main(sys.argv[1:])
