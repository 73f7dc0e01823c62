"""Do the delivered model's heat maps point at the finding? (issue 16)

Runs the README's demo (`coordinator demo`: 3 clinics, ResNet18 at 64 px, 3 rounds, real
SuperLink and SuperNodes), then at every clinic `client-node predict` with the model the
run delivered to it, and counts the positive images whose Grad-CAM peak lies inside the
opacity the generator drew (radfed.demo_findings). Also reports, per clinic, the AUROC
predict measured on its validation patients beside the one the federation recorded.

    python bench/heatmaps.py [--seed 0] [--workdir DIR]

Last line: one JSON object (rate, hits, images, chance, per clinic).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radfed.demo_findings import heatmap_hits  # noqa: E402
from radfed.store import Store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="predict again in WORKDIR's finished demo")
    parser.add_argument("--cam-layer", default=None, help="the stage heat maps read (default: predict's rule)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="radfed-cam-"))
    if not args.reuse:
        demo = subprocess.run(
            [sys.executable, "-m", "server.cli", "demo", "--workdir", str(work), "--seed", str(args.seed)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if demo.returncode != 0:
            sys.exit(f"demo failed: {demo.stderr[-2000:]}")
    store = Store(f"sqlite:///{work / 'radfed.db'}")
    entry = store.leaderboard()[0]
    final = max(c["round"] for c in store.checkpoints_of(entry["run_id"]))
    size = json.loads(entry["spec_json"])["image_size"]
    result: dict = {
        "bench": "heatmaps",
        "seed": args.seed,
        "cam_layer": args.cam_layer or "default",
        "pooled_auroc": entry.get("final_auroc"),
        "image_size": size,
        "clinics": {},
    }
    hits = images = 0
    chance = 0.0
    for folder in sorted((work / "data").iterdir()):
        out = work / f"predictions-{folder.name}"
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "client_node.cli",
                "predict",
                "--model",
                entry["flwr_run_id"],
                "--name",
                folder.name,
                "--home",
                str(work / "nodes"),
                "--data",
                str(folder),
                "--out",
                str(out),
                *(["--cam-layer", args.cam_layer] if args.cam_layer else []),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            sys.exit(f"predict failed at {folder.name}: {run.stderr[-2000:]}")
        found = heatmap_hits(folder, out / "predictions.csv", size)
        summary = json.loads((out / "summary.json").read_text())
        recorded = [
            c["auroc"]
            for c in entry["clinics"]
            if c["clinic"] == folder.name and c["phase"] == "evaluate" and c["server_round"] == final
        ]
        result["clinics"][folder.name] = {
            **found,
            "predict_auroc": summary["validation"]["auroc"],
            "recorded_auroc": recorded[0] if recorded else None,
        }
        hits, images = hits + found["hits"], images + found["images"]
        chance += found["chance"] * found["images"]
    result.update(
        {
            "hits": hits,
            "images": images,
            "rate": hits / images if images else None,
            "chance": chance / images if images else None,
            "workdir": str(work),
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
