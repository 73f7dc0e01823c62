"""What every dashboard page shares: the store, this rerun's runs, and how a run is named
and picked.

dashboard/app.py (the multipage entry, run first on every rerun) opens the store and
reads the leaderboard once (`load`); the page it then runs reads the same `Context`
(`current`), so a page never queries the store twice for the same rerun and every page
of one rerun shows the same data. The context lives in the session's state, never in a
module global: two researchers' browsers are two sessions in one Streamlit process.

A run is named "EXPERIMENT · run N", N being the store's run number (what `coordinator
export N` also takes), never Flower's 19-digit run id: people compare and talk about runs
by these names, and downloads are named the same way (`file_stem`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from dashboard.login_rule import database_url
from radfed.ranking import annotate
from radfed.store import Store, StoreError

CONTEXT_KEY = "radfed-context"
RUN_MEMORY = "radfed-chosen-run"  # survives page switches (widget state does not)
RUNS_MEMORY = "radfed-chosen-runs"
EMPTY_MESSAGE = "No experiments yet: run `coordinator demo` to train a first federated model."


@st.cache_resource(show_spinner=False)
def open_store(url: str) -> Store:
    """One Store (connection pool) per URL for the whole Streamlit server."""
    return Store(url)


@dataclass
class Context:
    """This rerun's view of the store: every run (finished and running), best first."""

    store: Store
    entries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["status"] != "running"]

    @property
    def running(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["status"] == "running"]

    def by_run(self) -> dict[int, dict[str, Any]]:
        return {e["run_id"]: e for e in self.entries}


def load(argv: Sequence[str]) -> Context | None:
    """Open the store named on the command line and read every run; None (with one error
    shown) when the database cannot be used."""
    url = database_url(argv)
    try:
        store = open_store(url)
        entries = store.leaderboard(include_running=True)
    except StoreError as exc:
        st.error(str(exc))
        return None
    # ranks among finished runs only, as the leaderboard shows them (a running run's
    # interim figure must not push finished runs down)
    finished = annotate([e for e in entries if e["status"] != "running"])
    context = Context(store, finished + [e for e in entries if e["status"] == "running"])
    st.session_state[CONTEXT_KEY] = context
    return context


def current() -> Context | None:
    """The context app.py loaded for this rerun (None: the store could not be opened)."""
    return st.session_state.get(CONTEXT_KEY)


def on_download(what: str) -> Callable[[], None] | None:
    """What a download button calls when clicked: dashboard.auth's `record_download`
    (the audit trail names who downloaded what) when that module exists, else nothing."""
    try:
        from dashboard.auth import record_download
    except ImportError:
        return None
    return lambda: record_download(what)


def run_name(entry: dict[str, Any]) -> str:
    """'demo-resnet18 · run 3'."""
    return f"{entry['experiment']} · run {entry['run_id']}"


def file_stem(entry: dict[str, Any], server_round: int | None = None) -> str:
    """'demo-resnet18-run-3-round-2': downloads are named after the experiment and run."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(entry["experiment"])).strip("-.") or "experiment"
    stem = f"{name}-run-{entry['run_id']}"
    return stem if server_round is None else f"{stem}-round-{server_round}"


def run_label(entry: dict[str, Any]) -> str:
    """Picker label: name, rank or 'running', and the headline with its state."""
    auroc = entry.get("pooled_auroc")
    figure = f"pooled AUROC {auroc:.3f}" if auroc is not None else "no pooled AUROC yet"
    where = (
        "running"
        if entry["status"] == "running"
        else (f"#{entry['rank']}" if entry["status"] == "completed" else entry["status"])
    )
    flag = " ⚠" if entry.get("warnings") else ""
    return f"{run_name(entry)} ({where}, {figure}){flag}"


def choose_run(entries: list[dict[str, Any]], label: str = "Run", key: str = "run") -> dict[str, Any] | None:
    """One run, picked in a selectbox that remembers the choice across pages (the best
    run first; a page's widgets are forgotten when another page is shown)."""
    if not entries:
        return None
    by_id = {e["run_id"]: e for e in entries}
    ids = list(by_id)
    remembered = st.session_state.get(RUN_MEMORY)
    index = ids.index(remembered) if remembered in ids else 0
    chosen = st.selectbox(label, ids, index=index, format_func=lambda i: run_label(by_id[i]), key=key)
    st.session_state[RUN_MEMORY] = chosen
    return by_id.get(chosen)


def page_run(title: str) -> tuple[Context, dict[str, Any]] | None:
    """A run page's start: its title, the store, the run picked (None: nothing to show)."""
    st.title(title)
    context = current()
    if context is None:
        return None
    entry = choose_run(context.entries)
    if entry is None:
        st.info("No runs yet: run `coordinator demo` to train a first federated model.")
        return None
    return context, entry


def choose_runs(entries: list[dict[str, Any]], default: int = 3, key: str = "runs") -> list[dict[str, Any]]:
    """Several runs, remembered across pages; the best `default` finished runs at first."""
    by_id = {e["run_id"]: e for e in entries}
    remembered = [i for i in st.session_state.get(RUNS_MEMORY, []) if i in by_id]
    start = remembered or [e["run_id"] for e in entries if e["status"] != "running"][:default]
    chosen = st.multiselect(
        "Runs to compare", list(by_id), default=start, format_func=lambda i: run_label(by_id[i]), key=key
    )
    st.session_state[RUNS_MEMORY] = list(chosen)
    return [by_id[i] for i in chosen]
