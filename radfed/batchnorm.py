"""Which state_dict entries belong to BatchNorm layers (for FedBN's local statistics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from radfed.data.rows import Images


def batchnorm_state_keys(model: nn.Module) -> list[str]:
    """Keys of every BatchNorm weight, bias and running statistic in `model.state_dict()`.

    Found from the modules, not guessed from names: torchvision hides BN layers behind
    names such as `downsample.1`.
    """
    keys = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            prefix = f"{name}." if name else ""
            keys += [prefix + k for k in module.state_dict()]
    return keys


def batchnorm_statistics_keys(model: nn.Module) -> list[str]:
    """Keys of every BatchNorm running statistic and batch counter (buffers, not parameters).

    They are measured, not learned: a server optimiser must average them, never step them.
    """
    keys = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            prefix = f"{name}." if name else ""
            keys += [prefix + k for k, _ in module.named_buffers(recurse=False)]
    return keys


BN_POLICIES = ("global", "clinic")


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, images: Images, batch_size: int = 64) -> None:
    """Replace every BatchNorm layer's running statistics by those of `images` (no labels).

    Averaged across clinics (FedAvg), the statistics describe no scanner in particular:
    a clinic whose detector is brighter or noisier than the mean gets shifted,
    saturated scores (issue 14). Measured on the clinic's own training images
    just before evaluation (spec bn_policy = "clinic"), they match its scanner again;
    the learned weights stay the global model's. The layers' momentum is restored after.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or len(images) < 2:
        return
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over all batches
    model.train()
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        if len(batch) > 1:
            model(batch)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    model.train(was_training)


def as_evaluated(model: nn.Module, images: Images, bn_policy: str) -> nn.Module:
    """The global model as a clinic evaluates it: with bn_policy "clinic", a copy whose
    BatchNorm statistics are re-estimated on that clinic's `images` (no labels); with
    "global", the model itself. One rule for the ClientApp and the centralised baseline,
    so federated and centralised figures are measured the same way."""
    if bn_policy != "clinic":
        return model
    import copy

    adapted = copy.deepcopy(model)
    reestimate_batchnorm(adapted, images)
    return adapted
