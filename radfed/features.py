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
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from radfed.models import Classifier, apply_freeze, trainable_state_keys
from radfed.precision import autocast, to_channels_last

log = logging.getLogger(__name__)
FEATURE_VERSION = "radfed-features-1"
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
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


def tensors_digest(*tensors: torch.Tensor) -> str:
    """sha256 of a clinic's preprocessed tensors (images and labels of both splits)."""
    digest = hashlib.sha256(FEATURE_VERSION.encode())
    for tensor in tensors:
        t = tensor.detach().cpu().contiguous()
        digest.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(memoryview(t.view(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _atomic_save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def backbone_path(state_dir: Path, digest: str) -> Path:
    return Path(state_dir) / "backbones" / f"{digest[:32]}.pt"


def keep_backbone(state_dir: Path, digest: str, state: dict[str, torch.Tensor], *,
                  arch: str, normalisation: str) -> None:
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
        raise BackboneMissing("frozen backbone not cached at this clinic; the server sends it "
                              "with the first message of a run")
    return torch.load(path, weights_only=True)


@dataclass
class FeatureSet:
    """Pooled backbone features of one clinic's splits (N x D float32)."""

    train: torch.Tensor
    train_flipped: torch.Tensor
    val: torch.Tensor


def feature_path(cache_dir: Path, backbone_digest: str, data_digest: str, image_size: int) -> Path:
    return Path(cache_dir) / "features" / (
        f"{backbone_digest[:16]}-{data_digest[:16]}-s{image_size}.pt")


def load_features(path: Path) -> FeatureSet | None:
    """The cached features, or None on a miss or an unreadable file."""
    if not path.is_file():
        return None
    try:
        raw = torch.load(path, weights_only=True)
        feats = FeatureSet(raw["train"], raw["train_flipped"], raw["val"])
    except Exception:  # noqa: BLE001 - a broken cache file is recomputed, never fatal
        log.warning("ignoring unreadable feature cache %s", path.name)
        return None
    os.utime(path)  # most recently used: pruned last
    return feats


def save_features(path: Path, feats: FeatureSet) -> None:
    _atomic_save({"train": feats.train, "train_flipped": feats.train_flipped,
                  "val": feats.val}, path)
    others = sorted(path.parent.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in others[KEEP_FEATURE_FILES:]:
        stale.unlink(missing_ok=True)


@torch.no_grad()
def compute_features(model: Classifier, train: torch.Tensor, val: torch.Tensor,
                     batch_size: int = 64, device: torch.device | None = None) -> FeatureSet:
    """Features of the train images, of their horizontal flips, and of the val images."""
    from radfed.training import pick_device  # noqa: PLC0415 - training imports this module

    device = device or pick_device()
    to_channels_last(model.to(device)).eval()

    def run(images: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(images), batch_size):
            x = to_channels_last(images[start:start + batch_size].to(device))
            with autocast(device):
                out.append(model.features(x).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, model.head.in_features)

    feats = FeatureSet(run(train), run(train.flip(-1)), run(val))
    model.to("cpu", memory_format=torch.contiguous_format)
    return feats


def head_dropout(model: Classifier) -> float:
    """Dropout the network applies just before its head in training (torchvision's
    Inception v3: p = 0.5); head-only training applies it to the cached features."""
    drop = getattr(model.net, "dropout", None)
    return float(drop.p) if isinstance(drop, nn.Dropout) else 0.0
