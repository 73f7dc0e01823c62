"""The training recipe's pieces (issue 14): label smoothing bounds the logits, BatchNorm
statistics are re-estimated from a clinic's own images (class-balanced: the case mix does
not move them), intensity augmentation keeps shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from radfed.batchnorm import as_evaluated, class_balanced_order, reestimate_batchnorm
from radfed.training import _augment, train_local


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )


def _separable(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % 2
    images = torch.randn(n, 3, 8, 8, generator=g) * 0.1 + labels[:, None, None, None] * 2.0
    return images, labels


def _max_margin(model: nn.Module, images: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(images)
    return float((logits[:, 1] - logits[:, 0]).abs().max())


@pytest.mark.e2e
def test_label_smoothing_bounds_the_logits():
    images, labels = _separable()
    margins = {}
    for smoothing in (0.0, 0.1):
        model = _tiny()
        train_local(
            model,
            images,
            labels,
            epochs=60,
            batch_size=8,
            learning_rate=0.05,
            seed=0,
            label_smoothing=smoothing,
            device=torch.device("cpu"),
        )
        margins[smoothing] = _max_margin(model, images)
    assert margins[0.1] < 6.0 < margins[0.0]  # ln(0.95 / 0.05) = 2.9 is the optimum at 0.1


def test_batchnorm_statistics_come_from_the_clinic_and_momentum_is_kept():
    model = _tiny().eval()
    images = torch.randn(20, 3, 8, 8) + 5.0
    reestimate_batchnorm(model, images)
    bn = model[1]
    with torch.no_grad():
        expected = model[0](images).mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, expected, atol=1e-4)
    assert bn.momentum == 0.1 and not model.training


def test_intensity_augmentation_keeps_shape_and_is_seeded():
    x = torch.randn(6, 3, 16, 16)
    a = _augment(x, torch.Generator().manual_seed(3), "intensity")
    b = _augment(x, torch.Generator().manual_seed(3), "intensity")
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


@pytest.mark.parametrize("counts", [(30, 6), (6, 30), (50, 1), (12, 12), (9, 4, 20)])
def test_class_balanced_order_weights_every_class_alike_and_keeps_minorities_whole(counts):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    order = class_balanced_order(labels)
    share = -(-len(labels) // len(counts))
    per_class = torch.bincount(labels[order], minlength=len(counts))
    assert per_class.tolist() == [share] * len(counts)  # equal weight, about as many passes as images
    for c, n in enumerate(counts):
        seen = set(order[labels[order] == c].tolist())
        assert len(seen) == min(n, share)  # a small class is seen whole, a large one thinned evenly
    assert torch.equal(order, class_balanced_order(labels))  # a fixed shuffle: the same statistics twice


def test_one_class_or_no_labels_reestimates_on_every_image_once():
    labels = torch.zeros(7, dtype=torch.int64)
    assert class_balanced_order(labels).tolist() == list(range(7))
    model_a, model_b = _tiny(), _tiny()
    images = torch.randn(7, 3, 8, 8)
    reestimate_batchnorm(model_a, images, labels=labels)
    reestimate_batchnorm(model_b, images)
    assert torch.allclose(model_a[1].running_mean, model_b[1].running_mean, atol=1e-6)


def _clinic(prevalence: float, n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One scanner; the finding adds +3 to every pixel; `prevalence` of the images have it."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) < round(prevalence * n)).long()
    images = torch.randn(n, 3, 8, 8, generator=g) + 3.0 * labels[:, None, None, None]
    return images, labels


def test_balanced_statistics_do_not_follow_the_case_mix():
    """Two clinics with the same scanner, 15 % and 70 % findings: unbalanced statistics differ
    by about half the finding's effect, balanced ones agree."""
    (low_x, low_y), (high_x, high_y) = _clinic(0.15, seed=1), _clinic(0.70, seed=2)
    means = {}
    for name, x, y in (("low", low_x, low_y), ("high", high_x, high_y)):
        for balanced in (False, True):
            model = _tiny()
            reestimate_batchnorm(model, x, labels=y if balanced else None)
            means[name, balanced] = model[1].running_mean.clone()
    unbalanced_gap = (means["low", False] - means["high", False]).abs().max()
    balanced_gap = (means["low", True] - means["high", True]).abs().max()
    assert balanced_gap < 0.25 * unbalanced_gap


def _scorer() -> nn.Module:
    """A model whose finding score is its BatchNorm-normalised mean intensity (no training:
    what the statistics do to the scores is all there is to see)."""
    model = nn.Sequential(nn.Conv2d(3, 1, 1), nn.BatchNorm2d(1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        model[0].weight.fill_(1 / 3)
        model[0].bias.zero_()
        model[4].weight.copy_(torch.tensor([[0.0], [1.0]]))
        model[4].bias.zero_()
    return model


def _subtle_clinic(prevalence: float, seed: int, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """One scanner; the finding brightens an image by 1, each image's own level varies by 0.3."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) < round(prevalence * n)).long()
    level = labels.float() + 0.3 * torch.randn(n, generator=g)
    return level[:, None, None, None] + 0.1 * torch.randn(n, 3, 8, 8, generator=g), labels


def test_balanced_statistics_put_two_clinics_scores_on_one_scale():
    """The same model at two clinics (one scanner, 15 % and 70 % findings): each ranks its own
    images alike either way, but only balanced statistics keep the pooled AUROC there."""
    from sklearn.metrics import roc_auc_score

    pooled, own = {}, {}
    for balanced in (False, True):
        scores, labels = [], []
        for prevalence, seed in ((0.15, 4), (0.70, 5)):
            x, y = _subtle_clinic(prevalence, seed)
            evaluated = as_evaluated(_scorer(), x, "clinic", y if balanced else None).eval()
            with torch.no_grad():
                logits = evaluated(x)
            scores.append((logits[:, 1] - logits[:, 0]).numpy())
            labels.append(y.numpy())
            own[balanced, prevalence] = roc_auc_score(labels[-1], scores[-1])
        pooled[balanced] = roc_auc_score(np.concatenate(labels), np.concatenate(scores))
    assert own[False, 0.15] == own[True, 0.15] and own[False, 0.70] == own[True, 0.70]
    worst_own = min(own.values())
    assert pooled[False] < worst_own - 0.03  # the case mix shifted one clinic's scores
    assert pooled[True] > worst_own - 0.01
