"""Decoded, resized pixels of the images a load uses, from a cache when nothing changed.

Decoding is the slow part: each worker reads, decodes and resizes whole files, so only
small float16 arrays cross processes; the result is cached under a key built from every
used file's path, size and mtime and the pixel-relevant options. The cache entry is the
rows themselves (radfed.data.rows): written as files decode and read a batch at a time,
so a load holds no more than the chunks in flight, whatever the clinic's size.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from radfed import dicom
from radfed.data.files import atomic_write
from radfed.data.headers import CACHE_VERSION, HeaderCache, ImageFacts
from radfed.data.options import DataOptions
from radfed.data.rows import PixelFile, PixelWriter
from radfed.data.workers import Progress, Workers

log = logging.getLogger("radfed.data")


PIXELS_FORMAT = "radfed-pixels-2"  # raw float16 rows + index (was one .npz holding every image)


def _decode_all(
    paths: list[Path],
    size: int,
    workers: Workers,
    pixel_token: list[Any],
    target: Path | None,
    progress: Progress | None = None,
) -> tuple[PixelFile, list[str], list[int]]:
    """(PixelFile of the decoded samples, reason per file ('' = success), samples per file).

    Each worker reads, decodes and resizes whole files, so only the small float16
    results cross between processes; each is written to ``target`` (None: an anonymous
    temporary file) as it arrives, so no more than the chunks in flight are held.
    A failed file contributes no sample.
    """
    window, frame_policy = pixel_token
    window = tuple(window) if window is not None else None
    writer = PixelWriter(size, len(paths), target)
    reasons, counts = [""] * len(paths), [0] * len(paths)

    def sink(i: int, result: tuple[np.ndarray | None, str]) -> None:
        img, reasons[i] = result
        counts[i] = 0 if img is None else int(img.shape[0])
        writer.put(i, img)

    try:
        workers.map(
            dicom.preprocess_files, [str(p) for p in paths], (size, window, frame_policy), "pixels", progress, sink=sink
        )
        return writer.finish(counts), reasons, counts
    except BaseException:
        writer.abort()
        raise


def _cache_key(headers: HeaderCache, images: list[ImageFacts], size: int, options_token: str = "") -> str:
    """sha256 over every used file's relative path, size and mtime_ns, the image size,
    the options (window, frame policy, labels...) and code and format versions."""
    stats = []
    for image in images:
        st = headers.stat(image.relpath)
        stats.append([image.relpath, st.st_size if st else -1, st.st_mtime_ns if st else -1])
    payload = json.dumps(
        [CACHE_VERSION, PIXELS_FORMAT, dicom.PREPROCESS_VERSION, size, options_token, stats], separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _cache_path(cache_dir: Path, data_dir: Path, size: int, key: str) -> Path:
    """One entry per (folder, size, content key): the rows (.pixels) and their index
    (.index.npz); the folder tag lets stale entries be pruned."""
    folder_tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return cache_dir / f"{folder_tag}-s{size}-{key[:32]}.pixels"


def _index_path(path: Path) -> Path:
    return path.with_suffix(".index.npz")


def _cache_load(path: Path, count: int, size: int) -> tuple[PixelFile, list[str], list[int]] | None:
    """Cached (rows, reasons, samples per file) or None on a miss or an unreadable/mismatched entry."""
    index = _index_path(path)
    if not path.is_file() or not index.is_file():
        return None
    try:
        with np.load(index, allow_pickle=False) as npz:
            reasons = [str(r) for r in npz["reasons"]]
            counts = [int(c) for c in npz["counts"]]
            order = npz["order"] if bool(npz["reordered"]) else None
            stored_size = int(npz["size"])
        pixels = PixelFile.open(path, size, sum(counts), order)
    except Exception:
        log.warning("ignoring unreadable cache entry %s", path.name)
        return None
    total = sum(counts)
    if (
        len(reasons) != count
        or len(counts) != count
        or stored_size != size
        or os.fstat(pixels.fd).st_size != total * pixels.row_bytes
        or (order is not None and len(order) != total)
    ):
        pixels.close()
        return None
    return pixels, reasons, counts


def _cache_index(path: Path, pixels: PixelFile, reasons: list[str], counts: list[int]) -> None:
    """Write the entry's index (after its rows: an index is never there without them), then
    drop older entries of the same folder and size, old-format .npz ones included."""
    buffer = io.BytesIO()
    order = pixels.order if pixels.order is not None else np.zeros(0, dtype=np.int64)
    np.savez(
        buffer,
        reasons=np.array(reasons, dtype=str),
        counts=np.array(counts, dtype=np.int64),
        order=order,
        reordered=np.array(pixels.order is not None),
        size=np.array(pixels.size),
    )
    atomic_write(_index_path(path), buffer.getvalue())
    prefix = path.name.rsplit("-", 1)[0] + "-"
    keep = {path.name, _index_path(path).name}
    for stale in path.parent.glob(f"{prefix}*"):
        if stale.name not in keep and stale.suffix in (".npz", ".pixels"):
            stale.unlink(missing_ok=True)


def load_pixels(
    headers: HeaderCache,
    images: list[ImageFacts],
    size: int,
    cache_dir: Path | None,
    workers: Workers,
    options: DataOptions,
    progress: Progress | None = None,
) -> tuple[PixelFile, list[str], list[int]]:
    """Preprocessed samples for images as rows on disk (and reasons, samples per file), from
    the cache when nothing changed; decoded into the cache (or, without a cache folder, an
    anonymous temporary file) otherwise."""
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
    pixels, reasons, counts = _decode_all(paths, size, workers, options.pixel_token(), cache_file, progress)
    if cache_file is not None:
        _cache_index(cache_file, pixels, reasons, counts)
    return pixels, reasons, counts


# ----------------------------------------------------------------------------- assembly
