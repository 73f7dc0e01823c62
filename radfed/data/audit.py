"""What a folder holds before anyone has labelled it: `audit_folder`.

A clinic's PACS team exports first and labels later. `client-node check-data DIR` on such
a folder still says what it can: how many files decode as images, of which modalities,
equipment, sizes and transfer syntaxes, from how many patients, and every file that
cannot be used with its reason and fix; and that labels are missing. Files that are not
DICOM (viewers, READMEs, DICOMDIR's companions) are counted, not rejected.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from radfed.data.files import walk_files
from radfed.data.headers import HeaderCache, ImageFacts
from radfed.data.options import DataOptions
from radfed.data.pixels import load_pixels
from radfed.data.problems import REJECTION_HELP, check_folder
from radfed.data.slices import assemble, plan_slices
from radfed.data.sources import passes_filters, subfolders
from radfed.data.split import Split, build_split
from radfed.data.workers import Progress, Workers

NOT_IMAGES = ("not-dicom", "empty-file")


def _scan(
    data_dir: Path,
    image_size: int,
    options: DataOptions,
    cache_dir: Path | None,
    workers: int,
    progress: Progress | None,
) -> dict[str, Any]:
    """Every file's header, then the pixels of those that look usable (as a labelled load would)."""
    skip = {Path(cache_dir).resolve()} if cache_dir is not None else set()
    relpaths = [p.relative_to(data_dir).as_posix() for p in walk_files(data_dir, skip)]
    pool = Workers(workers)
    rejected: list[tuple[str, str]] = []
    images: list[ImageFacts] = []
    other, filtered = 0, 0
    try:
        headers = HeaderCache(data_dir, None, cache_dir, pool)
        headers.prefetch(relpaths, progress)
        headers.save()
        seen: set[str] = set()
        for relpath in relpaths:
            facts = headers.get(relpath)
            if isinstance(facts, str):
                other += facts in NOT_IMAGES
                if facts not in NOT_IMAGES:
                    rejected.append((relpath, facts))
            elif not passes_filters(facts, options.filters):
                filtered += 1
            elif facts.problem or not facts.patient:
                rejected.append((relpath, facts.problem or "no-patient-id"))
            elif facts.uid and facts.uid in seen:
                rejected.append((relpath, "duplicate-sop-instance-uid"))
            else:
                seen.add(facts.uid)
                images.append(facts)
        plan, _ = plan_slices(images, options)  # ungrouped: one entry per file, in order
        pixels, reasons, counts = load_pixels(headers, plan.files, image_size, cache_dir, pool, options, progress)
    finally:
        pool.close()
    rejected += [(im.relpath, r) for im, r in zip(plan.files, reasons) if r]
    return {
        "files": relpaths,
        "images": plan.files,
        "pixels": pixels,
        "reasons": reasons,
        "counts": counts,
        "rejected": rejected,
        "other": other,
        "filtered": filtered,
        "samples": assemble(plan, reasons, counts, options.slice_stack),
    }


def unlabelled_images(
    data_dir: Path,
    image_size: int,
    options: DataOptions | None = None,
    *,
    cache_dir: Path | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> tuple[Split, list[tuple[str, str]]]:
    """Every usable image of a folder, without labels (label -1), for prediction: its
    samples in file order with their files and patient indices, and the rejections."""
    data_dir = Path(data_dir)
    check_folder(data_dir)
    found = _scan(data_dir, image_size, options or DataOptions(), cache_dir, workers, progress)
    samples = found["samples"]
    split = build_split(found["pixels"], samples, list(range(len(samples))))
    return split, found["rejected"]


def audit_folder(
    data_dir: Path,
    image_size: int,
    options: DataOptions | None = None,
    *,
    cache_dir: Path | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The local card of an unlabelled folder: {"summary": counts, "rejected": [...], "note": ...}.

    Every file is opened (headers, then pixels of those that look usable), exactly as a
    labelled load would, so a file the audit calls decodable is one training can use.
    """
    data_dir = Path(data_dir)
    check_folder(data_dir)
    found = _scan(data_dir, image_size, options or DataOptions(), cache_dir, workers, progress)
    rejected = found["rejected"]
    kept = [im for im, r in zip(found["images"], found["reasons"]) if not r]
    folders = [d.name for d in subfolders(data_dir)]
    summary = {
        "labels": [],
        "files": len(found["files"]),
        "images": len(kept),
        "samples": sum(found["counts"]),
        "patients": len({im.patient for im in kept}),
        "not_images": found["other"],
        "modalities": dict(Counter(im.modality for im in kept)),
        "manufacturers": dict(Counter(im.manufacturer for im in kept)),
        "sizes": dict(Counter(im.size for im in kept)),
        "transfer_syntaxes": dict(Counter(im.syntax for im in kept)),
        "rejected": dict(sorted(Counter(reason for _, reason in rejected).items())),
        "rejected_total": len(rejected),
        "filtered": found["filtered"],
    }
    note = (
        "labels are missing: add labels.csv (columns file,label), or put each label's images in a folder named after it"
    )
    if len(folders) >= 2:
        note += f" (if the {len(folders)} folders here are classes, run with --label-source folders)"
    return {
        "summary": summary,
        "note": note,
        "rejected": [
            {"where": where, "reason": reason, "fix": REJECTION_HELP.get(reason, "")} for where, reason in rejected
        ],
    }


def format_audit(card: dict[str, Any]) -> str:
    """An audit card as plain text lines for a terminal."""
    s = card["summary"]
    lines = [
        "data audit (no labels)",
        f"  files: {s['files']} ({s['images']} decodable DICOM images giving {s['samples']} samples, "
        f"{s['patients']} patients; {s['not_images']} not DICOM images, skipped)",
    ]
    for key in ("modalities", "manufacturers", "sizes", "transfer_syntaxes"):
        shown = ", ".join(f"{name} {count}" for name, count in sorted(s[key].items(), key=lambda kv: -kv[1]))
        lines.append(f"  {key.replace('_', ' ')}: {shown or '-'}")
    if s["filtered"]:
        lines.append(f"  filtered out by the filters: {s['filtered']}")
    lines.append(
        f"  rejected: {s['rejected_total']}"
        + (f" ({', '.join(f'{r} {n}' for r, n in s['rejected'].items())})" if s["rejected"] else "")
    )
    lines += [f"  rejected {item['where']}: {item['reason']}; {item['fix']}" for item in card["rejected"]]
    lines.append(f"note: {card['note']}")
    return "\n".join(lines)
