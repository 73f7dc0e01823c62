"""Which state_dict entries belong to BatchNorm layers (for FedBN's local statistics)."""

from __future__ import annotations

from torch import nn


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
