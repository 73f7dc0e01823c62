"""The Live progress page: every running experiment's rounds done of planned, which
clinics replied in the round under way, the latest pooled AUROC and the time left,
refreshed by itself every few seconds (st.fragment(run_every=...)).

A federated run takes minutes to hours and fails quietly when a clinic drops out; a
researcher watching it needs to see the round move and who has not answered, without
pressing Refresh. Only this part of the page reruns: the rest of the dashboard does
not flicker, and a rerun reads the store afresh.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.context import current, run_name
from dashboard.figures import show_figures
from dashboard.tables import show_table
from dashboard.words import auroc_text, duration, parse_time, when
from radfed.reply import POOLED_AUROC
from radfed.results import rounds_done
from radfed.store import StoreError

REFRESH_S = 5


def round_under_way(entry: dict[str, Any]) -> int:
    """The round being trained now: one past the last finished, at most the last planned."""
    return min(rounds_done(entry) + 1, max(int(entry.get("rounds_planned") or 1), 1))


def clinic_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """Every clinic seen in the run: whether it replied in the round under way, and its last reply."""
    now = round_under_way(entry)
    last: dict[str, int] = {}
    replied: dict[str, str] = {}
    for c in entry.get("clinics", []):
        last[c["clinic"]] = max(last.get(c["clinic"], -1), c["server_round"])
        if c["server_round"] == now and c["phase"] == "train":
            replied[c["clinic"]] = f"trained on {c['num_examples']} images"
        elif c["server_round"] == now and c["phase"] in ("late", "lost", "revoked", "failed", "excluded"):
            replied[c["clinic"]] = f"{c['phase']}: {c.get('note') or 'no reason recorded'}"
    rows = [
        {
            "Clinic": name,
            f"Round {now}": replied.get(name, "waiting for its reply"),
            "Last heard from in": f"round {round_no}",
        }
        for name, round_no in sorted(last.items())
    ]
    return pd.DataFrame(rows, columns=["Clinic", f"Round {now}", "Last heard from in"])


def time_left(entry: dict[str, Any]) -> str:
    """Mean duration of the finished rounds times the rounds still to go."""
    took = [r["duration_s"] for r in entry.get("rounds", []) if r["server_round"] > 0 and r.get("duration_s")]
    remaining = max(int(entry.get("rounds_planned") or 0) - rounds_done(entry), 0)
    if remaining == 0:
        return "finishing: the final evaluation"
    if not took:
        return "known after the first round"
    return f"about {duration(sum(took) / len(took) * remaining)}"


def elapsed(entry: dict[str, Any], now: datetime | None = None) -> str:
    start = parse_time(entry.get("started_at"))
    if start is None:
        return "not recorded"
    return duration(((now or datetime.now(UTC)) - start).total_seconds())


def latest_pooled(entry: dict[str, Any]) -> str:
    rounds = [r for r in entry.get("rounds", []) if (r.get("pooled") or {}).get("auroc") is not None]
    if not rounds:
        return "not yet: the first evaluation is under way"
    q = rounds[-1]["pooled"]
    return f"{auroc_text(q['auroc'], q.get('auroc_low'), q.get('auroc_high'))} (round {rounds[-1]['server_round']})"


def show_run(entry: dict[str, Any]) -> None:
    done, planned = rounds_done(entry), int(entry.get("rounds_planned") or 0)
    st.subheader(run_name(entry))
    st.progress(min(done / planned, 1.0) if planned else 0.0, text=f"{done} of {planned} rounds done")
    show_figures(
        [
            ("Running for", elapsed(entry), f"since {when(entry.get('started_at'))}"),
            ("Time left", time_left(entry), "mean round time × rounds to go"),
            (f"Latest {POOLED_AUROC} [95% CI]", latest_pooled(entry), ""),
        ]
    )
    clinics = clinic_frame(entry)
    if clinics.empty:
        st.info("No clinic has replied yet: the first round starts once enough clinics are connected.")
    else:
        show_table(clinics)


@st.fragment(run_every=REFRESH_S)
def live_view() -> None:
    """Re-read the store and draw every running run (this part alone reruns)."""
    context = current()
    if context is None:
        return
    try:
        running = context.store.leaderboard(running_only=True)
    except StoreError as exc:
        st.error(str(exc))
        return
    st.caption(f"Updated {datetime.now(UTC).strftime('%H:%M:%S UTC')}; refreshes every {REFRESH_S} s.")
    if not running:
        st.info(
            "No run in progress. Runs started with `coordinator run` (or a sweep, or the demo) appear here "
            "while they train."
        )
        return
    for entry in running:
        show_run(entry)


def render() -> None:
    st.title("Live progress")
    live_view()


if __name__ == "__main__":
    render()
