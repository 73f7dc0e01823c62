"""The RadImageNet vs ImageNet page: the sweep's mean ± sd per backbone and weight source,
and the paired view, each scenario run with both weight sources, their difference and
its 95 % CI (radfed.results.paired_differences), then the mean difference per backbone.

The paper's question is a difference, and two means ± sd side by side do not show one:
scenarios differ far more from each other (freeze policy, learning rate) than the weight
sources do within a scenario. Pairing runs that differ only in their weights removes
that spread; a CI that holds 0 says the data cannot tell the two initialisations apart.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.charts import differences_chart
from dashboard.context import current, run_name
from dashboard.filters import filter_sidebar, freeze_words
from dashboard.tables import show_table
from dashboard.words import auroc_text, capitalised, display_frame
from radfed.reply import POOLED_AUROC
from radfed.results import mean_difference, mean_sd, paired_differences, summary

NO_SWEEP = (
    "No sweep yet: `coordinator sweep TASK.toml --compare imagenet` runs the RadImageNet paper's "
    "scenarios with both weight sources, and the pairs appear here."
)


def signed(value: float | None, low: float | None, high: float | None) -> str:
    """'+0.031 [−0.012 to +0.074]', or the point alone without an interval."""
    if value is None:
        return "not measured"
    if low is None or high is None:
        return f"{value:+.3f} (one pair: no interval)"
    return f"{value:+.3f} [{low:+.3f} to {high:+.3f}]"


def summary_frame(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Mean ± sd pooled AUROC per sweep, backbone and weight source (tagged runs only)."""
    rows = [
        {
            "Sweep": g["sweep"],
            "Backbone": g["backbone"],
            "Weight source": g["weight_source"] or "untagged",
            "Runs": g["runs"],
            "Failed": g["failed"],
            f"{capitalised(POOLED_AUROC)} mean ± sd": mean_sd(g) if g["auroc_mean"] is not None else "no completed run",
        }
        for g in summary(entries)
    ]
    return display_frame(pd.DataFrame(rows))


def scenario(row: dict[str, Any]) -> str:
    spec_like = {"freeze": row["freeze"], "unfreeze_top": None}
    return f"{row['backbone']} · {freeze_words(spec_like)} · lr {row['learning_rate']:g}"


def pairs_frame(rows: list[dict[str, Any]], first: str, second: str) -> pd.DataFrame:
    """Scenario, both runs' pooled AUROC [CI] and the difference [CI]."""
    out = []
    for r in rows:
        a, b = r["first"], r["second"]
        out.append(
            {
                "Scenario": scenario(r),
                first: auroc_text(
                    a["pooled_auroc"],
                    (a.get("pooled") or {}).get("auroc_low"),
                    (a.get("pooled") or {}).get("auroc_high"),
                )
                + f" (run {a['run_id']})",
                second: auroc_text(
                    b["pooled_auroc"],
                    (b.get("pooled") or {}).get("auroc_low"),
                    (b.get("pooled") or {}).get("auroc_high"),
                )
                + f" (run {b['run_id']})",
                f"{first} − {second} [95% CI]": signed(r["diff"], r["low"], r["high"]),
            }
        )
    return display_frame(pd.DataFrame(out))


def means_frame(rows: list[dict[str, Any]], first: str, second: str) -> pd.DataFrame:
    return display_frame(
        pd.DataFrame(
            [
                {
                    "Sweep": m["sweep"],
                    "Backbone": m["backbone"],
                    "Pairs": m["pairs"],
                    f"Mean {first} − {second} [95% CI]": signed(m["diff"], m["low"], m["high"]),
                }
                for m in mean_difference(rows)
            ]
        )
    )


def render() -> None:
    st.title("RadImageNet vs ImageNet")
    context = current()
    if context is None:
        return
    entries = filter_sidebar(context.finished, key="sweeps")
    groups = summary_frame(entries)
    if groups.empty:
        st.info(NO_SWEEP)
        return
    st.subheader(f"{capitalised(POOLED_AUROC)} per backbone and weight source, over a sweep's scenarios")
    show_table(groups)
    sources = sorted({e.get("weight_source") for e in entries if e.get("sweep") and e.get("weight_source")})
    if len(sources) < 2:
        st.info(
            f"Only one weight source ({', '.join(sources) or 'none'}) has run: pairs need a second, e.g. "
            f"`coordinator sweep TASK.toml --compare imagenet`."
        )
        return
    left, right = st.columns(2)
    first = left.selectbox(
        "Weights", sources, index=sources.index("radimagenet") if "radimagenet" in sources else 0, key="sweeps-first"
    )
    others = [s for s in sources if s != first]
    second = right.selectbox(
        "against", others, index=others.index("imagenet") if "imagenet" in others else 0, key="sweeps-second"
    )
    rows = paired_differences(entries, first, second)
    if not rows:
        st.info(f"No scenario has a completed run with both {first} and {second} weights yet.")
        return
    st.subheader(f"Paired: each scenario with {first} and with {second} weights")
    chart = pd.DataFrame(
        [{"who": f"{scenario(r)} ({r['sweep']})", "diff": r["diff"], "low": r["low"], "high": r["high"]} for r in rows]
    )
    st.altair_chart(differences_chart(chart, f"{POOLED_AUROC}: {first} − {second} (95 % CI)"), width="stretch")
    show_table(pairs_frame(rows, first, second))
    st.caption(
        f"Right of the dashed line: {first} did better. The CI of a difference combines the two runs' "
        f"95 % CIs as if independent; both were scored on the same patients, so a paired interval "
        f"would be narrower. A CI that holds 0: the two cannot be told apart on this data."
    )
    st.subheader("Mean difference per backbone, over scenarios")
    show_table(means_frame(rows, first, second))
    st.caption("95 % CI: Student's t over the scenarios' differences (each scenario one replicate).")
    names = sorted({run_name(r[k]) for r in rows for k in ("first", "second")})
    st.caption(f"{len(names)} runs in {len(rows)} pairs.")


if __name__ == "__main__":
    render()
