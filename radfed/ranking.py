"""How runs are ranked and what a researcher is warned about, read off recorded rounds.

The headline figure of a run is its **pooled AUROC**: the final model's AUROC over every
clinic's validation patients together, with its 95 % CI (radfed.pooled). It is what the
leaderboard ranks by, what `coordinator run` prints first and what the dashboard sorts
on. The **clinic mean AUROC** (each clinic's AUROC, averaged weighted by its validation
images) stays beside it as a column: with 20-50 validation images per clinic each of
those AUROCs is noisy, and a model that ranks well within each clinic but shifts its
scores from clinic to clinic looks good on the mean and bad pooled; the pooled figure is
the one a single deployed model and threshold would get.

Two runs whose intervals overlap cannot be told apart on this data: `overlaps_top` marks
every run whose CI overlaps the leader's.

A model is flagged (`model_warnings`) when its validation predictions are constant,
when it calls every image one class (accuracy equal to the prevalence), when its
scores include NaN, or when validation loss rose `LOSS_RISE_ROUNDS` rounds in a row.
The selected checkpoint is the round with the best pooled AUROC (the earliest on ties).

A task with more than two labels is still ranked by its pooled "any finding" AUROC; its
entry also carries the final model's pooled per-class AUROCs and their macro mean
(`per_class`, `macro_auroc`; radfed.per_class), shown beside the headline.
"""

from __future__ import annotations

import math
from typing import Any

LOSS_RISE_ROUNDS = 3


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def final_round(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The final model's evaluation: the last round with pooled figures, else (runs
    recorded before them) the last round with a clinic mean AUROC."""
    rounds = [r for r in entry.get("rounds", []) if r.get("pooled")] or [
        r for r in entry.get("rounds", []) if r.get("val_auroc") is not None
    ]
    return rounds[-1] if rounds else None


def headline(entry: dict[str, Any]) -> float | None:
    """The pooled AUROC the run is ranked by: the final round's, else the run's recorded
    final figure (which the ServerApp writes as the same pooled AUROC); None when neither."""
    pooled = _finite((entry.get("pooled") or {}).get("auroc"))
    return pooled if pooled is not None else _finite(entry.get("final_auroc"))


def clinic_mean(entry: dict[str, Any]) -> float | None:
    """The final round's validation-image-weighted mean of the clinics' AUROCs."""
    last = final_round(entry)
    return _finite(last.get("val_auroc")) if last else None


def interval(figures: dict[str, Any] | None) -> tuple[float, float] | None:
    q = figures or {}
    low, high = _finite(q.get("auroc_low")), _finite(q.get("auroc_high"))
    return (low, high) if low is not None and high is not None else None


def final_per_class(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The final model's pooled per-class figures (None for a binary task): from the same
    round as the pooled headline."""
    last = final_round(entry)
    return (last or {}).get("per_class") or None


def selected_checkpoint(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The round kept as the run's best model: best pooled AUROC, earliest on ties."""
    best = None
    for r in entry.get("rounds", []):
        score = _finite((r.get("pooled") or {}).get("auroc"))
        if r["server_round"] > 0 and score is not None and (best is None or score > best[1]):
            best = (r, score)
    chosen = entry.get("selected_round")
    if chosen is not None:
        match = [r for r in entry.get("rounds", []) if r["server_round"] == chosen]
        best = (match[0], _finite((match[0].get("pooled") or {}).get("auroc"))) if match else best
    if best is None:
        return None
    r, score = best
    ckpt = next((c for c in entry.get("checkpoints", []) if c["server_round"] == r["server_round"]), None)
    ci = interval(r.get("pooled"))
    return {
        "round": r["server_round"],
        "pooled_auroc": score,
        "ci95": list(ci) if ci else None,
        "path": ckpt["path"] if ckpt else None,
        "sha256": ckpt["sha256"] if ckpt else None,
    }


def _rising(losses: list[tuple[int, float]], k: int) -> tuple[int, int, float, float] | None:
    """(first round, last round, first loss, last loss) of a run of >= k rises in a row."""
    start = 0
    for i in range(1, len(losses) + 1):
        if i == len(losses) or losses[i][1] <= losses[i - 1][1]:
            if i - 1 - start >= k:
                return losses[start][0], losses[i - 1][0], losses[start][1], losses[i - 1][1]
            start = i
    return None


def model_warnings(
    entry: dict[str, Any], labels: tuple[str, ...] | list[str] = ("normal", "finding"), k: int = LOSS_RISE_ROUNDS
) -> list[str]:
    """What is wrong with the final model, one sentence each (empty when nothing is)."""
    out = []
    last = final_round(entry)
    pooled = (last or {}).get("pooled") or {}
    finding = labels[-1] if len(labels) == 2 else "a finding"
    constant_everywhere = _finite(pooled.get("distinct_scores")) == 1.0
    if constant_everywhere:
        out.append("constant predictions: every validation image got the same score")
    called, prevalence = _finite(pooled.get("called_positive")), _finite(pooled.get("prevalence"))
    if called in (0.0, 1.0) and prevalence not in (None, 0.0, 1.0):
        share = prevalence if called == 1.0 else 1 - prevalence
        what = f"'{finding}'" if called == 1.0 else f"'{labels[0]}'"
        out.append(f"calls every validation image {what}: accuracy {share:.2f} = the prevalence of that class")
    if last is not None:
        rows = [
            c
            for c in entry.get("clinics", [])
            if c["phase"] == "evaluate" and c["server_round"] == last["server_round"]
        ]
        broken = sum(int((c.get("quality") or {}).get("nonfinite") or 0) for c in rows)
        if broken:
            out.append(f"non-finite scores for {broken} validation images (left out of every figure)")
        constant = sorted(
            c["clinic"]
            for c in rows
            if (c.get("quality") or {}).get("distinct_scores") == 1 and (c.get("quality") or {}).get("images", 0) > 1
        )
        if constant and not constant_everywhere:
            out.append(f"constant predictions at {', '.join(constant)}")
    losses = [(r["server_round"], v) for r in entry.get("rounds", []) if (v := _finite(r.get("val_loss"))) is not None]
    rise = _rising(losses, k)
    if rise:
        out.append(
            f"validation loss rose {rise[1] - rise[0]} rounds in a row "
            f"(round {rise[0]} → {rise[1]}: {rise[2]:.2f} → {rise[3]:.2f}): over-fitting or diverging"
        )
    ci = interval(pooled)
    if ci is not None and ci[1] < 0.5:
        out.append("pooled AUROC CI lies below 0.5: the model ranks findings backwards")
    return out


def annotate(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rank runs by pooled AUROC (None last, older first on ties) and add, to each entry:
    `pooled_auroc`, `clinic_mean_auroc`, `selected`, `warnings`, `overlaps_top` (its CI
    overlaps the leader's: the two cannot be told apart on this data) and, for a task with
    more than two labels, `per_class` and `macro_auroc` (None otherwise)."""
    import json

    for entry in entries:
        try:
            labels = json.loads(entry.get("spec_json") or "{}").get("labels") or ["normal", "finding"]
        except ValueError:
            labels = ["normal", "finding"]
        entry["pooled_auroc"] = headline(entry)
        entry["clinic_mean_auroc"] = clinic_mean(entry)
        entry["per_class"] = final_per_class(entry)
        entry["macro_auroc"] = _finite((entry["per_class"] or {}).get("macro_auroc"))
        entry["selected"] = selected_checkpoint(entry)
        entry["warnings"] = model_warnings(entry, tuple(labels))
    entries.sort(key=lambda e: (e["pooled_auroc"] is None, -(e["pooled_auroc"] or 0.0), e["run_id"]))
    top = next((interval(e.get("pooled")) for e in entries if e["pooled_auroc"] is not None), None)
    for rank, entry in enumerate(entries, start=1):
        entry["rank"] = rank
        ci = interval(entry.get("pooled"))
        entry["overlaps_top"] = None if top is None or ci is None else (ci[0] <= top[1] and top[0] <= ci[1])
    return entries
