"""CPU passes in channels_last and, where chosen, bfloat16 autocast (issue 18): the choice
follows RADFED_CPU_PRECISION, a seed still fixes the trained model, and what leaves
training (weights, logits) is float32 in the default layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from radfed.precision import autocast, cpu_has_native_bf16, cpu_precision
from radfed.training import predict_logits, train_local

CPU = torch.device("cpu")


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(16) % 2
    return torch.randn(16, 3, 12, 12, generator=g) + labels[:, None, None, None], labels


def _trained() -> nn.Module:
    model = _tiny()
    train_local(model, *_data(), epochs=2, batch_size=8, learning_rate=1e-2, seed=3, device=CPU)
    return model


def test_precision_follows_the_environment(monkeypatch):
    monkeypatch.setenv("RADFED_CPU_PRECISION", "float32")
    assert cpu_precision() == "float32"
    with autocast(CPU):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setenv("RADFED_CPU_PRECISION", "bfloat16")
    with autocast(CPU):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    monkeypatch.setenv("RADFED_CPU_PRECISION", "auto")
    assert cpu_precision() == ("bfloat16" if cpu_has_native_bf16() else "float32")
    monkeypatch.setenv("RADFED_CPU_PRECISION", "half")
    with pytest.raises(ValueError, match="RADFED_CPU_PRECISION"):
        cpu_precision()


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_seeded_training_repeats_and_returns_float32_contiguous(monkeypatch, precision):
    monkeypatch.setenv("RADFED_CPU_PRECISION", precision)
    a, b = _trained(), _trained()
    untrained = _tiny().state_dict()
    for key, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[key]), key
        assert tensor.is_contiguous(), key  # serialised as plain arrays
        if tensor.is_floating_point():
            assert tensor.dtype == torch.float32, key
    assert not torch.equal(a[0].weight, untrained["0.weight"])
    logits = predict_logits(a, _data()[0], device=CPU)
    assert logits.dtype == torch.float32 and logits.shape == (16, 2)


def test_bfloat16_trains_close_to_float32(monkeypatch):
    """bfloat16 autocast changes rounding, not the model: the weights stay near float32's."""
    trained = {}
    for precision in ("float32", "bfloat16"):
        monkeypatch.setenv("RADFED_CPU_PRECISION", precision)
        trained[precision] = _trained()
    start = _tiny()[0].weight
    f32, bf16 = trained["float32"][0].weight, trained["bfloat16"][0].weight
    assert not torch.equal(f32, bf16)  # the autocast did run in bfloat16
    assert (f32 - bf16).norm() < 0.2 * (f32 - start).norm()
