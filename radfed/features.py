"""Head-only rounds: a frozen backbone's features, computed once per clinic and cached.

With ``freeze = "all"`` nothing below the head changes during a run, so every round's
full forward pass through the backbone recomputes the same numbers. A clinic instead
computes the pooled features once (of each image and of its horizontal flip, the one
augmentation `radfed.training` applies), keeps them on its own disk, and every round
trains only the head on them (`radfed.training.train_head`).

Only trainable tensors travel: the server sends the frozen backbone once per clinic and
run (the first message), the clinic keeps it under its state folder by digest, and all
other messages in both directions carry the head alone.

Cache keys: the backbone digest (architecture, input convention and every frozen
tensor) and a digest of the clinic's preprocessed tensors (which already depend on the
DICOM files, the data options, the image size and the patient split). Files hold
features of de-identified pixels only and never leave the clinic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from radfed.data.rows import ImageRows, Images, RowFile, StoredRows, image_batches
from radfed.heap import trimmed
from radfed.models import Classifier, apply_freeze, trainable_state_keys
from radfed.precision import autocast, to_channels_last

log = logging.getLogger(__name__)
FEATURE_VERSION = "radfed-features-2"  # raw float32 blocks read a batch at a time (was a torch.save dict)
_HEADER_BYTES = 4096  # a feature file: a JSON header padded to this, then train, train flipped, val
KEEP_FEATURE_FILES = 8  # per clinic; older feature sets are pruned


class BackboneMissing(RuntimeError):
    """A head-only message arrived without the frozen backbone, and none is cached here."""


def split_head(model: Classifier) -> tuple[list[str], dict[str, torch.Tensor]]:
    """(keys that train under freeze "all", the frozen rest of the state_dict)."""
    apply_freeze(model, "all")
    keys = trainable_state_keys(model)
    state = model.state_dict()
    return keys, {k: v for k, v in state.items() if k not in set(keys)}


def state_digest(state: dict[str, torch.Tensor], *, arch: str, normalisation: str) -> str:
    """sha256 over the architecture, input convention, keys, dtypes, shapes and values."""
    digest = hashlib.sha256(f"{FEATURE_VERSION}|{arch}|{normalisation}".encode())
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"|{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def tensors_digest(*tensors: Images, batch_size: int = 256) -> str:
    """sha256 of a clinic's preprocessed tensors (images and labels of both splits).

    Images read on demand (ImageRows) are hashed a batch at a time, to the digest the
    same images would have as one tensor."""
    digest = hashlib.sha256(FEATURE_VERSION.encode())
    for tensor in tensors:
        digest.update(f"|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        parts = image_batches(tensor, batch_size) if isinstance(tensor, ImageRows) else [tensor]
        for part in parts:
            t = part.detach().cpu().contiguous()
            digest.update(memoryview(t.view(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _atomic_save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def backbone_path(state_dir: Path, digest: str) -> Path:
    return Path(state_dir) / "backbones" / f"{digest[:32]}.pt"


def keep_backbone(
    state_dir: Path, digest: str, state: dict[str, torch.Tensor], *, arch: str, normalisation: str
) -> None:
    """Store a received backbone under its digest, after checking the digest matches."""
    path = backbone_path(state_dir, digest)
    if path.is_file():
        return
    actual = state_digest(state, arch=arch, normalisation=normalisation)
    if actual != digest:
        raise ValueError("received backbone does not match its announced digest")
    _atomic_save(state, path)


def load_backbone(state_dir: Path, digest: str) -> dict[str, torch.Tensor]:
    path = backbone_path(state_dir, digest)
    if not path.is_file():
        raise BackboneMissing(
            "frozen backbone not cached at this clinic; the server sends it with the first message of a run"
        )
    return torch.load(path, weights_only=True)


@dataclass
class FeatureSet:
    """Pooled backbone features of one clinic's splits (N x D float32): tensors, or rows
    of the clinic's feature file read a batch at a time (radfed.data.rows.StoredRows)."""

    train: torch.Tensor | StoredRows
    train_flipped: torch.Tensor | StoredRows
    val: torch.Tensor | StoredRows


def feature_path(cache_dir: Path, backbone_digest: str, data_digest: str, image_size: int) -> Path:
    return Path(cache_dir) / "features" / (f"{backbone_digest[:16]}-{data_digest[:16]}-s{image_size}.feats")


def load_features(path: Path) -> FeatureSet | None:
    """The cached features (read on demand), or None on a miss or an unreadable file."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            header = json.loads(fh.read(_HEADER_BYTES).rstrip(b"\0"))
        counts, dim = [int(c) for c in header["counts"]], int(header["dim"])
        if (
            header["version"] != FEATURE_VERSION
            or len(counts) != 3
            or path.stat().st_size != _HEADER_BYTES + sum(counts) * dim * 4
        ):
            raise ValueError("feature file of another version or size")
        blocks, offset = [], _HEADER_BYTES
        for count in counts:  # one descriptor per block: each closes with its rows
            blocks.append(StoredRows(RowFile(os.open(path, os.O_RDONLY), path, count, (dim,), np.float32, offset)))
            offset += count * dim * 4
    except Exception:  # noqa: BLE001 - a broken cache file is recomputed, never fatal
        log.warning("ignoring unreadable feature cache %s", path.name)
        return None
    os.utime(path)  # most recently used: pruned last
    return FeatureSet(*blocks)


class _FeatureWriter:
    """A feature file written a batch at a time (header first, renamed into place at the end)."""

    def __init__(self, path: Path, counts: list[int], dim: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.tmp = path, path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.fh = open(self.tmp, "wb")
        header = json.dumps({"version": FEATURE_VERSION, "counts": counts, "dim": dim}).encode()
        self.fh.write(header.ljust(_HEADER_BYTES, b"\0"))

    def append(self, rows: torch.Tensor) -> None:
        self.fh.write(rows.detach().float().cpu().contiguous().numpy().tobytes())

    def finish(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.path)
        folder = self.path.parent
        for old in folder.glob("*.pt"):  # feature files of the previous format
            old.unlink(missing_ok=True)
        others = sorted(folder.glob("*.feats"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in others[KEEP_FEATURE_FILES:]:
            stale.unlink(missing_ok=True)

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


def save_features(path: Path, feats: FeatureSet) -> None:
    """Write features (tensors or rows) to a feature file, a batch at a time."""
    blocks = [feats.train, feats.train_flipped, feats.val]
    dim = int(blocks[0].shape[1]) if len(blocks[0]) else int(blocks[2].shape[-1])
    writer = _FeatureWriter(path, [len(b) for b in blocks], dim)
    try:
        for block in blocks:
            for start in range(0, len(block), 4096):
                writer.append(block[start : start + 4096])
        writer.finish()
    except BaseException:
        writer.abort()
        raise


@torch.no_grad()
def compute_features(
    model: Classifier,
    train: Images,
    val: Images,
    batch_size: int = 64,
    device: torch.device | None = None,
    path: Path | None = None,
) -> FeatureSet:
    """Features of the train images, of their horizontal flips, and of the val images,
    reading one batch of images at a time. With ``path`` each batch's features go
    straight to that feature file and the rows of it are returned (nothing grows with
    the clinic); without, they are returned as tensors."""
    from radfed.training import pick_device  # noqa: PLC0415 - training imports this module

    device = device or pick_device()
    to_channels_last(model.to(device)).eval()
    dim = int(model.head.in_features)
    writer = _FeatureWriter(path, [len(train), len(train), len(val)], dim) if path is not None else None

    def run(images: Images, flip: bool = False) -> torch.Tensor | None:
        out = []
        for batch in trimmed(image_batches(images, batch_size)):
            x = to_channels_last((batch.flip(-1) if flip else batch).to(device))
            with autocast(device):
                found = model.features(x).float().cpu()
            if writer is not None:
                writer.append(found)
            else:
                out.append(found)
        return torch.cat(out) if out else torch.zeros(0, dim)

    try:
        blocks = [run(train), run(train, flip=True), run(val)]
        if writer is not None:
            writer.finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        model.to("cpu", memory_format=torch.contiguous_format)
    if writer is None:
        return FeatureSet(*blocks)
    loaded = load_features(path)  # type: ignore[arg-type]
    if loaded is None:
        raise OSError("the feature file just written cannot be read back")
    return loaded


def head_dropout(model: Classifier) -> float:
    """Dropout the network applies just before its head in training (torchvision's
    Inception v3: p = 0.5); head-only training applies it to the cached features."""
    drop = getattr(model.net, "dropout", None)
    return float(drop.p) if isinstance(drop, nn.Dropout) else 0.0
