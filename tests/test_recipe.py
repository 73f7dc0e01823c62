"""The training recipe's pieces (issue 14): label smoothing bounds the logits, BatchNorm
statistics are re-estimated from a clinic's own images, intensity augmentation keeps shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from radfed.batchnorm import reestimate_batchnorm
from radfed.training import _augment, train_local


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


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
        train_local(model, images, labels, epochs=60, batch_size=8, learning_rate=0.05, seed=0,
                    label_smoothing=smoothing, device=torch.device("cpu"))
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
