"""Decoded, resized pixels of the images a load uses, from a cache when nothing changed.

Decoding is the slow part: each worker reads, decodes and resizes whole files, so only
small float16 arrays cross processes; the result is cached under a key built from every
used file's path, size and mtime and the pixel-relevant options.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from radfed import dicom
from radfed.data.files import atomic_write
from radfed.data.headers import CACHE_VERSION, HeaderCache, ImageFacts
from radfed.data.options import DataOptions
from radfed.data.workers import Progress, Workers

log = logging.getLogger("radfed.data")


def _decode_all(
    paths: list[Path], size: int, workers: Workers, pixel_token: list[Any], progress: Progress | None = None
) -> tuple[np.ndarray, list[str], list[int]]:
    """(M x S x S float16 samples, reason per file ('' = success), samples per file).

    Each worker reads, decodes and resizes whole files, so only the small
    float16 results cross between processes.  A failed file contributes no sample.
    """
    window, frame_policy = pixel_token
    window = tuple(window) if window is not None else None
    results = workers.map(dicom.preprocess_files, [str(p) for p in paths], (size, window, frame_policy),
                          "pixels", progress)
    stacks = [img for img, _ in results if img is not None]
    stacked = np.concatenate(stacks) if stacks else np.zeros((0, size, size), dtype=np.float16)
    counts = [0 if img is None else int(img.shape[0]) for img, _ in results]
    return stacked, [reason for _, reason in results], counts


def _cache_key(headers: HeaderCache, images: list[ImageFacts], size: int, options_token: str = "") -> str:
    """sha256 over every used file's relative path, size and mtime_ns, the image size,
    the options (window, frame policy, labels...) and code versions."""
    stats = []
    for image in images:
        st = headers.stat(image.relpath)
        stats.append([image.relpath, st.st_size if st else -1, st.st_mtime_ns if st else -1])
    payload = json.dumps([CACHE_VERSION, dicom.PREPROCESS_VERSION, size, options_token, stats], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _cache_path(cache_dir: Path, data_dir: Path, size: int, key: str) -> Path:
    """One file per (folder, size, content key); the folder tag lets stale entries be pruned."""
    folder_tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return cache_dir / f"{folder_tag}-s{size}-{key[:32]}.npz"


def _cache_load(path: Path, count: int, size: int) -> tuple[np.ndarray, list[str], list[int]] | None:
    """Cached (samples, reasons, samples per file) or None on a miss or an unreadable/mismatched file."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, reasons = npz["images"], [str(r) for r in npz["reasons"]]
            counts = [int(c) for c in npz["counts"]]
    except Exception:
        log.warning("ignoring unreadable cache file %s", path.name)
        return None
    if len(reasons) != count or len(counts) != count or images.shape != (sum(counts), size, size):
        return None
    return images, reasons, counts


def _cache_store(path: Path, images: np.ndarray, reasons: list[str], counts: list[int]) -> None:
    """Write atomically, then drop older entries of the same folder and size."""
    buffer = io.BytesIO()
    np.savez(buffer, images=images.astype(np.float16), reasons=np.array(reasons, dtype=str),
             counts=np.array(counts, dtype=np.int64))
    atomic_write(path, buffer.getvalue())
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for stale in path.parent.glob(f"{prefix}*.npz"):
        if stale != path:
            stale.unlink(missing_ok=True)


def load_pixels(
    headers: HeaderCache, images: list[ImageFacts], size: int, cache_dir: Path | None, workers: Workers,
    options: DataOptions, progress: Progress | None = None,
) -> tuple[np.ndarray, list[str], list[int]]:
    """Preprocessed samples for images (and reasons, samples per file), from the cache when nothing changed."""
    data_dir, cache_file = headers.data_dir, None
    if cache_dir is not None:
        key = _cache_key(headers, images, size, options.token())
        cache_file = _cache_path(cache_dir, data_dir, size, key)
        cached = _cache_load(cache_file, len(images), size)
        if cached is not None:
            log.info("loaded %d preprocessed images from cache", len(images))
            if progress is not None:
                progress("pixels", len(images), len(images))
            return cached
    paths = [data_dir / im.relpath for im in images]
    pixels, reasons, counts = _decode_all(paths, size, workers, options.pixel_token(), progress)
    if cache_file is not None:
        _cache_store(cache_file, pixels, reasons, counts)
    return pixels, reasons, counts


# ----------------------------------------------------------------------------- assembly
