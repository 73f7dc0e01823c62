"""Clinic memory benchmark: peak resident memory and images/s against the clinic's size.

    python bench/clinic_memory.py [--sizes 1000,5000,20000] [--size 224] [--rounds 2]
                                  [--tensor-sizes 1000,5000] [--workers 2] [--keep DIR]

Writes one pool of generated 8-bit 256 px DX files (two per patient, labels alternating
by patient; about 65 kB each, so 20k files take 1.3 GB) and, per size, a clinic folder of
hard links to the first N of them. Each measurement runs in a fresh process, so its peak
resident memory (ru_maxrss) is its own:

* decode: ``load_clinic`` with an empty cache folder (headers read, pixels decoded by
  --workers processes, written to the cache as they come);
* rows: ``load_clinic`` from the warm cache, one training epoch of a tiny CNN
  (``radfed.training.train_local``, flip augmentation, batch 32) over the train split read
  a batch at a time, and ``predict_logits`` over the validation split; images/s counts
  the training epoch;
* tensor (--tensor-sizes): the same, with the split first made one float32 tensor in
  memory (``Split.images``): what every clinic did before the rows, for comparison.

The model is tiny so that images/s measures the data path, not the network. Runs of
different sizes and kinds alternate for --rounds rounds (the machine may be shared); the
best images/s and the highest peak memory of each count. Goals: rows' peak memory at 20k
within 1.1x of 1k (decode too), and images/s unchanged from 1k to 20k and against
tensor. The last line printed is ONE JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = ("normal", "opacity")
SIDE = 256  # stored size; loads resize to --size


def _template():
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.Modality, ds.Manufacturer = "DX", "BenchVendor"
    ds.Rows = ds.Columns = SIDE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    return ds


def make_pool(pool: Path, n_files: int) -> None:
    """n_files 8-bit DX files pool/IMnnnnnn.dcm: rolled copies of 16 noisy gradients."""
    from pydicom.uid import generate_uid

    pool.mkdir(parents=True, exist_ok=True)
    have = len(list(pool.glob("IM*.dcm")))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    bases = [
        np.clip(
            40 + 150 * (np.sin(xx / (9 + k)) * np.cos(yy / (13 + k)) + 1) / 2 + 20 * rng.standard_normal((SIDE, SIDE)),
            0,
            255,
        ).astype(np.uint8)
        for k in range(16)
    ]
    ds = _template()
    start = time.perf_counter()
    for i in range(have, n_files):
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.PatientID = f"BENCH-{i // 2:06d}"
        ds.PixelData = np.roll(bases[i % 16], i % SIDE, axis=1).tobytes()
        ds.save_as(pool / f"IM{i:06d}.dcm", enforce_file_format=True)
        if (i + 1) % 2000 == 0:
            print(f"  generated {i + 1}/{n_files} files ({time.perf_counter() - start:.0f} s)", file=sys.stderr)


def make_clinic(pool: Path, folder: Path, n_files: int) -> None:
    """folder: hard links to the pool's first n_files files, and labels.csv."""
    if (folder / "labels.csv").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["file,label"]
    for i in range(n_files):
        name = f"IM{i:06d}.dcm"
        os.link(pool / name, folder / name)
        rows.append(f"{name},{LABELS[(i // 2) % 2]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def _rss_mb() -> float:
    """This process's current resident memory (VmRSS), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints one JSON line."""
    import torch
    from torch import nn

    from radfed.data import load_clinic
    from radfed.training import predict_logits, train_local

    torch.set_num_threads(1)  # the machine is shared; one thread keeps runs comparable
    baseline = _rss_mb()  # interpreter, torch, radfed: before any data
    t0 = time.perf_counter()
    data = load_clinic(args.folder, LABELS, args.size, cache_dir=args.cache, workers=args.workers)
    load_s = time.perf_counter() - t0
    out = {
        "kind": args.child,
        "files": args.files,
        "load_s": round(load_s, 2),
        "train_images": len(data.train),
        "val_images": len(data.val),
    }
    if args.child != "decode":
        train = data.train.images if args.child == "tensor" else data.train.pixels
        val = data.val.images if args.child == "tensor" else data.val.pixels
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(1, 8, 7, stride=4),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 2),
        )
        t1 = time.perf_counter()
        train_local(
            model,
            train,
            data.train.labels,
            epochs=1,
            batch_size=32,
            learning_rate=1e-3,
            seed=1,
            augment="flip",
            device=torch.device("cpu"),
        )
        train_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        logits = predict_logits(model, val, batch_size=64, device=torch.device("cpu"))
        assert len(logits) == len(data.val)
        out.update(
            train_images_per_s=round(len(data.train) / train_s, 1),
            eval_images_per_s=round(len(data.val) / (time.perf_counter() - t2), 1),
        )
    out.update(
        baseline_rss_mb=round(baseline, 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        helpers_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    )
    print(json.dumps(out))


def run_child(kind: str, folder: Path, cache: Path, files: int, size: int, workers: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--folder",
        str(folder),
        "--cache",
        str(cache),
        "--files",
        str(files),
        "--size",
        str(size),
        "--workers",
        str(workers),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {files} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {json.dumps(result)}", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--sizes", default="1000,5000,20000", help="clinic sizes (files), comma-separated")
    parser.add_argument(
        "--tensor-sizes",
        default="1000,5000",
        help="sizes also run with the split as one in-memory tensor ('' for none)",
    )
    parser.add_argument("--size", type=int, default=224, help="image size the clinic loads at")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the rows/tensor runs")
    parser.add_argument("--keep", type=Path, default=None, help="keep (and reuse) the generated files here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--files", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    tensor_sizes = [int(s) for s in args.tensor_sizes.split(",") if s]
    work = args.keep or Path(tempfile.mkdtemp(prefix="radfed-memory-"))
    try:
        print(f"writing {max(sizes)} DICOM files under {work}", file=sys.stderr)
        make_pool(work / "pool", max(sizes))
        decode: dict[int, dict] = {}
        for n in sizes:
            make_clinic(work / "pool", work / f"clinic-{n}", n)
            shutil.rmtree(work / f"cache-{n}", ignore_errors=True)
            print(f"decoding the {n}-file clinic into its cache", file=sys.stderr)
            decode[n] = run_child("decode", work / f"clinic-{n}", work / f"cache-{n}", n, args.size, args.workers)
        runs: dict[tuple[str, int], list[dict]] = {}
        load_avg = os.getloadavg()[0]
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}: one training epoch per clinic", file=sys.stderr)
            for n in sizes:
                for kind in ("rows", "tensor") if n in tensor_sizes else ("rows",):
                    runs.setdefault((kind, n), []).append(
                        run_child(kind, work / f"clinic-{n}", work / f"cache-{n}", n, args.size, args.workers)
                    )
        figures: dict[str, dict] = {}
        for (kind, n), found in runs.items():
            figures.setdefault(kind, {})[str(n)] = {
                "peak_rss_mb": max(f["peak_rss_mb"] for f in found),
                "baseline_rss_mb": min(f["baseline_rss_mb"] for f in found),
                "train_images_per_s": max(f["train_images_per_s"] for f in found),
                "eval_images_per_s": max(f["eval_images_per_s"] for f in found),
                "load_s": min(f["load_s"] for f in found),
            }
        figures["decode"] = {
            str(n): {k: d[k] for k in ("peak_rss_mb", "helpers_peak_rss_mb", "load_s")} for n, d in decode.items()
        }
        small, big = str(min(sizes)), str(max(sizes))
        rows = figures["rows"]
        result = {
            "bench": "clinic_memory",
            "image_size": args.size,
            "sizes": sizes,
            "workers": args.workers,
            "rounds": args.rounds,
            "load_avg_1m": round(load_avg, 1),
            **figures,
            "rows_peak_ratio": round(rows[big]["peak_rss_mb"] / rows[small]["peak_rss_mb"], 3),
            "decode_peak_ratio": round(
                figures["decode"][big]["peak_rss_mb"] / figures["decode"][small]["peak_rss_mb"], 3
            ),
            "rows_throughput_ratio": round(rows[big]["train_images_per_s"] / rows[small]["train_images_per_s"], 3),
        }
        common = [str(n) for n in tensor_sizes if str(n) in rows and "tensor" in figures]
        if common:
            result["rows_vs_tensor_throughput"] = {
                n: round(rows[n]["train_images_per_s"] / figures["tensor"][n]["train_images_per_s"], 3) for n in common
            }
        result["goal_met"] = result["rows_peak_ratio"] < 1.1 and result["decode_peak_ratio"] < 1.1
        print(json.dumps(result))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
