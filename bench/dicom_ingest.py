"""Ingest benchmark: files per second of a naive loop against radfed's decode path and cache.

    python bench/dicom_ingest.py [--files 300] [--size 224] [--workers 2] [--keep DIR]

Writes a realistic generated clinic (CT 512x512 signed with rescale, CR/DX 1024-2048 px
12-bit, some MONOCHROME1, ~20% RLE / JPEG-LS compressed), then times, in one run:

* naive: single process, per file ``dcmread`` + ``pixel_array`` + min-max + resize_pad;
* radfed: ``load_clinic(workers=N)`` without cache (full pipeline: headers, checks,
  modality LUT, VOI, MONOCHROME1, resize, patient split), headers and pixels spread over
  N processes, JPEG-LS through CharLS (pyjpegls) where pydicom's default picks libjpeg;
* radfed_one_process: the same with workers=1, to show what the second core adds;
* cached: a later ``load_clinic`` call with a warm cache_dir (no DICOM file is opened:
  header facts and pixels both come from the cache), against a decoding call.

Goals: radfed >= 1.5x naive (it uses both cores), cached >= 20x faster than decoding.
The machine may be shared, so naive and radfed runs alternate for --rounds rounds and
the best time of each counts; the load average at the start is printed with the figures.
The last line printed is ONE JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LABELS = ("normal", "opacity")


def _dataset(rng: np.random.Generator, index: int):
    """One generated image dataset: mostly CT slices, some big radiographs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName = f"BENCH-{index // 3:04d}", "BENCH^PATIENT"
    ds.SamplesPerPixel, ds.BitsAllocated = 1, 16
    if index % 4 != 3:  # CT slice, 512 x 512, signed HU via rescale
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.Modality, ds.Rows, ds.Columns = "CT", 512, 512
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PhotometricInterpretation = "MONOCHROME2"
        yy, xx = np.mgrid[-1:1:512j, -1:1:512j]
        body = (xx**2 + yy**2 < 0.8).astype(np.float64)
        hu = -1000 + body * (1040 + 60 * rng.standard_normal((512, 512)))
        ds.PixelData = np.clip(hu + 1024, -2000, 4000).astype(np.int16).tobytes()
    else:  # CR/DX radiograph, 1024-2048 px, 12-bit, some MONOCHROME1
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        side = int(rng.choice([1024, 1536, 2048]))
        rows, cols = side, int(side * rng.uniform(0.8, 1.0))
        ds.Modality, ds.Rows, ds.Columns = "CR", rows, cols
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.PhotometricInterpretation = "MONOCHROME1" if index % 8 == 7 else "MONOCHROME2"
        ds.WindowCenter, ds.WindowWidth = 2048, 4000
        base = np.linspace(500, 3500, cols)[None, :] + 200 * rng.standard_normal((rows, cols))
        ds.PixelData = np.clip(base, 0, 4095).astype(np.uint16).tobytes()
    return ds


def make_folder(root: Path, n_files: int, seed: int = 0) -> list[Path]:
    """Write n_files images and labels.csv; every 5th file compressed (RLE or JPEG-LS)."""
    from pydicom.uid import JPEGLSLossless, RLELossless

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths, rows = [], ["file,label"]
    for i in range(n_files):
        ds = _dataset(rng, i)
        if i % 5 == 4:
            ds.compress(RLELossless if i % 10 == 4 else JPEGLSLossless)
        rel = f"study{i // 30:02d}/IM{i:05d}.dcm"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(root / rel, enforce_file_format=True)
        paths.append(root / rel)
        rows.append(f"{rel},{LABELS[(i // 3) % 2]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return paths


def naive_loop(paths: list[Path], size: int) -> float:
    """Seconds for the straightforward single-process loop."""
    from pydicom import dcmread

    from radfed.dicom import resize_pad

    start = time.perf_counter()
    for path in paths:
        arr = dcmread(path).pixel_array.astype(np.float32)
        low, high = float(arr.min()), float(arr.max())
        resize_pad((arr - low) / max(high - low, 1e-6), size)
    return time.perf_counter() - start


def timed_load(root: Path, size: int, workers: int, cache_dir: Path | None) -> tuple[float, int]:
    """Seconds and sample count of one load_clinic call."""
    from radfed.data import load_clinic

    start = time.perf_counter()
    clinic = load_clinic(root, LABELS, size, workers=workers, cache_dir=cache_dir)
    seconds = time.perf_counter() - start
    assert not clinic.rejected, clinic.rejected[:3]
    return seconds, len(clinic.train) + len(clinic.val)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating naive/radfed rounds; best time counts")
    parser.add_argument("--keep", type=Path, default=None, help="reuse/keep the generated folder here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="radfed-bench-"))
    root = args.keep or work / "clinic"
    try:
        if (root / "labels.csv").is_file():
            paths = sorted(root.glob("study*/IM*.dcm"))
        else:
            start = time.perf_counter()
            paths = make_folder(root, args.files)
            print(f"generated {len(paths)} files in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        megabytes = sum(p.stat().st_size for p in paths) / 2**20
        load_before = os.getloadavg()[0]
        naive_s = decode_s = float("inf")
        for _ in range(max(1, args.rounds)):
            naive_s = min(naive_s, naive_loop(paths, args.size))
            seconds, n = timed_load(root, args.size, args.workers, None)
            decode_s = min(decode_s, seconds)
        serial_s, _ = timed_load(root, args.size, 1, None)
        cache = work / "cache"
        first_s, _ = timed_load(root, args.size, args.workers, cache)
        cached_s = float("inf")
        for _ in range(3):
            seconds, n_cached = timed_load(root, args.size, args.workers, cache)
            cached_s = min(cached_s, seconds)
        assert n == n_cached == len(paths)
        files = len(paths)
        result = {
            "files": files,
            "megabytes": round(megabytes, 1),
            "image_size": args.size,
            "workers": args.workers,
            "cpu_count": os.cpu_count(),
            "load_average_at_start": round(load_before, 2),
            "rounds": args.rounds,
            "naive_files_per_s": round(files / naive_s, 1),
            "radfed_files_per_s": round(files / decode_s, 1),
            "radfed_one_process_files_per_s": round(files / serial_s, 1),
            "radfed_first_with_cache_files_per_s": round(files / first_s, 1),
            "cached_files_per_s": round(files / cached_s, 1),
            "decode_speedup": round(naive_s / decode_s, 2),
            "cached_speedup": round(decode_s / cached_s, 1),
            "goal_decode_1_5x": naive_s / decode_s >= 1.5,
            "goal_cached_20x": decode_s / cached_s >= 20,
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
