"""Local training and evaluation at a clinic: plain PyTorch loops, GPU when present.

Passes run channels_last, with CUDA's mixed precision or, on a CPU with native bfloat16,
bfloat16 autocast (radfed.precision); logits are cast to float32 before loss and metrics.
Metrics are computed with scikit-learn and are aggregates only: no per-image output
leaves these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from radfed.heap import trimmed
from radfed.models import Classifier, set_train_mode
from radfed.precision import autocast, to_channels_last

if TYPE_CHECKING:
    from radfed.data.rows import Images, StoredRows  # tensors, or rows read a batch at a time

    Features = torch.Tensor | StoredRows


def pick_device() -> torch.device:
    """The clinic's GPU when it has one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class EvalResult:
    """Aggregate validation metrics for one clinic."""

    loss: float
    accuracy: float
    auroc: float
    num_examples: int


def _prepare(model: nn.Module, device: torch.device) -> nn.Module:
    return to_channels_last(model.to(device))


def _release(model: nn.Module) -> None:
    """Back on the CPU in the default layout: state dicts are serialised as plain arrays."""
    model.to("cpu", memory_format=torch.contiguous_format)


def _batches(
    images: Images, labels: torch.Tensor, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
):
    """(images, labels) of one batch at a time; with rows on disk, only that batch is read."""
    order = torch.randperm(len(labels), generator=generator) if shuffle else torch.arange(len(labels))
    for start in range(0, len(labels), batch_size):
        idx = order[start : start + batch_size]
        yield images[idx], labels[idx]


AUGMENTATIONS = ("flip", "intensity")


def _augment(x: torch.Tensor, generator: torch.Generator, kind: str = "flip") -> torch.Tensor:
    """Label-preserving augmentation: random horizontal flip per image; with "intensity"
    also a per-image contrast (x0.75-1.33 around the image mean) and brightness shift
    (+-0.2 image std) and a shift of up to 1/16 of the side, so that a clinic's scanner
    (bit depth, processing curve, exposure) is not a feature the model can latch onto."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = x.clone()
    x[flip] = x[flip].flip(-1)
    if kind != "intensity" or x.shape[0] == 0:
        return x
    n = x.shape[0]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    contrast = torch.exp((torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 2 * math.log(4 / 3))
    shift = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.4 * std
    x = (x - mean) * contrast + mean + shift
    reach = max(1, x.shape[-1] // 16)
    dy, dx = (torch.randint(-reach, reach + 1, (2,), generator=generator)).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def round_learning_rate(learning_rate: float, server_round: int, warmup_rounds: int) -> float:
    """Linear warm-up over rounds: round r <= warmup_rounds trains at r/(warmup_rounds+1)
    of the rate, so the first rounds from a random start do not overshoot at small clinics."""
    if warmup_rounds <= 0 or server_round > warmup_rounds:
        return learning_rate
    return learning_rate * server_round / (warmup_rounds + 1)


def recipe_kwargs(spec, server_round: int) -> dict:
    """The training recipe of an ExperimentSpec for one round, as `train_local` keywords
    (`train_head` takes the same but `augment`)."""
    return {
        "learning_rate": round_learning_rate(spec.learning_rate, server_round, spec.warmup_rounds),
        "weight_decay": spec.weight_decay,
        "label_smoothing": spec.label_smoothing,
        "augment": spec.augment,
    }


def train_local(
    model: Classifier,
    images: Images,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    proximal_mu: float = 0.0,
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
    augment: str = "flip",
    device: torch.device | None = None,
) -> float:
    """Train in place with AdamW; returns the mean training loss of the last epoch.

    AdamW with `weight_decay` 0 is Adam. `label_smoothing` bounds the logits the loss asks
    for (ln((1-e/2)/(e/2)), 2.9 at the default 0.1): without it, 80 images per clinic are fitted to a
    loss near 0 and the averaged model's scores saturate (|logit| > 50, issue 14).
    With `proximal_mu > 0` the FedProx term mu/2 * ||w - w_global||^2 is added, where
    w_global are the weights the model had on entry (the round's global model).
    """
    device = device or pick_device()
    model = _prepare(model, device)
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    optim = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    gen = torch.Generator().manual_seed(seed)
    set_train_mode(model)
    last = math.nan
    for _ in range(epochs):
        total, count = 0.0, 0
        for x, y in _batches(images, labels, batch_size, shuffle=True, generator=gen):
            if len(y) < 2:  # BatchNorm cannot train on a single image
                continue
            x = to_channels_last(_augment(x, gen, augment).to(device, non_blocking=True))
            y = y.to(device)
            with autocast(device):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            loss = loss + proximal_term(params, anchor, proximal_mu)
            optim.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
            total += loss.item() * len(y)
            count += len(y)
        last = total / max(count, 1)
    _release(model)
    return last


def proximal_term(params: list[torch.Tensor], anchor: list[torch.Tensor], mu: float) -> torch.Tensor | float:
    """FedProx's mu/2 * ||w - w_global||^2 over the trained parameters (0 without an anchor)."""
    if not anchor:
        return 0.0
    return mu / 2 * sum((p - a).pow(2).sum() for p, a in zip(params, anchor))


@torch.no_grad()
def predict_logits(
    model: Classifier, images: Images, batch_size: int = 64, device: torch.device | None = None
) -> torch.Tensor:
    """Raw class logits for `images` (N x C, float32), computed in eval mode.

    Figures are computed from logits (radfed.evaluation.finding_scores), never from
    softmax probabilities: a confident model's probabilities are all exactly 0 or 1 in
    float32 and would tie, while its logits still rank the images.
    """
    device = device or pick_device()
    model = _prepare(model, device).eval()
    out = []
    for x, _ in trimmed(_batches(images, torch.zeros(len(images)), batch_size, shuffle=False)):
        x = to_channels_last(x.to(device))
        with autocast(device):
            out.append(model(x).float().cpu())
    _release(model)
    return torch.cat(out) if out else torch.zeros(0, 2)


def predict(
    model: Classifier, images: Images, batch_size: int = 64, device: torch.device | None = None
) -> torch.Tensor:
    """Class probabilities for `images` (N x C), computed in eval mode."""
    return torch.softmax(predict_logits(model, images, batch_size, device), dim=1)


def evaluate(
    model: Classifier, images: Images, labels: torch.Tensor, batch_size: int = 64, device: torch.device | None = None
) -> EvalResult:
    """Loss, accuracy and AUROC on a clinic's validation split."""
    return metrics_from_logits(predict_logits(model, images, batch_size, device), labels)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> EvalResult:
    """Aggregate metrics by radfed.evaluation's definitions (the ones a clinic reports):
    cross-entropy from the logits, argmax accuracy, finding-vs-first-label AUROC (NaN
    when the split holds a single class)."""
    from radfed.evaluation import finding_auroc, loss_and_accuracy

    n = len(labels)
    if n == 0:
        return EvalResult(math.nan, math.nan, math.nan, 0)
    loss, accuracy = loss_and_accuracy(logits.numpy(), labels.numpy())
    return EvalResult(loss, accuracy, finding_auroc(logits.numpy(), labels.numpy()), n)


def _on(rows: Features, device: torch.device) -> Features:
    """Tensors move to the device whole (small); rows on disk stay there, read per batch."""
    return rows.to(device) if isinstance(rows, torch.Tensor) else rows


def _rows_at(rows: Features, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """rows[idx] on the device, read from disk for rows that live there."""
    if isinstance(rows, torch.Tensor):
        return rows[idx.to(rows.device)]
    return rows[idx].to(device)


def train_head(
    head: nn.Module,
    features: Features,
    flipped: Features,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    proximal_mu: float = 0.0,
    dropout: float = 0.0,
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
    device: torch.device | None = None,
) -> float:
    """`train_local` for a frozen backbone: trains only `head` on cached features.

    Same optimiser, batches, seed and FedProx term as `train_local`; its random
    horizontal flip becomes a per-image choice between the features of the image and
    of its flip (both cached), drawn from the same generator, so the two loops see the
    same augmentation. Features cached on disk (radfed.features) are read a batch at a
    time. Returns the mean training loss of the last epoch.
    """
    device = device or pick_device()
    head.to(device).train()
    params = [p for p in head.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    optim = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    gen = torch.Generator().manual_seed(seed)
    feats, flips, labels = _on(features, device), _on(flipped, device), labels.to(device)
    last = math.nan
    for _ in range(epochs):
        total, count = 0.0, 0
        order = torch.randperm(len(labels), generator=gen)
        for start in range(0, len(labels), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # as train_local: BatchNorm below would not train on one image
                continue
            flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
            x = torch.where(flip[:, None], _rows_at(flips, idx, device), _rows_at(feats, idx, device))
            if dropout > 0:
                x = nn.functional.dropout(x, dropout, training=True)
            y = labels[idx.to(device)]
            loss = loss_fn(head(x), y)
            loss = loss + proximal_term(params, anchor, proximal_mu)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total += loss.item() * len(idx)
            count += len(idx)
        last = total / max(count, 1)
    head.to("cpu")
    return last


@torch.no_grad()
def predict_head_logits(head: nn.Module, features: Features, batch_size: int = 4096) -> torch.Tensor:
    """Class logits from cached features (the backbone is frozen), a batch at a time."""
    head.eval()
    if not len(features):
        return torch.zeros(0, 2)
    return torch.cat(
        [head(features[start : start + batch_size].float()) for start in range(0, len(features), batch_size)]
    )


def evaluate_head(head: nn.Module, features: Features, labels: torch.Tensor) -> EvalResult:
    """`evaluate` on cached validation features (the backbone is frozen)."""
    return metrics_from_logits(predict_head_logits(head, features), labels)
