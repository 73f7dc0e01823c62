"""Filtering and grouping runs by what they were: task, backbone, weight source, freeze
policy, strategy and privacy.

Each of these "facets" is read from the run's stored experiment (its spec JSON and the
experiment row), never from its name, so a run named "resnet-test" that trained a
DenseNet is filed under densenet121. The sidebar's filters are remembered across pages
(Streamlit forgets a page's widgets when another page is shown), so narrowing the
leaderboard to one task also narrows the comparison and the sweep pages.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.words import NOT_MEASURED, capitalised, number
from radfed.model_card import spec_values
from radfed.reply import POOLED_AUROC

FREEZE_WORDS = {"none": "train every layer", "all": "head only (backbone frozen)"}
FACETS = {
    "task": "Task",
    "backbone": "Backbone",
    "weight_source": "Weight source",
    "freeze": "Freeze policy",
    "strategy": "Strategy",
    "privacy": "Privacy",
}
MEMORY = "radfed-filter-"


def freeze_words(spec: dict[str, Any]) -> str:
    """'train every layer', 'head only (backbone frozen)' or 'top 10 layers trained'."""
    policy = spec.get("freeze") or "none"
    if policy in FREEZE_WORDS:
        return FREEZE_WORDS[policy]
    return f"top {spec.get('unfreeze_top') or 10} layers trained"


def weight_source(entry: dict[str, Any]) -> str:
    """The sweep's tag ('radimagenet', 'imagenet'), else 'random init' or the weight file's name."""
    if entry.get("weight_source"):
        return str(entry["weight_source"])
    weights = str(entry.get("weights") or "random")
    return "random init" if weights == "random" else Path(weights).name


def facets(entry: dict[str, Any]) -> dict[str, str]:
    """The run's value for every facet, as shown in the filters and group tables."""
    spec = spec_values(entry.get("spec_json") or "{}")
    labels = spec.get("labels") or ["normal", "finding"]
    privacy = (entry.get("privacy") or {}).get("mode") or "none"
    return {
        "task": " vs ".join(str(x) for x in labels),
        "backbone": str(entry.get("backbone")),
        "weight_source": weight_source(entry),
        "freeze": freeze_words(spec),
        "strategy": str(entry.get("strategy")),
        "privacy": "no differential privacy" if privacy == "none" else f"differential privacy ({privacy})",
    }


def remembered_multiselect(label: str, options: list[str], memory: str, key: str) -> list[str]:
    """A multiselect whose choice outlives page switches (kept under `memory`)."""
    start = [o for o in st.session_state.get(memory, []) if o in options]
    chosen = st.multiselect(label, options, default=start, key=key, placeholder="all")
    st.session_state[memory] = list(chosen)
    return list(chosen)


def filter_sidebar(entries: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Sidebar filters (empty = all) for every facet with more than one value; the runs
    that pass all of them, in their leaderboard order."""
    values = [facets(e) for e in entries]
    chosen: dict[str, list[str]] = {}
    with st.sidebar:
        st.markdown("**Filter runs**")
        shown = 0
        for facet, label in FACETS.items():
            options = sorted({v[facet] for v in values})
            if len(options) < 2:
                continue
            shown += 1
            chosen[facet] = remembered_multiselect(label, options, MEMORY + facet, f"{key}-{facet}")
        if not shown:
            st.caption("Every run has the same task, backbone, weights, freeze policy, strategy and privacy.")
    return [e for e, v in zip(entries, values) if all(not c or v[f] in c for f, c in chosen.items())]


def group_frame(entries: list[dict[str, Any]], facet: str) -> pd.DataFrame:
    """One row per value of `facet`: runs, completed, best run and mean ± sd of the
    headline over completed runs (sd needs two)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(facets(entry)[facet], []).append(entry)
    rows = []
    for value, runs in sorted(groups.items()):
        scored = [e for e in runs if e["status"] == "completed" and e.get("pooled_auroc") is not None]
        scores = [e["pooled_auroc"] for e in scored]
        best = max(scored, key=lambda e: e["pooled_auroc"], default=None)
        mean = number(statistics.fmean(scores)) if scores else NOT_MEASURED
        spread = f" ± {statistics.stdev(scores):.3f}" if len(scores) > 1 else ""
        rows.append(
            {
                FACETS[facet]: value,
                "Runs": len(runs),
                "Completed": len(scored),
                f"{capitalised(POOLED_AUROC)} mean ± sd": mean + spread,
                "Best run": f"{best['experiment']} · run {best['run_id']} ({best['pooled_auroc']:.3f})"
                if best
                else "no completed run",
            }
        )
    return pd.DataFrame(rows)
