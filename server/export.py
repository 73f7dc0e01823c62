"""`coordinator export`'s work: find the run and the round, export it, write its model card.

A run is named by its Flower run id (what `coordinator run` prints; an id it was resumed
from also works) or by the store's run id (the leaderboard JSON's `run_id`). The round is
the run's selected checkpoint (best pooled AUROC) unless `--round` says otherwise, else
the last. Every refusal is one line (`ExportError`): an unknown run, a round without a
checkpoint, a checkpoint file missing or changed since it was recorded.

The dashboard offers the same files (dashboard/exports.py): it calls `export_run` on
demand, and reuses what `coordinator export` already wrote to the default folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radfed.flower_env import radfed_home
from radfed.model_card import build_card, card_markdown, spec_values
from radfed.model_export import FORMATS, TOLERANCE, ExportedModel, ExportError, export_model, load_checkpoint_model
from radfed.reply import POOLED_AUROC, format_auroc
from radfed.store import Store
from server.recorder import sha256_file

__all__ = [
    "ExportError",
    "ExportOutcome",
    "FORMATS",
    "card_normalisation",
    "card_paths",
    "checked_file",
    "checkpoint_card",
    "choose_checkpoint",
    "default_export_dir",
    "existing_export",
    "export_entry",
    "export_run",
    "export_stem",
    "find_run",
]


@dataclass(frozen=True)
class ExportOutcome:
    """What `export_run` wrote, and how the file compared with PyTorch."""

    model: Path
    card_json: Path
    card_md: Path
    exported: ExportedModel
    sha256: str
    server_round: int
    reason: str


def default_export_dir() -> Path:
    """Where exports go without --out, and where the dashboard looks for them."""
    return radfed_home() / "exports"


def find_run(store: Store, key: str) -> dict[str, Any]:
    """The leaderboard entry of run `key`: a Flower run id (current or resumed from), else a
    store run id. A key that names two different runs is refused rather than guessed."""
    key = str(key).strip()
    entries = store.leaderboard(include_running=True)
    row = store.run_row(key)
    by_flower = next((e for e in entries if row is not None and e["run_id"] == row.id), None)
    by_store = next((e for e in entries if str(e["run_id"]) == key), None)
    if by_flower and by_store and by_flower["run_id"] != by_store["run_id"]:
        raise ExportError(
            f"run {key} is both Flower run {key} ({by_flower['experiment']}) and store run "
            f"{key} ({by_store['experiment']}, Flower run {by_store['flwr_run_id']}); "
            f"name the second by its Flower run id"
        )
    entry = by_flower or by_store
    if entry is None:
        raise ExportError(f"no run {key} in {store.safe_url}; `coordinator leaderboard` lists them")
    return entry


def _selection_text(entry: dict[str, Any], server_round: int) -> str:
    rounds = {r["server_round"]: r for r in entry.get("rounds", [])}
    pooled = (rounds.get(server_round) or {}).get("pooled") or {}
    return format_auroc(pooled.get("auroc"), pooled.get("auroc_low"), pooled.get("auroc_high"))


def choose_checkpoint(entry: dict[str, Any], server_round: int | None = None) -> tuple[dict[str, Any], str]:
    """(the checkpoint row to export, why that round), or ExportError."""
    run = entry["flwr_run_id"]
    rows: dict[int, dict[str, Any]] = {}
    for row in entry.get("checkpoints", []):  # ordered by round, then id: the newest row wins
        rows[row["server_round"]] = row
    if not rows:
        raise ExportError(f"run {run} has no checkpoints recorded; nothing to export")
    selected = (entry.get("selected") or {}).get("round")
    last = max(rows)
    best = (
        f"the run's selected checkpoint: the best {POOLED_AUROC} on the clinics' validation patients "
        f"({_selection_text(entry, selected)} in round {selected}; the earliest round on ties)"
    )
    if server_round is not None:
        if server_round not in rows:
            raise ExportError(
                f"run {run} has no checkpoint for round {server_round}; rounds with one: "
                f"{', '.join(str(r) for r in sorted(rows))}"
            )
        why = f"Round {server_round}, asked for with --round"
        if server_round == selected:
            why += f"; it is also {best}"
        elif selected is not None:
            why += f" (the selected round is {selected})"
        return rows[server_round], why + "."
    if selected in rows:
        return rows[selected], f"Round {selected}: {best}."
    if selected is not None:
        return rows[last], f"Round {last}, the last checkpoint: the selected round {selected} has none."
    return rows[last], f"Round {last}, the last checkpoint: no round has a {POOLED_AUROC} to select by."


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "experiment"


def export_stem(entry: dict[str, Any], server_round: int) -> str:
    """'EXPERIMENT-run-ID-round-N': the name of every file exported from that round."""
    return f"{_safe(entry['experiment'])}-run-{_safe(entry['flwr_run_id'])}-round-{server_round}"


def card_paths(model: Path) -> tuple[Path, Path]:
    """(JSON, Markdown) card paths beside an exported file."""
    return model.with_name(model.name + ".card.json"), model.with_name(model.name + ".card.md")


def checked_file(row: dict[str, Any]) -> Path:
    """The checkpoint file, present and unchanged since it was recorded, or ExportError."""
    path = Path(row["path"])
    if not path.is_file():
        raise ExportError(
            f"checkpoint of round {row['server_round']} is missing: {path} (moved, deleted or on another machine)"
        )
    if sha256_file(path) != row["sha256"]:
        raise ExportError(
            f"checkpoint of round {row['server_round']} changed since it was recorded "
            f"(sha256 mismatch): {path}; not exporting it"
        )
    return path


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def export_run(
    store: Store,
    key: str,
    fmt: str,
    server_round: int | None = None,
    out: Path | None = None,
    tolerance: float = TOLERANCE,
) -> ExportOutcome:
    """Export one round of run `key` as `fmt` into `out` with its model card (JSON, Markdown)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format '{fmt}'; allowed: {', '.join(FORMATS)}")
    return export_entry(find_run(store, key), fmt, server_round, out, tolerance)


def export_entry(
    entry: dict[str, Any],
    fmt: str,
    server_round: int | None = None,
    out: Path | None = None,
    tolerance: float = TOLERANCE,
) -> ExportOutcome:
    """`export_run` for a leaderboard entry already at hand (the dashboard's)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format '{fmt}'; allowed: {', '.join(FORMATS)}")
    row, reason = choose_checkpoint(entry, server_round)
    path = checked_file(row)
    model, normalisation = load_checkpoint_model(path, entry["spec_json"])
    folder = Path(out) if out is not None else default_export_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (export_stem(entry, row["server_round"]) + FORMATS[fmt])
    exported = export_model(model, fmt, target, int(spec_values(entry["spec_json"])["image_size"]), tolerance)
    digest = sha256_file(target)
    card = build_card(
        entry,
        server_round=row["server_round"],
        reason=reason,
        normalisation=normalisation,
        checkpoint=_checkpoint_facts(row),
        export={
            "format": fmt,
            "file": target.name,
            "sha256": digest,
            "size_bytes": exported.size_bytes,
            "exporter": exported.exporter,
            "opset": exported.opset,
            "check": {
                "runtime": exported.check.runtime,
                "batch_shape": list(exported.check.batch_shape),
                "max_abs_diff": exported.check.max_abs_diff,
                "tolerance": exported.check.tolerance,
                "passed": exported.check.passed,
            },
        },
        created_at=_now(),
    )
    card_json, card_md = card_paths(target)
    card_json.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    card_md.write_text(card_markdown(card))
    return ExportOutcome(target, card_json, card_md, exported, digest, row["server_round"], reason)


def _checkpoint_facts(row: dict[str, Any]) -> dict[str, Any]:
    return {"round": row["server_round"], "file": Path(row["path"]).name, "sha256": row["sha256"]}


def existing_export(entry: dict[str, Any], fmt: str, folder: Path | None = None) -> tuple[Path, Path] | None:
    """(model, Markdown card) that `export_run` already wrote for the default round, when
    its card names the checkpoint as recorded (same sha256) and the file is still there."""
    try:
        row, _ = choose_checkpoint(entry)
    except ExportError:
        return None
    model = (folder or default_export_dir()) / (export_stem(entry, row["server_round"]) + FORMATS[fmt])
    card_json, card_md = card_paths(model)
    try:
        card = json.loads(card_json.read_text())
        fits = card["checkpoint"]["sha256"] == row["sha256"] and card["export"]["file"] == model.name
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (model, card_md) if fits and model.is_file() and card_md.is_file() else None


def card_normalisation(entry: dict[str, Any], row: dict[str, Any]) -> str | None:
    """The input convention of a checkpoint without loading its model: stored in the file;
    for a file not at hand, a random initialisation's; None when it cannot be known."""
    from radfed.models import WeightsError
    from radfed.weights import checkpoint_info

    try:
        info = checkpoint_info(Path(row["path"])) if Path(row["path"]).is_file() else None
    except WeightsError:
        info = None
    if info is not None:
        return str(info["normalisation"])
    return "radimagenet" if spec_values(entry.get("spec_json") or "{}").get("weights") == "random" else None


def checkpoint_card(entry: dict[str, Any]) -> tuple[str, str]:
    """(file name, Markdown) of the card of the round `export_run` would export, without
    exporting: for the dashboard's download before any file is made."""
    row, reason = choose_checkpoint(entry)
    card = build_card(
        entry,
        server_round=row["server_round"],
        reason=reason,
        normalisation=card_normalisation(entry, row),
        checkpoint=_checkpoint_facts(row),
        created_at=_now(),
    )
    return export_stem(entry, row["server_round"]) + ".card.md", card_markdown(card)
