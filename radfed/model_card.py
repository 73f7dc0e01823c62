"""The model card of an exported round: what the file is, expects, was trained on and scored.

A model file on its own says nothing about which images it expects or how good it is;
the card travels with it, as JSON (for scripts) and Markdown (for people). Everything in
it is read from the store's leaderboard entry of the run (radfed.store.Store.leaderboard),
so its numbers are the store's: the exported round's pooled and per-clinic validation
figures with their 95 % CIs (named as radfed.reply.LABELS names them), the run's
headline (pooled AUROC of the final model), the held-out clinic's figures if the run had
one, the clinics' data cards (counts only), rounds, strategy and privacy settings.

Privacy: clinic names, counts, equipment names and figures only, as in the store; no
node ids, no paths of studies, nothing about a single patient.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, fields
from typing import Any

from radfed.architectures import NORMALISATIONS
from radfed.reply import LABELS, POOLED_AUROC, format_auroc
from radfed.results import rounds_done
from radfed.spec import ExperimentSpec, SpecError

CARD_VERSION = 1
POOLED_KEYS = (
    "auroc",
    "auroc_low",
    "auroc_high",
    "sensitivity",
    "specificity",
    "threshold",
    "threshold_logit",
    "ece",
    "images",
    "clinics",
    "prevalence",
)
CLINIC_KEYS = (
    "auroc",
    "auroc_low",
    "auroc_high",
    "sensitivity",
    "specificity",
    "threshold",
    "ece",
    "images",
    "patients",
)
NORMALISATION_TEXT = {
    "radimagenet": "x' = (x - 0.5) / 0.5 on every channel, i.e. [0, 1] -> [-1, 1] (RadImageNet "
    "PyTorch convention; also radfed's random initialisation)",
    "imagenet": "x' = (x - mean) / std with the ImageNet mean and std per channel",
    "keras": "x' = x - mean with the ImageNet BGR means / 255 and std 1 (RadImageNet Keras convention, caffe-style)",
}
INTENDED_USE = (
    "Research use only: studying federated fine-tuning of this task on data like the "
    "training clinics'. Not a medical device; not for diagnosis, triage or any "
    "decision about a patient."
)


def spec_values(spec_json: str) -> dict[str, Any]:
    """The run's spec as a dict with every key; defaults for keys a bad or old spec lacks."""
    try:
        return asdict(ExperimentSpec.from_json(spec_json))
    except (SpecError, ValueError, TypeError):
        defaults = {
            f.name: f.default
            if f.default is not MISSING
            else f.default_factory()
            if f.default_factory is not MISSING
            else None
            for f in fields(ExperimentSpec)
        }
        try:
            raw = json.loads(spec_json or "{}")
        except ValueError:
            raw = {}
        return {**defaults, **(raw if isinstance(raw, dict) else {})}


def _pick(figures: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    figures = figures or {}
    return {k: figures.get(k) for k in keys}


def _round_row(entry: dict[str, Any], server_round: int) -> dict[str, Any]:
    return next((r for r in entry.get("rounds", []) if r["server_round"] == server_round), {})


def input_section(spec: dict[str, Any], normalisation: str | None) -> dict[str, Any]:
    """Exactly what the exported model expects, and what it does to it itself."""
    size = int(spec.get("image_size") or 224)
    data = spec.get("data") or {}
    mean, std = NORMALISATIONS.get(normalisation or "", (None, None))
    return {
        "name": "image",
        "shape": ["N", 1, size, size],
        "dtype": "float32",
        "layout": "NCHW",
        "channels": 1,
        "image_size": size,
        "value_range": [0.0, 1.0],
        "preprocessing": (
            "Per DICOM file (radfed.dicom): the middle frame (frame_policy 'middle'; 'all': every "
            "frame); modality LUT (rescale slope/intercept); the task's window if set, else the "
            "file's VOI LUT or first window, else min-max over the image, mapped to [0, 1] and "
            "clipped; MONOCHROME1 inverted so that bright = dense; colour images to luminance. "
            f"Then the longer side resized to {size} px (antialiased linear), the image centred "
            f"and padded with 0 to {size} x {size}."
        ),
        "window": data.get("window"),
        "frame_policy": data.get("frame_policy", "middle"),
        "do_not": "Do not replicate to 3 channels or normalise before the model: it does both.",
        "inside_the_model": {
            "grey_to_rgb": "the single channel is copied to 3 channels",
            "normalisation": normalisation or "unknown",
            "formula": NORMALISATION_TEXT.get(normalisation or "", "see the checkpoint"),
            "mean": list(mean) if mean else None,
            "std": list(std) if std else None,
        },
    }


def output_section(spec: dict[str, Any], pooled: dict[str, Any]) -> dict[str, Any]:
    labels = list(spec.get("labels") or [])
    finding = (
        f"log-odds of '{labels[1]}' = logits[:, 1] - logits[:, 0]"
        if len(labels) == 2
        else "log-odds of any finding = logsumexp(logits[:, 1:]) - logits[:, 0]"
    )
    return {
        "name": "logits",
        "shape": ["N", len(labels)],
        "labels": labels,
        "meaning": f"unnormalised class scores in label order; softmax gives probabilities; {finding}",
        "operating_point": {
            "threshold": pooled.get("threshold"),
            "threshold_logit": pooled.get("threshold_logit"),
            "rule": "a finding is called when p(finding) >= threshold (log-odds >= threshold_logit): "
            "the Youden point of the pooled validation figures of this round",
        },
    }


def clinics_section(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The training clinics with their data cards' counts (labels, splits, equipment)."""
    cards = {c["clinic"]: c.get("card") or {} for c in entry.get("data_cards", [])}
    held = {c["clinic"] for c in entry.get("clinics", []) if c["phase"] == "holdout"}
    trained = {c["clinic"] for c in entry.get("clinics", []) if c["phase"] == "train"}
    out = []
    for name in sorted((trained | set(cards)) - held):
        card = cards.get(name, {})
        row: dict[str, Any] = {"clinic": name, "data_card": bool(card)}
        for split in ("train", "val"):
            part = card.get(split) or {}
            row[split] = {
                "images": part.get("total_images"),
                "patients": part.get("total_patients"),
                "images_by_label": part.get("images") or {},
                "patients_by_label": part.get("patients") or {},
            }
        row.update(
            rejected=card.get("rejected_total"),
            modalities=card.get("modalities") or {},
            manufacturers=card.get("manufacturers") or {},
        )
        out.append(row)
    return out


def evaluation_section(entry: dict[str, Any], server_round: int) -> dict[str, Any]:
    """The exported round's pooled and per-clinic figures, the run's headline, hold-out."""
    pooled = _pick(_round_row(entry, server_round).get("pooled"), POOLED_KEYS)
    per_clinic = [
        {"clinic": c["clinic"], **_pick(c.get("quality"), CLINIC_KEYS), "auroc": c.get("auroc")}
        for c in entry.get("clinics", [])
        if c["phase"] == "evaluate" and c["server_round"] == server_round
    ]
    holdout = [
        {
            "clinic": c["clinic"],
            "round": c["server_round"],
            **_pick(c.get("quality"), CLINIC_KEYS),
            "auroc": c.get("auroc"),
            "note": c.get("note"),
        }
        for c in entry.get("clinics", [])
        if c["phase"] == "holdout"
    ]
    final = entry.get("pooled") or {}
    return {
        "headline": {
            "name": POOLED_AUROC,
            "round": server_round,
            "auroc": pooled["auroc"],
            "ci95": [pooled["auroc_low"], pooled["auroc_high"]],
            "text": format_auroc(pooled["auroc"], pooled["auroc_low"], pooled["auroc_high"]),
        },
        "pooled": pooled,
        "per_clinic": per_clinic,
        "clinic_mean_auroc": _round_row(entry, server_round).get("val_auroc"),
        "run_headline": {
            "name": f"{POOLED_AUROC} of the final model",
            "auroc": entry.get("pooled_auroc"),
            "ci95": [final.get("auroc_low"), final.get("auroc_high")],
        },
        "holdout": holdout,
        "final_model_warnings": list(entry.get("warnings") or []),
        "labels": {k: LABELS[k] for k in CLINIC_KEYS + ("threshold_logit", "prevalence") if k in LABELS},
    }


def limitations(entry: dict[str, Any], spec: dict[str, Any], clinics: int, selected: bool) -> list[str]:
    out = [
        f"Trained on {clinics} clinic(s); performance elsewhere (other scanners, populations, protocols) is unknown.",
        f"Validated by patient split within each clinic (val_fraction {spec.get('val_fraction')}): "
        "validation and training images of a clinic never share a patient, but come from the same "
        "sites; this is not an external validation.",
    ]
    if selected:
        out.append(
            "The round was selected on the same validation patients its figures come from, "
            "so they are optimistic; a held-out clinic's figures, where present, are not."
        )
    if spec.get("bn_policy") == "clinic" or entry.get("strategy") == "fedbn":
        how = (
            "kept their own BatchNorm layers (FedBN)"
            if entry.get("strategy") == "fedbn"
            else "re-estimated BatchNorm statistics on their own training images (class-balanced) before evaluating"
        )
        out.append(
            f"Figures were measured after the clinics {how}; this file holds the federation's "
            "BatchNorm statistics, so its figures at a new site may differ."
        )
    if (entry.get("privacy") or {}).get("mode", "none") == "none":
        out.append("Trained without differential privacy.")
    return out


def build_card(
    entry: dict[str, Any],
    *,
    server_round: int,
    reason: str,
    normalisation: str | None,
    checkpoint: dict[str, Any] | None = None,
    export: dict[str, Any] | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """The card as a JSON-ready dict; `export` describes the file (None: the checkpoint only)."""
    spec = spec_values(entry.get("spec_json") or "{}")
    evaluation = evaluation_section(entry, server_round)
    clinics = clinics_section(entry)
    selected = (entry.get("selected") or {}).get("round") == server_round
    return {
        "card_version": CARD_VERSION,
        "created_at": created_at,
        "run": {
            "experiment": entry["experiment"],
            "flwr_run_id": entry["flwr_run_id"],
            "run_id": entry["run_id"],
            "status": entry["status"],
            "round": server_round,
            "started_at": entry.get("started_at"),
            "finished_at": entry.get("finished_at"),
        },
        "task": {
            "labels": list(spec.get("labels") or []),
            "finding": "any label but the first",
            "classes": len(spec.get("labels") or []),
        },
        "backbone": {
            "architecture": spec.get("backbone"),
            "weights": spec.get("weights"),
            "weight_source": spec.get("weight_source") or None,
            "normalisation": normalisation,
            "freeze": spec.get("freeze"),
            "unfreeze_top": spec.get("unfreeze_top"),
        },
        "input": input_section(spec, normalisation),
        "output": output_section(spec, evaluation["pooled"]),
        "training": {
            "clinics": clinics,
            "rounds_planned": entry.get("rounds_planned"),
            "rounds_done": rounds_done(entry),
            "stopped_early": entry.get("stopped_early"),
            "resumed_from": entry.get("resumed_from"),
            "holdout": entry.get("holdout"),
            "strategy": entry.get("strategy"),
            "strategy_params": spec.get("strategy_params") or {},
            "privacy": entry.get("privacy") or {"mode": "none"},
            **{
                k: spec.get(k)
                for k in (
                    "local_epochs",
                    "batch_size",
                    "learning_rate",
                    "weight_decay",
                    "label_smoothing",
                    "augment",
                    "bn_policy",
                    "val_fraction",
                    "seed",
                    "min_clinics",
                )
            },
        },
        "evaluation": evaluation,
        "selection": {
            "round": server_round,
            "reason": reason,
            "selected_round": (entry.get("selected") or {}).get("round"),
            "last_round": max((c["server_round"] for c in entry.get("checkpoints", [])), default=None),
        },
        "intended_use": INTENDED_USE,
        "limitations": limitations(entry, spec, len(clinics), selected),
        "checkpoint": checkpoint,
        "export": export,
    }


# ---------------------------------------------------------------------- Markdown


def _num(value: Any, fmt: str = ".3f") -> str:
    """A figure at the card's precision; counts (images, patients) as whole numbers."""
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return format(value, fmt) if isinstance(value, float) else str(value)


def _shape(shape: list[Any]) -> str:
    return " x ".join(str(d) for d in shape)


def _count(value: Any) -> str:
    return "-" if value is None else str(int(value))


def _cells(figures: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [_count(figures.get(k)) if k in ("images", "patients") else _num(figures.get(k)) for k in keys]


def _counts(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items()) or "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def card_markdown(card: dict[str, Any]) -> str:
    """The card for people: the same content as the JSON, in sections."""
    run, inp, out, ev, tr = card["run"], card["input"], card["output"], card["evaluation"], card["training"]
    inside = inp["inside_the_model"]
    lines = [
        f"# Model card: {run['experiment']}, run {run['flwr_run_id']}, round {run['round']}",
        "",
        f"> {card['intended_use']}",
        "",
        f"**Headline ({ev['headline']['name']}, round {run['round']}):** {ev['headline']['text']} "
        f"over {len(ev['per_clinic'])} clinic(s)' validation patients (95 % CI).",
        "",
        "## Task",
        "",
        f"Labels, in output order: {', '.join(card['task']['labels'])}; a finding is {card['task']['finding']}.",
        "",
        "## Input the exported model expects",
        "",
        f"- `{inp['name']}`: {inp['dtype']}, shape {_shape(inp['shape'])} ({inp['layout']}), one grey channel, "
        f"values in [0, 1], bright = dense.",
        f"- Preprocessing: {inp['preprocessing']}",
        f"- Window: {inp['window'] or 'the file’s own'}; frames: {inp['frame_policy']}.",
        f"- Inside the model: {inside['grey_to_rgb']}, then {inside['normalisation']} "
        f"normalisation, {inside['formula']}"
        + (f" (mean {inside['mean']}, std {inside['std']})." if inside["mean"] else "."),
        f"- {inp['do_not']}",
        "",
        "## Output",
        "",
        f"`{out['name']}`: shape {_shape(out['shape'])}, {out['meaning']}.",
        f"Operating point: p(finding) ≥ {_num(out['operating_point']['threshold'], '.4g')} "
        f"(log-odds ≥ {_num(out['operating_point']['threshold_logit'], '.4g')}): "
        "the Youden point of this round's pooled validation figures.",
        "",
        "## Backbone and weights",
        "",
        f"{card['backbone']['architecture']}, initial weights {card['backbone']['weights']}"
        + (f" ({card['backbone']['weight_source']})" if card["backbone"]["weight_source"] else "")
        + f", input convention {card['backbone']['normalisation']}, freeze {card['backbone']['freeze']}.",
        "",
        "## Training",
        "",
        f"{tr['rounds_done']} of {tr['rounds_planned']} rounds, strategy {tr['strategy']}"
        + (f" {tr['strategy_params']}" if tr["strategy_params"] else "")
        + f", privacy {_privacy(tr['privacy'])}, {tr['local_epochs']} local epoch(s), batch "
        f"{tr['batch_size']}, learning rate {tr['learning_rate']}, BatchNorm policy {tr['bn_policy']}, "
        f"seed {tr['seed']}."
        + (f" {tr['stopped_early']}." if tr["stopped_early"] else "")
        + (f" Clinic held out of training: {tr['holdout']}." if tr["holdout"] else ""),
        "",
    ]
    lines += _table(
        [
            "Clinic",
            "Train images",
            "Train patients",
            "Val images",
            "Val patients",
            "Images by label (train)",
            "Modalities",
        ],
        [
            [
                c["clinic"],
                _count(c["train"]["images"]),
                _count(c["train"]["patients"]),
                _count(c["val"]["images"]),
                _count(c["val"]["patients"]),
                _counts(c["train"]["images_by_label"]),
                _counts(c["modalities"]),
            ]
            for c in tr["clinics"]
        ],
    ) + [""]
    lines += [f"## Validation figures of round {run['round']} (the exported model)", ""]
    keys = ("auroc", "auroc_low", "auroc_high", "sensitivity", "specificity", "threshold", "ece", "images")
    lines += _table(
        ["", *(LABELS[k] for k in keys)],
        [["pooled", *_cells(ev["pooled"], keys)]] + [[c["clinic"], *_cells(c, keys)] for c in ev["per_clinic"]],
    ) + [""]
    lines.append(
        f"Clinic mean AUROC (weighted by validation images): {_num(ev['clinic_mean_auroc'])}. "
        f"Run headline ({ev['run_headline']['name']}): "
        f"{format_auroc(ev['run_headline']['auroc'], *ev['run_headline']['ci95'])}."
    )
    for row in ev["holdout"]:
        lines.append(
            f"Held-out clinic {row['clinic']} (never trained on; final model, round {row['round']}): "
            f"AUROC {format_auroc(row['auroc'], row['auroc_low'], row['auroc_high'])}; sensitivity "
            f"{_num(row['sensitivity'])} and specificity {_num(row['specificity'])} at the "
            "federation's pooled threshold."
        )
    lines += [f"Warning about the run's final model: {w}." for w in ev["final_model_warnings"]]
    sel = card["selection"]
    lines += [
        "",
        "## Round and why",
        "",
        sel["reason"],
        "",
        "## Intended use and limitations",
        "",
        card["intended_use"],
        "",
    ]
    lines += [f"- {item}" for item in card["limitations"]] + [""]
    lines += _file_lines(card)
    return "\n".join(lines) + "\n"


def _privacy(privacy: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in privacy.items() if k != "mode")
    return privacy.get("mode", "none") + (f" ({params})" if params else "")


def _file_lines(card: dict[str, Any]) -> list[str]:
    lines = ["## File", ""]
    ckpt, exp = card.get("checkpoint") or {}, card.get("export")
    if exp:
        lines += [
            f"- {exp['format']}: `{exp['file']}`, {exp['size_bytes']} bytes, sha256 `{exp['sha256']}`",
            f"- Written by {exp['exporter']}"
            + (f", opset {exp['opset']}" if exp.get("opset") else "")
            + f"; checked with {exp['check']['runtime']} on a {exp['check']['batch_shape']} batch: "
            f"max abs difference from PyTorch {exp['check']['max_abs_diff']:.3g} "
            f"(tolerance {exp['check']['tolerance']:g}).",
        ]
    else:
        lines.append("- No exported file with this card: `coordinator export RUN` writes one.")
    if ckpt:
        lines.append(f"- From checkpoint round {ckpt.get('round')}, sha256 `{ckpt.get('sha256')}`.")
    return lines
